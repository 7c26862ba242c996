"""Learned models over the LLM's item representations (pure torch, CPU-first)."""

from .sequence import SequenceModel, SequenceModelConfig

__all__ = ["SequenceModel", "SequenceModelConfig"]
