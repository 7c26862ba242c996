"""Fine-tuning of the generative scorers (``llm-rec tune generative``)."""

from .generative import TuneConfig, build_examples, tune

__all__ = ["TuneConfig", "build_examples", "tune"]
