"""``llm-rec serve-model``: run vLLM's OpenAI-compatible server for a model on this machine.

Then, from a second terminal or process:
``Recommender(backend="openai", base_url="http://127.0.0.1:8000/v1")``.

With ``--bundle B`` it serves the weights of B's trained ``llm_ranker`` (its fine-tuned folder, or the LoRA
adapter merged into the base) with prompt embeddings on, and the bundle scores through it with
``--component-config '{"llm_ranker": {"backend": "openai", "server": {"base_url": URL}}}'``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import ModelOpt

LLM_RANKER = "llm_ranker"


@app.command("serve-model")
def serve_model(
    model: ModelOpt = None,
    bundle: Annotated[Path | None, typer.Option(help="Serve this fitted bundle's trained llm_ranker (its tuned weights, prompt embeddings on) instead of --model.", exists=True, file_okay=False)] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you add an API key and a firewall.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: a free one).")] = 8000,
    served_model_name: Annotated[str | None, typer.Option(help="Name clients ask for (default: the --model value).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16 (default: bf16 on CPUs with AMX or AVX512-BF16, like the transformers backend).")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Context length to reserve (default: 4096, capped at the model's).")] = None,
    kv_cache_gib: Annotated[float | None, typer.Option(help="CPU build: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE) (default: 1).")] = None,
    api_key: Annotated[str | None, typer.Option(help="Require this bearer token from clients.", envvar="LLM_REC_SERVE_API_KEY")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /health.")] = 600.0,
    vllm_arg: Annotated[list[str] | None, typer.Option("--vllm-arg", help="Extra argument passed to vLLM as is (repeatable), e.g. --vllm-arg=--max-num-seqs=64.")] = None,
) -> None:
    """Start vLLM's OpenAI-compatible server for the model (default: the embedded SmolLM2), wait until it is healthy, print its URL; Ctrl-C or SIGTERM stops it."""
    from ..backends.configs import VLLMConfig
    from ..backends.vllm_server import VLLMServer
    from ..recommender import component_config
    from ..settings import Settings

    if bundle is not None and model is not None:
        raise typer.BadParameter("give --model or --bundle, not both", param_hint="--bundle")
    extra = list(vllm_arg or [])
    if bundle is not None:
        model = str(_ranker_weights(bundle))
        extra.append("--enable-prompt-embeds")  # the ranker's item tokens arrive as input embeddings
        served_model_name = served_model_name or LLM_RANKER
    overrides = {k: v for k, v in {"model": model, "dtype": dtype, "vllm_max_model_len": max_model_len,
                                   "vllm_kv_cache_gib": kv_cache_gib}.items() if v is not None}
    settings = Settings(**overrides)
    if api_key:
        extra += ["--api-key", api_key]
    config = component_config(settings, "vllm")
    assert isinstance(config, VLLMConfig)
    server = VLLMServer(config, host=host, port=port or None, served_model_name=served_model_name, extra_args=extra)

    stopping: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    typer.secho(f"starting vLLM for {settings.model} ({server.model_path}) on {host}:{server.port}; "
                f"log: see below once started", err=True)
    try:
        server.start(wait=False)
        typer.secho(f"log: {server.log_path}", err=True)
        server.wait_ready(timeout)
        name = served_model_name or settings.model
        typer.echo(server.url)
        if bundle is not None:
            use = json.dumps({LLM_RANKER: {"backend": "openai", "server": {"base_url": server.url}}})
            hint = (f"  the bundle's ranker through it: llm-rec serve --bundle {bundle} --component-config '{use}'\n"
                    f"  (or llm-rec rank REQUEST.json --bundle {bundle} --component-config '{use}'; the fused ranking "
                    "calls the ranker only where the fit kept it, --strategy llm_ranker ranks with it alone)\n")
        else:
            hint = (f"  from Python: Recommender(backend=\"openai\", base_url=\"{server.url}\", model=\"{settings.model}\")\n"
                    f"  from the CLI: llm-rec rank REQUEST.json --backend openai --base-url {server.url}\n")
        typer.secho(f"ready: model {name!r} at {server.url}\n{hint}Ctrl-C stops the server.", err=True)
        while server.process is not None and server.process.poll() is None:
            time.sleep(1.0)
        typer.secho(f"the vLLM server exited on its own; log: {server.log_path}\n{server.log_tail(2000)}", err=True, fg="red")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        code = server.stop()
        signal.signal(signal.SIGTERM, previous)
        if code is not None:
            typer.secho(f"vLLM server stopped (exit code {code})", err=True)



def _ranker_weights(bundle: Path) -> Path:
    """The model folder of ``bundle``'s trained llm_ranker, as the engines load it."""
    from ..bundle import Bundle
    from ..errors import InvalidRequestError
    from ..model_store import DEFAULT_MODEL
    from ..ranker.component import LLMRankerComponent
    from ..ranker.training import servable_folder

    comp = Bundle.load(bundle).components.get(LLM_RANKER)
    if not isinstance(comp, LLMRankerComponent):
        raise InvalidRequestError(f"the bundle {bundle} has no {LLM_RANKER} component to serve; fit one "
                                  f"(--components ...,{LLM_RANKER}) or serve the base model with --model", param="bundle")
    return servable_folder(comp.model_dir, comp.config.model or DEFAULT_MODEL)
