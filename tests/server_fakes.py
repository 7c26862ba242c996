"""Backends for server tests: the FakeBackend made slow or blocking, to exercise queueing,
disconnects and graceful shutdown. Only the backend is fake; the server stays real."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from llm_recommender.backends.fake import FakeBackend


class SlowFakeBackend(FakeBackend):
    """Sleeps ``delay_s`` per scoring call, and records how many calls overlapped."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s
        self.gate = gate  # when set, scoring waits for it
        self.entered = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.scored = 0

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.entered.set()
        try:
            if self.gate is not None:
                self.gate.wait(30)
            if self.delay_s:
                time.sleep(self.delay_s)
            return super().next_token_logprobs(prompts, token_ids)
        finally:
            with self._lock:
                self.active -= 1
                self.scored += 1


class Canary:
    """An HTTP listener on 127.0.0.1 that counts every request it receives (and answers a harmless
    JSON schema, so a server that fetches it carries on). A server that never fetches leaves it at 0."""

    def __init__(self) -> None:
        import http.server

        canary = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                canary.hits += 1
                body = b'{"type": "integer"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ThreadedServer:
    """The app under uvicorn with the config ``llm-rec serve`` uses, on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app, settings=None) -> None:
        import uvicorn

        from llm_recommender.server import ServerSettings
        from llm_recommender.server.app import uvicorn_config

        settings = (settings or ServerSettings()).model_copy(update={"host": "127.0.0.1", "port": 0})
        self.server = uvicorn.Server(uvicorn_config(app, settings))
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)


def tiny_bundle(folder):
    """A bundle fitted in about a second on the agent tests' 20-film catalogue with generated viewers,
    so chat sentences reach the agent (popularity + co-occurrence; no text encoder, no LLM)."""
    from llm_recommender.bundle import FitConfig, fit_bundle
    from tests.agent_fixtures import write_genre_viewers

    write_genre_viewers(folder)
    cfg = FitConfig(dataset="generic", data_dir=folder, components=["popularity", "cooccurrence"], valid_users=30,
                    min_gain=-1.0)
    return fit_bundle(cfg, folder / "bundle", log=lambda m: None)
