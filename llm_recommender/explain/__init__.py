"""Explanations grounded in what ranked an item: evidence from the fitted components, and reasons rendered from it."""

from .evidence import gather_evidence

__all__ = ["gather_evidence"]
