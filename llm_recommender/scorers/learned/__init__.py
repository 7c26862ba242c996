"""Scorers trained on the LLM's item vectors: the representation head (and its item encoder), the sequence model."""
