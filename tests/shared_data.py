"""Where the benchmark copies live for tests: ``../shared/data`` beside the clone, or
``$LLM_REC_SHARED_DATA``. Missing data skips locally but fails under CI=true."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import skip_or_fail

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    env = os.environ.get("LLM_REC_SHARED_DATA")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"


def shared_data_dir(name: str, marker: str) -> Path:
    """The folder ``name`` under the shared data root, holding ``marker``; else skip (fail in CI)."""
    path = shared_data_root() / name
    if not (path / marker).is_file():
        skip_or_fail(f"{path / marker} not found (set LLM_REC_SHARED_DATA to the shared data folder)")
    return path
