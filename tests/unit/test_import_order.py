"""Every module of the package imports in a fresh interpreter, in alphabetical order and in reverse.

An import circle hidden by the usual import order (``a`` imports ``b`` at its top, ``b`` imports
``a``) breaks whichever module a fresh interpreter happens to import first; two orders catch it.
Modules whose optional package is not installed here are skipped by name, and only those.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

# module -> the optional package it needs at import (the package's extras); it must import where that is installed
OPTIONAL = {
    "llm_recommender.scorers.learned._net": "torch",
    "llm_recommender.scorers.learned._training": "torch",
    "llm_recommender.scorers.learned.sequence_model": "torch",
    "llm_recommender.ranker.soft_tokens": "torch",
    "llm_recommender.constrained_vllm": "vllm",
    "llm_recommender.backends.vllm_backend": "vllm",
    "llm_recommender.server.app": "fastapi",
    "llm_recommender.server.router": "fastapi",
}


def package_modules() -> list[str]:
    """Every module of the package, read from its files (importing it here would hide what this test looks for)."""
    spec = importlib.util.find_spec("llm_recommender")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent
    names = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(n for n in names if OPTIONAL.get(n) is None or importlib.util.find_spec(OPTIONAL[n]) is not None)


@pytest.mark.parametrize("order", ["alphabetical", "reverse"])
def test_every_module_imports_in_a_fresh_interpreter(order: str) -> None:
    names = package_modules()
    assert len(names) > 80 and "llm_recommender.scorers.fused" in names
    if order == "reverse":
        names.reverse()
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
