"""Learned heads over LLM representations: h_i, h_u from a causal LM's hidden states, P(u,i) from a logistic head."""

from .encoder import ItemEncoder, pooled_hidden_states, resolve_layer
from .head import HeadConfig, RepresentationHead, train_head
from .training import TrainingContexts, build_contexts, fit_head, user_vector

__all__ = [
    "HeadConfig",
    "ItemEncoder",
    "RepresentationHead",
    "TrainingContexts",
    "build_contexts",
    "fit_head",
    "pooled_hidden_states",
    "resolve_layer",
    "train_head",
    "user_vector",
]
