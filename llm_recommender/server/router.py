"""Thin routes: parse, hand to :class:`RecommenderServing`, return. No logic lives here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..protocol import RankRequest, RankResponse
from .openai_protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    HealthResponse,
    ModelCard,
    ModelList,
)
from .serving import RecommenderServing

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "invalid request; `param` names the field"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "unknown model"},
    413: {"model": ErrorResponse, "description": "request body too large"},
    429: {"model": ErrorResponse, "description": "queue full; see Retry-After"},
    503: {"model": ErrorResponse, "description": "model not loaded yet"},
}


def _serving(request: Request) -> RecommenderServing:
    return request.app.state.serving


def _disconnected(request: Request) -> Callable[[], Awaitable[None]]:
    """Resolves when the client goes away (the body is already read, so only a disconnect is left)."""

    async def wait() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    return wait


@router.get("/v1/models", response_model=ModelList, responses=_ERRORS, tags=["openai"])
async def list_models(request: Request) -> ModelList:
    return _serving(request).list_models()


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS, tags=["openai"])
async def get_model(model_id: str, request: Request) -> ModelCard:
    return _serving(request).get_model(model_id)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "chat.completion, or SSE chunks with stream=true"},
               **_ERRORS},
    tags=["openai"],
)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    """Rank with a chat request: the JSON request is the last user message or the `recommendation` field;
    the answer's message content is the RankResponse JSON."""
    result = await _serving(request).chat(body, _disconnected(request))
    if isinstance(result, ChatCompletionResponse):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/v1/recommendations", response_model=RankResponse, responses=_ERRORS, tags=["native"])
async def recommendations(body: RankRequest, request: Request) -> RankResponse:
    """Rank the candidates for the user of `body` (the core protocol, no chat wrapping)."""
    return await _serving(request).recommend(body, _disconnected(request))


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}}, tags=["ops"])
async def health(request: Request) -> JSONResponse:
    """200 once the model is loaded; 503 while loading or after a failed load."""
    status, body = _serving(request).health()
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


@router.get("/metrics", response_class=Response, tags=["ops"],
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    m = _serving(request).metrics
    return Response(m.render(), media_type=m.content_type)
