"""Ingestion: files and uploads become cleaned documents and chunks with character offsets, written to the index.

:mod:`.loaders` reads files (a reader per format: :mod:`.spreadsheets`, :mod:`.tables`, :mod:`.slides`, :mod:`.ocr`;
what they share is :mod:`.reading`), :mod:`.cleaning` keeps the article, :mod:`.chunking` cuts it, and
:mod:`.ingest` writes it, incrementally and resumably."""
