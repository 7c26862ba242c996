"""OpenAI-compatible request/response models for the server (the subset a recommender needs).

The recommendation itself uses the core protocol (:class:`RankRequest` /
:class:`RankResponse`); these models wrap it in the chat-completions shape.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, field_validator

from ..errors import RecommenderError
from ..protocol import RankRequest, RankResponse, Text, check_text


class _Lenient(BaseModel):
    # OpenAI clients send fields we do not use (temperature, seed, user, ...): accept them.
    model_config = ConfigDict(extra="allow")


class TextPart(_Lenient):
    type: Literal["text"]
    text: Text


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: Text | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_content(cls, v: Any) -> Any:
        # Before the union is tried: its errors would name each member ("content.str").
        for part in v if isinstance(v, list) else [v]:
            check_text(part.get("text") if isinstance(part, dict) else part)
        return v

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class JsonSchemaFormat(_Lenient):
    name: Text = Field(default="response", max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    """A chat request whose last user message (or ``recommendation`` field) is a RankRequest."""

    model: Text = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    recommendation: RankRequest | None = Field(
        default=None, description="the recommendation request; if absent, the last user message's content is parsed as one"
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: int = Field(default=1, ge=1, le=1, description="one ranking per request")
    # Accepted for compatibility; ranking is deterministic, so sampling options do not apply.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    user: Text | None = None

    @field_validator("recommendation", mode="wrap")
    @classmethod
    def _point_inside(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # A typed error from inside RankRequest (a duplicate id) names its field from the request's root.
        try:
            return handler(value)
        except RecommenderError as exc:
            exc.param = f"recommendation.{exc.param}" if exc.param else "recommendation"
            raise


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"
    logprobs: None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None
    recommendation: RankResponse | None = Field(
        default=None, description="the agent's ranked list in the /v1/recommendations shape (conversational turns)")


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llm-recommender"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "failed"]
    model: str | None = None
    detail: str | None = None
