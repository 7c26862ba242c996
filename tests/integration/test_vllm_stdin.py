"""The vLLM engine from a script on stdin (``python - <<EOF``): the child process vLLM spawns
cannot re-import a ``__main__`` read from '<stdin>', so the backend keeps the engine in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vllm_support import require_vllm, tiny_vllm_model_dir  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = """
from llm_recommender import Recommender
rec = Recommender(backend="vllm", model={model!r})
r = rec.rank(history=[{{"id": "1", "title": "Toy Story (1995)"}}],
             candidates=[{{"id": "2", "title": "Heat (1995)"}}, {{"id": "3", "title": "Babe (1995)"}}])
print("RANKED", [i.id for i in r.items])
rec.backend.close()
"""


def test_engine_from_a_script_on_stdin(tiny_vllm_model_dir):  # noqa: F811
    require_vllm()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-"], input=SCRIPT.format(model=str(tiny_vllm_model_dir)).encode(),
                          capture_output=True, timeout=400, env=env)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and b"RANKED" in proc.stdout, err[-3000:]
    assert "in-process" in err  # the warning says why and what it costs
