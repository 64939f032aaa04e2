"""`python -m longtask.config --markdown [README.md]`: print the environment table, or rewrite
it in place in the file named (the table headed `| variable | default | meaning |`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from longtask.config import markdown

TABLE = re.compile(r"^\| variable \| default \| meaning \|\n(?:\|.*\|\n)+", re.M)


def main(args: list[str]) -> int:
    if args[:1] != ["--markdown"] or len(args) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    if len(args) == 1:
        sys.stdout.write(markdown())
        return 0
    path = Path(args[1])
    text = path.read_text()
    if not TABLE.search(text):
        print(f"{path}: no table headed '| variable | default | meaning |'", file=sys.stderr)
        return 1
    path.write_text(TABLE.sub(lambda _: markdown(), text, count=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
