"""Write the sample PDFs (longtask.testing.pdfs.SAMPLES) into this folder.

    .venv/bin/python samples/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

from longtask.testing.pdfs import SAMPLES, text_pdf


def main() -> None:
    here = Path(__file__).resolve().parent
    for sample in SAMPLES:
        path = here / f"{sample.filename}.pdf"
        path.write_bytes(text_pdf(sample.title, sample.pages))
        print(f"{path.name}: {path.stat().st_size} bytes, {len(sample.pages)} pages")


if __name__ == "__main__":
    main()
