"""Answering: the extractive answerer, the chat models and their runtimes, the grounding guard, and follow-up
questions rewritten to stand alone."""
