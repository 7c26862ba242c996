"""The component configs and the flat Settings agree: same defaults, every field has its Settings
field, and a config written to JSON never carries a secret."""

from __future__ import annotations

import os

import pytest

from llm_recommender.backends.configs import OpenAIConfig, TransformersConfig, VLLMConfig
from llm_recommender.configurable import ComponentConfig
from llm_recommender.errors import InvalidRequestError
from llm_recommender.scorers.listwise import ListwiseConfig
from llm_recommender.scorers.pointwise import PointwiseConfig
from llm_recommender.scorers.verbalizer import VerbalizerConfig
from llm_recommender.settings import Settings

SETTINGS_CONFIGS = [VerbalizerConfig, PointwiseConfig, ListwiseConfig, TransformersConfig, VLLMConfig, OpenAIConfig]


@pytest.fixture
def clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("LLM_REC_")]:
        monkeypatch.delenv(key)


@pytest.mark.parametrize("cls", SETTINGS_CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_a_settings_field_with_the_same_default(cls, clean_env):
    fields = Settings.model_fields
    nested = cls.nested()
    for name in cls.model_fields:
        if name in nested:
            continue
        key = cls.settings_key(name, fields)
        assert key is not None, f"{cls.__name__}.{name} has no Settings field"
    assert cls.from_settings(Settings()) == cls()


def test_prefixed_names_map_both_ways():
    s = Settings(vllm_kv_cache_gib=2.5, vllm_in_process=True, model="m", listwise_top_k=3, permutations=4)
    v = VLLMConfig.from_settings(s)
    assert v.kv_cache_gib == 2.5 and v.in_process and v.model == "m"
    assert v.settings_update(s)["vllm_kv_cache_gib"] == 2.5
    lw = ListwiseConfig.from_settings(s)
    assert lw.top_k == 3 and lw.verbalizer.permutations == 4
    update = lw.settings_update(s)
    assert update["listwise_top_k"] == 3 and update["permutations"] == 4 and "top_k" not in update


def test_no_secret_in_a_backend_config():
    s = Settings(api_key="sk-secret", base_url="http://127.0.0.1:1/v1")
    text = OpenAIConfig.from_settings(s).model_dump_json()
    assert "sk-secret" not in text and "api_key" not in text


def test_a_config_of_another_component_is_a_typed_error():
    from llm_recommender.calibration import PlattCalibrator
    from llm_recommender.calibration.isotonic import IsotonicConfig

    with pytest.raises(InvalidRequestError) as info:
        PlattCalibrator(config=IsotonicConfig(x=[0.0], y=[0.5]))
    assert info.value.param == "platt"


def test_bad_value_names_the_field():
    from llm_recommender.backends.fake import FakeBackend
    from llm_recommender.scorers import VerbalizerScorer

    with pytest.raises(InvalidRequestError) as info:
        VerbalizerScorer(FakeBackend(), permutations=0)
    assert info.value.param == "verbalizer.permutations"
    with pytest.raises(InvalidRequestError) as info:
        FakeBackend(leftover_mass=2.0)
    assert info.value.param == "fake.leftover_mass"


def test_base_config_forbids_unknown_keys():
    assert ComponentConfig.model_config["extra"] == "forbid"
