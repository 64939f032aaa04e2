"""Test fixtures the project makes itself: PDFs, and an OpenAI-compatible server."""
