"""Evaluation: metrics (character-level, Chinese-aware), evaluation runs and reports, and answer feedback
exported as gold drafts."""
