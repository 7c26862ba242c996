"""The demo's bundle: fitted once on the bundled MovieLens sample (ml-latest-small) and cached.

``make demo`` / ``llm-rec demo`` rank with it, and Python can load the same folder right after:
``Recommender.load(demo_bundle())``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..errors import BundleError
from ..model_store import cache_dir
from .fit import FitConfig, available_components, fit_bundle
from .manifest import read_manifest

# Components that need no LLM pass over the 9,742-movie catalogue (minutes on a CPU): the demo stays quick.
DEMO_COMPONENTS = ("popularity", "cooccurrence", "itemknn", "als", "embedding", "sequence")


def demo_bundle(log: Callable[[str], None] | None = None) -> Path:
    """The folder of the demo's bundle; fitted (a few minutes, once) when it is missing or the fit code changed."""
    cfg = FitConfig(dataset="ml-latest-small", components=available_components(list(DEMO_COMPONENTS)),
                    component_config={"sequence": {"model": {"epochs": 10, "patience": 2, "id_dropout": 0.1}}},
                    valid_users=610, command="llm-rec demo")
    key = hashlib.sha256((__version__ + cfg.model_dump_json()).encode()).hexdigest()[:12]
    path = cache_dir() / "bundles" / f"demo-ml-latest-small-{key}"
    try:
        read_manifest(path)
        return path
    except BundleError:
        pass
    say = log or print
    say(f"First run: fitting a recommender on the bundled MovieLens sample ({', '.join(cfg.components)}); "
        f"cached in {path}")
    return fit_bundle(cfg, path, log=lambda m: say(f"  {m}"))
