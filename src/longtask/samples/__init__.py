"""The sample PDFs, shipped in the package: what `longtask demo` ingests and the tests upload.

Four small text PDFs on distinct topics, written by `python -m longtask.samples` from
`longtask.testing.pdfs.SAMPLES`, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def paths() -> list[Path]:
    """The sample PDFs, sorted by name."""
    return sorted(FOLDER.glob("*.pdf"))


def path(filename: str) -> Path:
    """One sample, by its `SAMPLES` file name without `.pdf` (e.g. "sourdough")."""
    return FOLDER / f"{filename}.pdf"
