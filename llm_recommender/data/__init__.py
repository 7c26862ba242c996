"""Benchmark datasets as canonical interaction and item tables (Hugging Face ``datasets``).

>>> from llm_recommender.data import load_dataset
>>> ds = load_dataset("ml-latest-small")          # the copy bundled with the package
>>> ds.sequences["1"][:2]                          # a user's interactions, oldest first
>>> ds.item("1")                                   # a protocol Item (title, genres)
"""

from . import amazon, generic  # noqa: F401  (they register their loaders)
from .base import (
    LOADERS,
    DataFileError,
    DatasetDownloadError,
    Interaction,
    RecDataset,
    dataset_names,
    load_dataset,
    register_loader,
    row_to_item,
    to_history_entry,
)
from .movielens import natural_title

__all__ = [
    "LOADERS",
    "DataFileError",
    "DatasetDownloadError",
    "Interaction",
    "RecDataset",
    "dataset_names",
    "load_dataset",
    "natural_title",
    "register_loader",
    "row_to_item",
    "to_history_entry",
]
