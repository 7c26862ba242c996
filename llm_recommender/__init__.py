"""llm-recommender: rank candidate items for a user with a locally hosted LLM."""
__version__ = "0.1.0"

from .bundle.demo import demo_bundle
from .calibration import Calibrator, IdentityCalibrator, PlattCalibrator, load_calibrator
from .errors import (
    BackendError,
    CapabilityError,
    ClientError,
    InvalidRequestError,
    ModelLoadError,
    RecommenderError,
    TooManyCandidatesError,
    UnknownNameError,
)
from .protocol import HistoryEntry, Item, RankedItem, RankRequest, RankResponse
from .recommender import Recommender
from .settings import Settings

__all__ = [
    "BackendError", "Calibrator", "CapabilityError", "ClientError", "HistoryEntry", "IdentityCalibrator",
    "InvalidRequestError", "Item", "ModelLoadError", "PlattCalibrator", "RankRequest",
    "RankResponse", "RankedItem", "Recommender", "RecommenderError", "Settings", "TooManyCandidatesError",
    "UnknownNameError", "demo_bundle", "load_calibrator",
]
