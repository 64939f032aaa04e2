"""Inclusive and self share of each frame in a py-spy raw profile
(`py-spy record -f raw -o FILE -p PID`).

    python bench/profiles/summarise.py FILE [TOP]
"""
import sys
from collections import Counter


def frame(raw: str) -> str:
    name = raw.split(" (")[0]
    return f"{name} {raw.rsplit('/', 1)[-1].rstrip(')')}"


def main() -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    for line in open(sys.argv[1]):
        stack, _, count = line.rstrip().rpartition(" ")
        n = int(count)
        total += n
        frames = [frame(f) for f in stack.split(";")]
        for key in set(frames):
            inclusive[key] += n
        own[frames[-1]] += n
    print("samples", total)
    for title, counts in (("inclusive", inclusive), ("self", own)):
        print(f"\n## {title}")
        for key, n in counts.most_common(top):
            print(f"{100 * n / total:5.1f}% {key[:140]}")


main()
