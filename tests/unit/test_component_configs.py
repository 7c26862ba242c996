"""The component configs and the Settings that compose them: same defaults, both spellings
(nested sections and the old flat names), typed errors naming a bad field, and a config
written to JSON never carries a secret."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from llm_recommender.backends.configs import OpenAIConfig, TransformersConfig, VLLMConfig
from llm_recommender.configurable import ComponentConfig
from llm_recommender.errors import InvalidRequestError
from llm_recommender.explain import ReasonsConfig
from llm_recommender.prompts import PromptConfig
from llm_recommender.recommender import component_config, settings_of
from llm_recommender.scorers.llm.listwise import ListwiseConfig
from llm_recommender.scorers.llm.pointwise import PointwiseConfig
from llm_recommender.scorers.llm.verbalizer import VerbalizerConfig
from llm_recommender.settings import Settings

SETTINGS_CONFIGS = [VerbalizerConfig, PointwiseConfig, ListwiseConfig, TransformersConfig, VLLMConfig, OpenAIConfig,
                    PromptConfig, ReasonsConfig]
NAMES = {VerbalizerConfig: "verbalizer", PointwiseConfig: "pointwise", ListwiseConfig: "listwise",
         TransformersConfig: "transformers", VLLMConfig: "vllm", OpenAIConfig: "openai", PromptConfig: "prompt",
         ReasonsConfig: "reasons"}


@pytest.fixture
def clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("LLM_REC_")]:
        monkeypatch.delenv(key)
    return monkeypatch


@pytest.mark.parametrize("cls", SETTINGS_CONFIGS, ids=lambda c: c.__name__)
def test_settings_defaults_are_the_configs_defaults(cls, clean_env):
    assert component_config(Settings(), NAMES[cls]) == cls()


@pytest.mark.parametrize("cls", SETTINGS_CONFIGS, ids=lambda c: c.__name__)
def test_settings_of_is_the_inverse_of_component_config(cls, clean_env):
    fields = {"verbalizer": {"permutations": 3}, "listwise": {"top_k": 2, "verbalizer": {"label_prior": True}},
              "pointwise": {"prefix_reuse": False}, "transformers": {"threads": 1, "dtype": "float32"},
              "vllm": {"kv_cache_gib": 2.0, "permutation_seed": 5}, "openai": {"base_url": "http://x/v1"},
              "prompt": {"max_history": 3}, "reasons": {"max_chars": 50}}[NAMES[cls]]
    config = cls(**fields)
    assert component_config(Settings(**settings_of(NAMES[cls], config)), NAMES[cls]) == config


def test_sections_are_the_component_config_classes():
    s = Settings()
    assert isinstance(s.listwise, ListwiseConfig) and isinstance(s.verbalizer, VerbalizerConfig)
    assert isinstance(s.prompt, PromptConfig) and isinstance(s.reasons, ReasonsConfig)
    assert isinstance(component_config(s, "vllm"), VLLMConfig)


def test_flat_and_nested_names_agree(clean_env):
    flat = Settings(listwise_keys="labels", listwise_top_k=3, vllm_kv_cache_gib=2.5, threads=2, max_history=7,
                    reason_max_chars=80, base_url="http://127.0.0.1:1/v1", pointwise_prefix_reuse=False)
    nested = Settings(listwise={"keys": "labels", "top_k": 3}, vllm={"kv_cache_gib": 2.5}, transformers={"threads": 2},
                      prompt={"max_history": 7}, reasons={"max_chars": 80}, openai={"base_url": "http://127.0.0.1:1/v1"},
                      pointwise={"prefix_reuse": False})
    assert flat == nested
    assert flat.listwise.keys == "labels" and flat.vllm.kv_cache_gib == 2.5 and flat.transformers.threads == 2
    assert Settings.model_validate_json(flat.model_dump_json()) == flat  # round-trips as nested JSON


def test_flat_verbalizer_names_set_the_listwise_pass_too(clean_env):
    s = Settings(permutations=4, permutation_seed=3)
    assert s.verbalizer.permutations == 4 and s.listwise.verbalizer.permutations == 4
    assert component_config(s, "vllm").permutation_seed == 3  # the engine's seed is the verbalizer's
    own = Settings(listwise={"verbalizer": {"permutations": 2}})
    assert own.listwise.verbalizer.permutations == 2 and own.verbalizer.permutations == 1


def test_updated_takes_both_spellings_and_keeps_the_rest(clean_env):
    s = Settings(listwise_keys="labels", model="m")
    t = s.updated(listwise_top_k=2, verbalizer={"permutations": 3})
    assert t.listwise.keys == "labels" and t.listwise.top_k == 2 and t.verbalizer.permutations == 3 and t.model == "m"
    assert s.listwise.top_k is None  # a copy


def test_environment_both_spellings(clean_env):
    clean_env.setenv("LLM_REC_LISTWISE__KEYS", "ids")
    clean_env.setenv("LLM_REC_TRANSFORMERS__THREADS", "2")
    clean_env.setenv("LLM_REC_VLLM_KV_CACHE_GIB", "3")  # the old flat name
    clean_env.setenv("LLM_REC_PERMUTATIONS", "4")
    s = Settings()
    assert s.listwise.keys == "ids" and s.transformers.threads == 2 and s.vllm.kv_cache_gib == 3.0
    assert s.verbalizer.permutations == 4 and s.listwise.verbalizer.permutations == 4
    clean_env.setenv("LLM_REC_LISTWISE_KEYS", "labels")  # flat and nested both set: the nested one wins
    assert Settings().listwise.keys == "ids"
    assert Settings(listwise_keys="labels").listwise.keys == "labels"  # keyword arguments win over the environment


@pytest.mark.parametrize(("changes", "param"), [({"listwise_kees": "labels"}, "listwise_kees"),
                                                 ({"listwise": {"kees": "labels"}}, "listwise.kees"),
                                                 ({"listwise_keys": "letters"}, "listwise.keys"),
                                                 ({"threads": 0}, "transformers.threads")])
def test_unknown_or_bad_field_is_a_typed_error_naming_it(changes, param, clean_env):
    from llm_recommender import Recommender

    with pytest.raises(ValidationError):
        Settings(**changes)
    with pytest.raises(InvalidRequestError) as info:
        Settings().updated(**changes)
    assert info.value.param == param
    with pytest.raises(InvalidRequestError) as info:
        Recommender(backend="fake", **changes)
    assert info.value.param == param


def test_unknown_nested_environment_variable_is_an_error(clean_env):
    clean_env.setenv("LLM_REC_LISTWISE__KEEZ", "labels")
    with pytest.raises(ValidationError, match="keez"):
        Settings()


def test_no_secret_in_a_backend_config():
    s = Settings(api_key="sk-secret", base_url="http://127.0.0.1:1/v1")
    text = component_config(s, "openai").model_dump_json()
    assert "sk-secret" not in text and "api_key" not in text


def test_a_config_of_another_component_is_a_typed_error():
    from llm_recommender.calibration import PlattCalibrator
    from llm_recommender.calibration.isotonic import IsotonicConfig

    with pytest.raises(InvalidRequestError) as info:
        PlattCalibrator(config=IsotonicConfig(x=[0.0], y=[0.5]))
    assert info.value.param == "platt"


def test_bad_value_names_the_field():
    from llm_recommender.backends.fake import FakeBackend
    from llm_recommender.scorers.llm.verbalizer import VerbalizerScorer

    with pytest.raises(InvalidRequestError) as info:
        VerbalizerScorer(FakeBackend(), permutations=0)
    assert info.value.param == "verbalizer.permutations"
    with pytest.raises(InvalidRequestError) as info:
        FakeBackend(leftover_mass=2.0)
    assert info.value.param == "fake.leftover_mass"


def test_base_config_forbids_unknown_keys():
    assert ComponentConfig.model_config["extra"] == "forbid"
