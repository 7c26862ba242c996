"""Server settings: limits and access control. ``LLM_REC_*`` environment variables apply.

Defaults (also in docs/serving.md):

=====================  =========  ==================================================
setting                default    meaning
=====================  =========  ==================================================
api_key                None       Bearer token required on /v1/* (env LLM_REC_SERVER_API_KEY)
served_model_name      None       model id clients send (default: the model's name)
max_concurrency        1          rankings running at once (torch models: keep 1)
max_queue              64         requests waiting beyond those; more get 429
max_batch              8          queued requests ranked together in one rank_many call
batch_wait_ms          5          a free slot waits this long for more requests to batch
max_body_bytes         1 MiB      larger request bodies get 413
max_candidates         100        more candidates get 400 (protocol hard limit: 200)
retry_after_s          1          minimum Retry-After sent with 429
graceful_timeout_s     30         on SIGTERM, wait this long for in-flight requests
=====================  =========  ==================================================
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..protocol import MAX_CANDIDATES
from ..settings import secret_from_env


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_REC_", extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):  # type: ignore[no-untyped-def, override]
        # Its own env name, distinct from the openai backend's LLM_REC_UPSTREAM_API_KEY.
        return init_settings, secret_from_env(env_settings, "api_key", "LLM_REC_SERVER_API_KEY"), dotenv_settings, file_secret_settings

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # SecretStr: never shown by repr/logging of the settings.
    api_key: SecretStr | None = Field(default=None, description="Bearer token required on /v1/*")
    served_model_name: str | None = Field(default=None, description="model id clients send (default: the model's name)")
    max_concurrency: int = Field(default=1, ge=1, description="rankings running at once; torch models are not thread-safe")
    max_queue: int = Field(default=64, ge=0, description="requests waiting for a slot; beyond it: 429")
    # Batching shares the model's forward passes between users; 1 ranks requests one at a time.
    max_batch: int = Field(default=8, ge=1, description="queued requests ranked together in one rank_many call")
    batch_wait_ms: float = Field(default=5.0, ge=0, le=10_000, description="a free slot waits this long for more requests to batch")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="request bodies above this get 413")
    max_candidates: int = Field(default=100, ge=1, le=MAX_CANDIDATES, description="candidates per request; more get 400")
    retry_after_s: int = Field(default=1, ge=1, description="minimum Retry-After (seconds) sent with 429")
    graceful_timeout_s: float = Field(default=30.0, ge=0, description="SIGTERM: wait this long for in-flight requests")
    log_level: str = "info"
