"""The test kit: the scripted fake backend and conformance test mixins, as in LensKit.

A component's tests subclass a mixin and set a few class attributes; the mixin's tests
then check what every component of that kind must do: construction from its config and
from keyword arguments (the same result), the config's JSON round trip, an unknown config
key or registry name as a typed error, probabilities in [0, 1], and determinism::

    from llm_recommender.testing import CalibratorTests

    class TestPlatt(CalibratorTests):
        component = PlattCalibrator
        config = {"a": 2.0, "b": -1.0}

Mixins: :class:`BackendTests`, :class:`ScorerTests` (any scorer; ``make`` builds it),
:class:`LLMScorerTests` (scorers over the fake backend), :class:`ComponentTests` (bundle
components, fitted on a tiny catalogue) and :class:`CalibratorTests`. This module imports
pytest: import it from tests only.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import ValidationError

from .backends import backend_class
from .backends.base import Backend, Generation, metered
from .backends.fake import FakeBackend
from .calibration.base import calibrator_class, calibrator_from_dict, load_calibrator
from .configurable import ComponentConfig
from .errors import CapabilityError, InvalidRequestError, UnknownNameError
from .protocol import Item, RankRequest, parse_request
from .recommender import component_config, settings_of
from .scorers import scorer_class
from .scorers.base import ScoreResult
from .scorers.component import TrainingData
from .scorers.item_space import ItemSpace
from .settings import Settings

__all__ = [
    "BackendTests",
    "CalibratorTests",
    "ComponentTests",
    "ConfigTests",
    "FakeBackend",
    "LLMScorerTests",
    "ScorerTests",
    "SettingsConfigTests",
    "hashed_score_fn",
    "sample_requests",
    "tiny_catalogue",
]

UNKNOWN_KEY = "no_such_option"


# ---- shared inputs ------------------------------------------------------------------------

CATALOGUE = [
    ("m1", "Toy Story (1995)", "Animation"), ("m2", "Aladdin (1992)", "Animation"),
    ("m3", "The Lion King (1994)", "Animation"), ("m4", "Heat (1995)", "Crime"),
    ("m5", "Casino (1995)", "Crime"), ("m6", "Se7en (1995)", "Thriller"),
    ("m7", "Fargo (1996)", "Crime"), ("m8", "Babe (1995)", "Family"),
    ("m9", "Jumanji (1995)", "Adventure"), ("m10", "Clueless (1995)", "Comedy"),
    ("m11", "Apollo 13 (1995)", "Drama"), ("m12", "Twister (1996)", "Action"),
]


def catalogue_items() -> list[Item]:
    return [Item(id=i, title=t, attributes={"genres": [g]}) for i, t, g in CATALOGUE]


def sample_requests() -> list[RankRequest]:
    """Four validated requests over :data:`CATALOGUE` (different histories, one empty; 3-5 candidates)."""
    items = {it.id: it.model_dump(exclude_none=True) for it in catalogue_items()}

    def req(history: Sequence[str], candidates: Sequence[str]) -> RankRequest:
        hist = [{**items[h], "rating": 5, "timestamp": t} for t, h in enumerate(history, 1)]
        return parse_request({"history": hist, "candidates": [items[c] for c in candidates], "top_k": 3})

    return [
        req(["m1", "m2", "m3"], ["m4", "m8", "m9", "m5"]),
        req(["m4", "m5"], ["m6", "m7", "m1", "m10", "m12"]),
        req(["m11"], ["m12", "m2", "m6", "m9"]),
        req([], ["m3", "m7", "m10"]),  # cold start: no history at all
    ]


def tiny_catalogue(seed: int = 0) -> tuple[Any, Any]:
    """An ``ItemSpace`` of :data:`CATALOGUE` (seeded 8-d ``minilm`` vectors) and seeded ``TrainingData``."""
    rng = np.random.default_rng(seed)
    space = ItemSpace(catalogue_items(), vectors={"minilm": rng.normal(size=(len(CATALOGUE), 8))})
    sequences = [rng.choice(len(CATALOGUE), size=int(rng.integers(3, 7)), replace=False) for _ in range(30)]
    return space, TrainingData(space=space, sequences=[s.astype(np.int64) for s in sequences], seed=seed)


def hashed_score_fn(prompt: str, token: str) -> float:
    """A deterministic fake "model" whose preferences depend on the prompt and the token."""
    return (zlib.crc32(f"{prompt}\x1f{token}".encode()) % 1000) / 250.0


# ---- config conformance -------------------------------------------------------------------


class ConfigTests:
    """Construction, config JSON round trip, unknown keys and names: for every configurable component."""

    component: ClassVar[type]  # the class under test
    config: ClassVar[dict[str, Any]] = {}  # a (non-default) config used throughout, as keyword arguments

    def make(self, config: Any = None, **kwargs: Any) -> Any:
        """Build the component under test (override where the constructor needs more)."""
        return self.component(config=config, **kwargs)

    def lookup(self, name: str) -> type:
        """The registry of this kind of component: name -> class."""
        raise NotImplementedError

    @property
    def registry_name(self) -> str:
        return self.component.name

    def test_declares_its_own_config_class(self) -> None:
        cls = self.component.config_class
        assert issubclass(cls, ComponentConfig) and cls is not ComponentConfig
        assert cls.model_config.get("extra") == "forbid"

    def test_config_object_dict_and_kwargs_agree(self) -> None:
        cls = self.component.config_class
        from_object = self.make(config=cls(**self.config))
        from_kwargs = self.make(**self.config)
        from_dict = self.make(config=dict(self.config))
        assert isinstance(from_object.config, cls)
        assert from_object.config == from_kwargs.config == from_dict.config

    def test_config_json_round_trip(self) -> None:
        cls = self.component.config_class
        config = self.make(**self.config).config
        text = config.model_dump_json()
        json.loads(text)  # plain JSON
        again = cls.model_validate_json(text)
        assert again == config
        assert self.make(config=again).config == config

    def test_unknown_config_key_is_a_typed_error_naming_it(self) -> None:
        with pytest.raises(InvalidRequestError) as info:
            self.make(**self.config, **{UNKNOWN_KEY: 1})
        assert info.value.param is not None and info.value.param.endswith(UNKNOWN_KEY)
        with pytest.raises(ValidationError):
            self.component.config_class.model_validate_json(json.dumps({**self.config, UNKNOWN_KEY: 1}))

    def test_registered_by_name(self) -> None:
        assert self.lookup(self.registry_name) is self.component

    def test_unknown_name_lists_the_valid_names(self) -> None:
        with pytest.raises(UnknownNameError) as info:
            self.lookup("no-such-component")
        assert self.registry_name in info.value.valid
        assert self.registry_name in str(info.value)


class SettingsConfigTests:
    """For components whose config the Recommender builds from ``Settings`` (LLM scorers, real backends):
    the defaults agree, and settings carrying a config give that config (and that component) back."""

    component: ClassVar[type]
    config: ClassVar[dict[str, Any]] = {}

    def test_config_defaults_match_settings_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key in [k for k in os.environ if k.startswith("LLM_REC_")]:
            monkeypatch.delenv(key)
        assert component_config(Settings(), self.component.name) == self.component.config_class()

    def test_settings_carry_the_config(self) -> None:
        config = self.component.config_class(**self.config)
        settings = Settings(**settings_of(self.component.name, config))
        built = component_config(settings, self.component.name)
        assert built == config
        assert self.make(config=built).config == config  # type: ignore[attr-defined]


# ---- backends -----------------------------------------------------------------------------


class BackendTests(ConfigTests):
    """The ``Backend`` seam: description, tokens, log-probabilities, generation, usage, determinism."""

    prompts: ClassVar[list[str]] = ["Q: Which film? A:", "Q: Which of these films would you watch next? Answer:"]
    labels: ClassVar[list[str]] = ["A", "B", "C"]
    logprob_atol: ClassVar[float] = 1e-6  # how close repeated / prefix-reused log-probabilities must be
    max_tokens: ClassVar[int] = 12

    def lookup(self, name: str) -> type:
        return backend_class(name)  # type: ignore[return-value]

    @pytest.fixture(scope="class")
    def backend(self) -> Backend:
        return self.make(**self.config)

    def label_ids(self, backend: Backend) -> list[int]:
        ids = [backend.single_token_id(label) for label in self.labels]
        assert all(isinstance(i, int) for i in ids), f"labels {self.labels} are not single tokens"
        return ids  # type: ignore[return-value]

    def test_describes_itself(self, backend: Backend) -> None:
        assert isinstance(backend.model_name, str) and backend.model_name
        assert isinstance(backend.context_length, int) and backend.context_length > 0

    def test_tokens(self, backend: Backend) -> None:
        text = backend.chat_prompt([{"role": "user", "content": "Hello there"}])
        assert isinstance(text, str) and "Hello there" in text
        assert backend.count_tokens("Hello there") > 0
        assert backend.single_token_id("A") == backend.single_token_id("A")
        assert backend.single_token_id("Hello there, general Kenobi") is None

    def test_next_token_logprobs_are_log_probabilities(self, backend: Backend) -> None:
        lp = backend.next_token_logprobs(self.prompts, self.label_ids(backend))
        assert lp.shape == (len(self.prompts), len(self.labels))
        assert np.all(np.isfinite(lp)) and np.all(lp <= 1e-6)
        assert np.all(np.exp(lp).sum(axis=1) <= 1.0 + 1e-4)

    def test_logprobs_are_deterministic_and_batch_independent(self, backend: Backend) -> None:
        ids = self.label_ids(backend)
        a = backend.next_token_logprobs(self.prompts, ids)
        b = backend.next_token_logprobs(self.prompts, ids)
        np.testing.assert_allclose(a, b, atol=self.logprob_atol)
        one = np.concatenate([backend.next_token_logprobs([p], ids) for p in self.prompts])
        np.testing.assert_allclose(a, one, atol=self.logprob_atol)

    def test_prefix_reuse_matches_full_prompts(self, backend: Backend) -> None:
        ids = self.label_ids(backend)
        prefix, suffixes = "Q: Which film would you watch next?", [" Heat. A:", " Casino, or Fargo. A:"]
        reused = backend.prefix_next_token_logprobs(prefix, suffixes, ids)
        full = backend.next_token_logprobs([prefix + s for s in suffixes], ids)
        np.testing.assert_allclose(reused, full, atol=self.logprob_atol)

    def test_generation_is_greedy_and_deterministic(self, backend: Backend) -> None:
        a = backend.generate(self.prompts, max_tokens=self.max_tokens)
        b = backend.generate(self.prompts, max_tokens=self.max_tokens)
        assert len(a) == len(self.prompts) and all(isinstance(g, Generation) for g in a)
        assert [g.text for g in a] == [g.text for g in b]
        assert all(g.finish_reason in ("stop", "length") and g.completion_tokens <= self.max_tokens for g in a)

    def test_json_schema_output_parses_when_it_stops(self, backend: Backend) -> None:
        if not backend.supports_json_schema:
            with pytest.raises(CapabilityError):
                backend.require("json_schema")
            return
        schema = {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 40}},
                  "required": ["reason"], "additionalProperties": False}
        for gen in backend.generate(self.prompts[:1], max_tokens=60, json_schema=schema):
            if gen.finish_reason == "stop":
                assert isinstance(json.loads(gen.text)["reason"], str)

    def test_usage_is_metered_per_call(self, backend: Backend) -> None:
        with metered() as meter:
            backend.next_token_logprobs(self.prompts, self.label_ids(backend))
        assert meter.forward_passes >= 1 and meter.prompt_tokens > 0

    def test_missing_capability_is_a_typed_error(self, backend: Backend) -> None:
        with pytest.raises(CapabilityError):
            backend.require("teleportation")


# ---- scorers ------------------------------------------------------------------------------


class ScorerTests(ConfigTests):
    """The ``Scorer`` seam: one result per request, aligned, probabilities in [0, 1], deterministic."""

    def lookup(self, name: str) -> type:
        return scorer_class(name)

    def requests(self) -> list[RankRequest]:
        return sample_requests()

    def check_result(self, request: RankRequest, result: ScoreResult) -> None:
        n = len(request.candidates)
        scores, probs = np.asarray(result.scores, dtype=float), np.asarray(result.probabilities, dtype=float)
        assert scores.shape == (n,) and probs.shape == (n,)
        assert np.all(np.isfinite(scores)) and np.all(np.isfinite(probs))
        assert np.all((probs >= 0.0) & (probs <= 1.0))
        assert sorted(result.ranking()) == list(range(n))
        assert 0 <= result.history_used <= len(request.history)

    def test_scores_and_probabilities(self) -> None:
        requests = self.requests()
        results = self.make(**self.config).score_many(requests)
        assert len(results) == len(requests)
        for request, result in zip(requests, results):
            self.check_result(request, result)

    def test_same_input_same_output(self) -> None:
        requests = self.requests()
        a = self.make(**self.config).score_many(requests)
        b = self.make(**self.config).score_many(requests)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.scores, y.scores)
            np.testing.assert_array_equal(x.probabilities, y.probabilities)
            assert x.ranking() == y.ranking()

    def test_batch_independent(self) -> None:
        requests = self.requests()
        scorer = self.make(**self.config)
        together = scorer.score_many(requests)
        alone = [scorer.score(r) for r in requests]
        for x, y in zip(together, alone):
            np.testing.assert_allclose(x.scores, y.scores, atol=1e-9)
            np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-9)


class LLMScorerTests(SettingsConfigTests, ScorerTests):
    """LLM strategies over the scripted fake backend (``backend()`` may script it differently)."""

    def backend(self) -> Backend:
        return FakeBackend(score_fn=hashed_score_fn)

    def make(self, config: Any = None, **kwargs: Any) -> Any:
        return self.component(self.backend(), config=config, **kwargs)


class ComponentTests(ScorerTests):
    """Bundle components: fitted on :func:`tiny_catalogue`, saved and loaded with identical scores."""

    def make(self, config: Any = None, **kwargs: Any) -> Any:
        space, data = tiny_catalogue()
        return self.component(space, config, **kwargs).fit(data)

    def test_save_and_load_give_identical_scores(self, tmp_path: Any) -> None:
        fitted = self.make(**self.config)
        fitted.save(tmp_path / "component")
        loaded = self.component.load(tmp_path / "component", fitted.space)
        assert loaded.config == fitted.config
        requests = self.requests()
        for x, y in zip(fitted.score_many(requests), loaded.score_many(requests)):
            np.testing.assert_array_equal(x.scores, y.scores)


# ---- calibrators --------------------------------------------------------------------------


def calibration_sample(n_groups: int = 20, per_group: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Flat validation arrays (scores = log-probabilities of per-request softmaxes, 0/1 labels, groups)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_groups, per_group)) * 2.0
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.zeros_like(p)
    y[np.arange(n_groups), [rng.choice(per_group, p=row) for row in p]] = 1.0
    return {"scores": np.log(p).ravel(), "labels": y.ravel(), "probabilities": p.ravel(),
            "groups": np.repeat(np.arange(n_groups), per_group)}


class CalibratorTests(ConfigTests):
    """The ``Calibrator`` seam: outputs in [0, 1], deterministic, file round trip, fit."""

    fit_options: ClassVar[dict[str, Any]] = {}

    def fit_data(self) -> dict[str, np.ndarray]:
        return calibration_sample()

    def lookup(self, name: str) -> type:
        return calibrator_class(name)

    def inputs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(scores, probabilities) of a few requests, extreme ones included."""
        data = self.fit_data()
        groups = data["groups"]
        out = [(data["scores"][groups == g], data["probabilities"][groups == g]) for g in np.unique(groups)[:3]]
        p = np.array([1e-9, 0.5, 1.0 - 1e-9])
        out.append((np.log(p), p))
        return out

    def test_outputs_are_probabilities(self) -> None:
        cal = self.make(**self.config)
        for scores, probs in self.inputs():
            out = np.asarray(cal.transform(scores, probs), dtype=float)
            assert out.shape == scores.shape
            assert np.all(np.isfinite(out)) and np.all((out >= 0.0) & (out <= 1.0))

    def test_same_input_same_output(self) -> None:
        a, b = self.make(**self.config), self.make(**self.config)
        for scores, probs in self.inputs():
            np.testing.assert_array_equal(a.transform(scores, probs), b.transform(scores, probs))

    def test_file_round_trip(self, tmp_path: Any) -> None:
        cal = self.make(**self.config)
        cal.fitted_for = {"strategy": "verbalizer", "model": "fake-model", "template_hash": "0" * 12}
        cal.save(tmp_path / "calibrator.json")
        loaded = load_calibrator(tmp_path / "calibrator.json")
        assert type(loaded) is self.component and loaded.config == cal.config
        assert loaded.fitted_for == cal.fitted_for
        for scores, probs in self.inputs():
            np.testing.assert_array_equal(loaded.transform(scores, probs), cal.transform(scores, probs))

    def test_unknown_key_in_a_file_is_a_typed_error(self) -> None:
        with pytest.raises(InvalidRequestError) as info:
            calibrator_from_dict({"type": self.registry_name, **self.make(**self.config).params(), UNKNOWN_KEY: 1})
        assert info.value.param == "calibrator" and UNKNOWN_KEY in info.value.message

    def test_fit_is_deterministic_and_gives_probabilities(self) -> None:
        a = self.component.fit(**self.fit_data(), **self.fit_options)
        b = self.component.fit(**self.fit_data(), **self.fit_options)
        assert type(a) is self.component and a.config == b.config
        for scores, probs in self.inputs():
            out = a.transform(scores, probs)
            assert np.all(np.isfinite(out)) and np.all((out >= 0.0) & (out <= 1.0))
