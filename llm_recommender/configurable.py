"""Component configs, as in LensKit: each component class declares a pydantic config.

A component (scorer, backend, calibrator, bundle component) names its config class in
``config_class``; its constructor takes the config object, a plain dict of it, or keyword
arguments (which override the config), and keeps the validated result in ``self.config``.
The config round-trips to JSON (``model_dump_json`` / ``model_validate_json``), and an
unknown key or a bad value is an :class:`~llm_recommender.errors.InvalidRequestError`
whose ``param`` names the field (``"platt.zz"``).

The pipeline's :class:`~llm_recommender.settings.Settings` composes these configs, one
section per component (``settings.listwise`` is a ``ListwiseConfig``); a field's old flat
name (``listwise_keys``) is ``settings_prefix + field`` and still works as an alias. The
Recommender builds each component's config from ``Settings`` in one place
(:func:`~llm_recommender.recommender.component_config`); no component reads ``Settings``.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InvalidRequestError, from_validation_error


class ComponentConfig(BaseModel):
    """The settings of one component: unknown keys are errors, and it round-trips to JSON."""

    model_config = ConfigDict(extra="forbid")

    # The flat (old) Settings name of field ``name`` is ``settings_prefix + name`` (``listwise_`` + ``keys``).
    settings_prefix: ClassVar[str] = ""
    # Fields that change speed or resources but not the scores: left out of :meth:`score_key`.
    score_neutral: ClassVar[frozenset[str]] = frozenset()

    def score_key(self) -> dict[str, Any]:
        """This config as JSON, less its :attr:`score_neutral` fields: what an eval cache key hashes."""
        return self.model_dump(mode="json", exclude=set(self.score_neutral))

    @classmethod
    def nested(cls) -> dict[str, type[ComponentConfig]]:
        """Fields that are themselves component configs (e.g. listwise's verbalizer)."""
        hints = typing.get_type_hints(cls)
        return {
            name: hints[name]
            for name in cls.model_fields
            if isinstance(hints.get(name), type) and issubclass(hints[name], ComponentConfig)
        }


class Configurable:
    """Mixin for components with a :class:`ComponentConfig` in ``self.config``."""

    config_class: ClassVar[type[ComponentConfig]] = ComponentConfig
    config: ComponentConfig

    @classmethod
    def config_param(cls) -> str:
        """How errors name this component's fields: ``<param>.<field>``."""
        return str(getattr(cls, "name", cls.__name__))

    @classmethod
    def validate_config(
        cls, config: ComponentConfig | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
    ) -> ComponentConfig:
        """The validated config from a config object or dict, with ``overrides`` (keyword arguments) on top."""
        overrides = overrides or {}
        if isinstance(config, cls.config_class) and not overrides:
            return config
        if isinstance(config, BaseModel):
            if not isinstance(config, cls.config_class):
                raise InvalidRequestError(
                    f"{cls.config_param()} takes a {cls.config_class.__name__}, not a {type(config).__name__}",
                    param=cls.config_param(),
                )
            config = config.model_dump()
        try:
            return cls.config_class.model_validate({**(config or {}), **overrides})
        except ValidationError as exc:
            raise from_validation_error(exc, prefix=cls.config_param()) from None
