"""The pipeline's settings: the component configs, composed; round-trips to JSON.

``Settings`` keeps what the whole pipeline shares at its top level (``model``, ``backend``,
``strategy``, calibrators, and the model fields every backend reads: ``dtype``,
``tokenizer``, ``batch_size``) and one section per component, each that component's own
config class:

=================  ==================================  =====================================
section            type                                flat (old) names
=================  ==================================  =====================================
``prompt``         ``prompts.PromptConfig``            ``template_dir``, ``max_history``, ...
``reasons``        ``reasons.ReasonsConfig``           ``reason_<field>``
``verbalizer``     ``scorers.VerbalizerConfig``        ``permutations``, ``label_prior``, ...
``pointwise``      ``scorers.PointwiseConfig``         ``pointwise_<field>``
``listwise``       ``scorers.ListwiseConfig``          ``listwise_<field>``
``transformers``   ``backends.TransformersOptions``    ``threads``, ``device``, ...
``vllm``           ``backends.VLLMOptions``            ``vllm_<field>``
``openai``         ``backends.OpenAIOptions``          ``base_url``, ``request_timeout``, ...
=================  ==================================  =====================================

The Recommender builds each component's config from these in one place
(:func:`~llm_recommender.recommender.component_config`); components never see ``Settings``.

Environment variables (``LLM_REC_*``) override defaults, nested with ``__``
(``LLM_REC_LISTWISE__KEYS=labels``, ``LLM_REC_TRANSFORMERS__THREADS=2``). The flat names
still work everywhere, as aliases: ``Settings(listwise_keys="labels")``,
``LLM_REC_LISTWISE_KEYS=labels``, the CLI options, ``Recommender(threads=1)``. A flat
verbalizer name (``permutations``, ...) sets the verbalizer strategy's and listwise's
verbalizer pass alike, as it always did; ``listwise.verbalizer`` alone sets the latter.
An unknown name, flat or nested, is a validation error naming it.

Secrets have names of their own: the upstream server's key (backend "openai") is
``LLM_REC_UPSTREAM_API_KEY``, the key that protects ``llm-rec serve`` is
``LLM_REC_SERVER_API_KEY``. ``LLM_REC_API_KEY``, which both once read, is read by neither,
so the server's secret is never sent upstream as a bearer token.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backends.configs import Dtype, OpenAIOptions, TransformersOptions, VLLMOptions
from .configurable import ComponentConfig
from .errors import from_validation_error
from .explain.llm_reasons import ReasonsConfig
from .model_store import DEFAULT_MODEL
from .prompts import PromptConfig
from .scorers.llm.listwise import ListwiseConfig
from .scorers.llm.pointwise import PointwiseConfig
from .scorers.llm.verbalizer import VerbalizerConfig

__all__ = ["DEFAULT_MODEL", "FLAT_NAMES", "SECTIONS", "Settings", "nest_flat", "secret_from_env"]

# section name -> its config class (the flat name of field f: ``cls.settings_prefix + f``)
SECTIONS: dict[str, type[ComponentConfig]] = {
    "prompt": PromptConfig,
    "reasons": ReasonsConfig,
    "verbalizer": VerbalizerConfig,
    "pointwise": PointwiseConfig,
    "listwise": ListwiseConfig,
    "transformers": TransformersOptions,
    "vllm": VLLMOptions,
    "openai": OpenAIOptions,
}


def _flat_names() -> dict[str, list[tuple[str, ...]]]:
    """Flat (old) name -> the nested paths it sets."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for section, cls in SECTIONS.items():
        nested = cls.nested()
        for field in cls.model_fields:
            if field not in nested:
                out.setdefault(cls.settings_prefix + field, []).append((section, field))
    for field in VerbalizerConfig.model_fields:  # listwise starts from a verbalizer pass: the flat names set both
        out[field].append(("listwise", "verbalizer", field))
    return out


