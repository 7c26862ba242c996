"""``llm-rec batch``: rank many users offline on Ray Data (or in-process), resumably."""

from .job import BatchConfig, BatchSummary, RankWorker, RecommenderSpec, run_batch
from .store import read_output

__all__ = ["BatchConfig", "BatchSummary", "RankWorker", "RecommenderSpec", "read_output", "run_batch"]
