"""Summaries: extractive summaries by default, model summaries checked sentence by sentence, topic summaries."""