FLAT_NAMES: dict[str, list[tuple[str, ...]]] = _flat_names()


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return {k: getattr(value, k) for k in type(value).model_fields}
    return dict(value) if isinstance(value, Mapping) else {}


def nest_flat(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the flat (old) names moved into their sections; a flat name wins over
    the same field given nested in the same mapping. Unknown names are left for validation."""
    out = dict(values)
    for flat in [k for k in out if k in FLAT_NAMES]:
        value = out.pop(flat)
        for path in FLAT_NAMES[flat]:
            node = out
            for key in path[:-1]:
                node[key] = _as_dict(node.get(key))
                node = node[key]
            node[path[-1]] = value
    return out


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` on top, merging nested mappings (and models) key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), (Mapping, BaseModel)):
            out[key] = deep_merge(_as_dict(out[key]), value)
        else:
            out[key] = value
    return out


def secret_from_env(env_source: Callable[[], dict[str, Any]], field: str, env_name: str) -> Callable[[], dict[str, Any]]:
    """``env_source`` with ``field`` read from ``env_name`` only, never from ``LLM_REC_<FIELD>``."""

    def read() -> dict[str, Any]:
        values = {k: v for k, v in env_source().items() if k != field}
        if os.environ.get(env_name):
            values[field] = os.environ[env_name]
        return values

    return read


def _nested(source: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    return lambda: nest_flat(source())


def _flat_env(prefix: str) -> Callable[[], dict[str, Any]]:
    """The old flat environment variables (``LLM_REC_LISTWISE_KEYS``), nested; the ``__`` ones win."""

    def read() -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items()}
        return nest_flat({flat: env[prefix + flat.upper()] for flat in FLAT_NAMES if prefix + flat.upper() in env})

    return read


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_REC_", env_nested_delimiter="__", extra="forbid")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):  # type: ignore[no-untyped-def, override]
        env = secret_from_env(env_settings, "api_key", "LLM_REC_UPSTREAM_API_KEY")
        return _nested(init_settings), env, _flat_env("LLM_REC_"), dotenv_settings, file_secret_settings

    model: str = Field(default=DEFAULT_MODEL, description="model alias, local folder, or Hugging Face id")
    backend: str = "transformers"
    strategy: str = "verbalizer"
    calibrator: Path | None = Field(default=None, description="JSON file of a fitted calibrator for the default strategy")
    calibrators: dict[str, Path] = Field(default_factory=dict, description="strategy -> JSON file of its fitted calibrator")
    retrieve_candidates: int = Field(default=50, ge=1, le=200, description="bundle: candidates retrieved from the catalogue when a request gives none")

    # the model, as every backend loads it
    dtype: Dtype = "auto"
    tokenizer: str | None = Field(default=None, description="tokenizer folder/id (vllm, openai; default: model)")
    batch_size: int = Field(default=16, ge=1, description="prompts per forward pass / parallel requests (GPU; on CPU full prompts go one by one)")
    api_key: SecretStr | None = Field(
        default=None, description="openai backend: sent as Bearer token to base_url (env LLM_REC_UPSTREAM_API_KEY; default: OPENAI_API_KEY or 'EMPTY')"
    )

    # one section per component: its own config
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    reasons: ReasonsConfig = Field(default_factory=ReasonsConfig)
    verbalizer: VerbalizerConfig = Field(default_factory=VerbalizerConfig)
    pointwise: PointwiseConfig = Field(default_factory=PointwiseConfig)
    listwise: ListwiseConfig = Field(default_factory=ListwiseConfig)
    transformers: TransformersOptions = Field(default_factory=TransformersOptions)
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions)

    @model_validator(mode="before")
    @classmethod
    def _flat_aliases(cls, data: Any) -> Any:
        return nest_flat(data) if isinstance(data, Mapping) else data

    def updated(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` (flat or nested names) applied on top; a bad name or
        value is a typed error naming it."""
        try:
            return type(self).model_validate(deep_merge(self.model_dump(), nest_flat(changes)))
        except ValidationError as exc:
            raise from_validation_error(exc) from None
