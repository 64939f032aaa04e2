"""Write the sample PDFs (longtask.testing.pdfs.SAMPLES) into this package's folder.

    .venv/bin/python -m longtask.samples
"""

from __future__ import annotations

from longtask.samples import FOLDER
from longtask.testing.pdfs import SAMPLES, text_pdf


def main() -> None:
    for sample in SAMPLES:
        path = FOLDER / f"{sample.filename}.pdf"
        path.write_bytes(text_pdf(sample.title, sample.pages))
        print(f"{path.name}: {path.stat().st_size} bytes, {len(sample.pages)} pages")


if __name__ == "__main__":
    main()
