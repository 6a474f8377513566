"""Ingestion: files and uploads become cleaned documents and chunks with character offsets, written to the index."""
