"""Options shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model alias, local folder or Hugging Face id (default: the embedded SmolLM2-135M-Instruct).")]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="transformers | vllm | openai | auto (the vLLM engine on a CUDA GPU, transformers on CPU: 4x quicker to start with a third of the memory; vLLM ranked 1.1-1.3x faster there, see docs/vllm.md).")]
ServiceBackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="transformers | vllm | openai | auto (default: auto, i.e. the vLLM engine on a CUDA GPU, transformers on CPU: 4x quicker to start with a third of the memory; vLLM ranked 1.1-1.3x faster there, see docs/vllm.md; env LLM_REC_BACKEND).", show_default=False)]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server for --backend openai, e.g. http://127.0.0.1:8000/v1 (see serve-model).")]
# Every registered strategy, named here because typer needs the help text at import (a test checks it against the registries).
STRATEGY_HELP = ("With --bundle: fused (the default) or one of its fitted components alone: popularity, cooccurrence, "
                 "itemknn, als, bpr, embedding, representation, sequence, llm_ranker, random. With or without a bundle, an LLM "
                 "strategy: verbalizer (the default without a bundle), pointwise, listwise.")
StrategyOpt = Annotated[str | None, typer.Option("--strategy", "-s", help=STRATEGY_HELP)]
CalibratorOpt = Annotated[Path | None, typer.Option("--calibrator", help="JSON file of a fitted calibrator.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch threads (default: all cores; 2 ran 2x faster than 1 on an idle 2-core CPU).")]
TemplateDirOpt = Annotated[Path | None, typer.Option("--template-dir", help="Folder of your own *.j2 prompt templates.")]


def service_backend(backend: str | None) -> str | None:
    """``serve`` and ``batch`` default to ``auto`` (vLLM on a GPU); --backend or LLM_REC_BACKEND win."""
    if backend is not None or os.environ.get("LLM_REC_BACKEND"):
        return backend
    from ..backends import AUTO

    return AUTO


def recommender_kwargs(**opts: Any) -> dict[str, Any]:
    """Drop unset options so Settings defaults (and LLM_REC_* env vars) apply."""
    return {k: v for k, v in opts.items() if v is not None}


BundleOpt = Annotated[Path | None, typer.Option("--bundle", help="Folder of a recommender fitted by `llm-rec fit` (default strategy: its fused ranking; requests may omit candidates).")]


def with_options(options: Mapping[str, tuple[Any, Any]], *, into: str, build: Callable[..., Any] = dict
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``options`` (name -> (Annotated type, default)) to a typer command and hand their values to it as
    one argument ``into`` (``build(**values)``): options declared once, however many commands take them."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != into] + [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            for name, (annotation, default) in options.items()]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in options}
            return command(**kwargs, **{into: build(**values)})

        # typer reads the signature (and the annotations) of what it is given: the command's own plus these.
        run.__signature__ = signature.replace(parameters=params)  # pyright: ignore[reportAttributeAccessIssue]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return wrap


@dataclass(frozen=True)
class RecommenderOptions:
    """What every ranking command (rank, serve, batch) takes to build its Recommender: declared once, below."""

    bundle: Path | None = None
    model: str | None = None
    backend: str | None = None
    base_url: str | None = None
    strategy: str | None = None
    calibrator: Path | None = None
    threads: int | None = None
    template_dir: Path | None = None
    component_config: str | None = None  # JSON text; needs bundle

    def settings(self, *, with_strategy: bool = True) -> dict[str, Any]:
        """The set options as Recommender/Settings keyword arguments (unset ones leave the defaults)."""
        opts = asdict(self)
        del opts["bundle"]
        opts["component_config"] = parse_component_config(self.component_config, self.bundle)
        if not with_strategy:
            del opts["strategy"]
        return recommender_kwargs(**opts)

    def make(self) -> Any:
        """The one way every command builds its Recommender: from a bundle, or from settings alone."""
        return make_recommender(self.bundle, **self.settings())


def recommender_options(*, service: bool = False, bundle_help: str | None = None
                        ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The shared options, handed to the command as ``opts: RecommenderOptions``; ``service``: --backend
    defaults to auto (serve, batch), resolved before the command sees it."""
    bundle = BundleOpt if bundle_help is None else Annotated[Path | None, typer.Option("--bundle", help=bundle_help)]
    options = {"bundle": bundle, "model": ModelOpt, "backend": ServiceBackendOpt if service else BackendOpt,
               "base_url": BaseUrlOpt, "strategy": StrategyOpt, "calibrator": CalibratorOpt, "threads": ThreadsOpt,
               "template_dir": TemplateDirOpt, "component_config": ComponentConfigOpt}

    def build(backend: str | None = None, **values: Any) -> RecommenderOptions:
        return RecommenderOptions(backend=service_backend(backend) if service else backend, **values)

    return with_options({name: (annotation, None) for name, annotation in options.items()}, into="opts", build=build)


ComponentConfigOpt = Annotated[str | None, typer.Option(
    "--component-config", help="With --bundle: JSON {component: {field: value}} for how a fitted component scores "
    "here, e.g. '{\"llm_ranker\": {\"backend\": \"openai\", \"server\": {\"base_url\": URL}}}' for a ranker "
    "served by `llm-rec serve-model --bundle`.")]


def parse_component_config(text: str | None, bundle: Path | None) -> dict[str, Any] | None:
    """``--component-config`` as a dict, or a typed error naming the option."""
    if text is None:
        return None
    if bundle is None:
        raise typer.BadParameter("needs --bundle (it configures a fitted component)", param_hint="--component-config")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--component-config") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise typer.BadParameter('expected {"component": {"field": value}}', param_hint="--component-config")
    return value


def make_recommender(bundle: Path | None = None, **opts: Any) -> Any:
    """A Recommender from a bundle, or from settings alone."""
    from ..recommender import Recommender

    kwargs = recommender_kwargs(**opts)
    return Recommender.load(bundle, **kwargs) if bundle is not None else Recommender(**kwargs)
