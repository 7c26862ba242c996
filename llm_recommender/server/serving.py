"""The logic behind the routes: validation, model lookup, ranking through the gate, and
shaping answers as chat completions. Routes stay thin; errors are raised as typed errors
and mapped to responses in one place (:mod:`.errors`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..errors import InputDecodeError, InvalidRequestError, RecommenderError, TooManyCandidatesError
from ..protocol import RankRequest, RankResponse, parse_request
from ..recommender import Recommender
from . import schemas
from .config import ServerSettings
from .errors import ClientDisconnectedError, ModelNotFoundError, NotReadyError
from .gate import InferenceGate
from .openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    DeltaMessage,
    HealthResponse,
    ModelCard,
    ModelList,
    ResponseFormat,
    UsageInfo,
    completion_id,
)
from .prometheus import Metrics

log = logging.getLogger(__name__)

Disconnected = Callable[[], Awaitable[None]]


def _prefixed(exc: RecommenderError, prefix: str) -> RecommenderError:
    """Point an error's ``param`` inside the field the request came in (``messages[2].content``)."""
    exc.param = f"{prefix}.{exc.param}" if exc.param else prefix
    return exc


def content_pieces(response: RankResponse) -> list[str]:
    """The answer JSON in pieces (one per ranked item) whose concatenation is the whole JSON.

    Streaming sends the pieces as chunks; the non-streaming answer is their join, so both
    carry byte-identical content.
    """
    data = response.model_dump(mode="json")
    items = data.pop("items")
    rest = json.dumps(data, ensure_ascii=False)
    pieces = ['{"items": [']
    pieces += [(", " if k else "") + json.dumps(item, ensure_ascii=False) for k, item in enumerate(items)]
    pieces.append("], " + rest[1:])
    return pieces


def usage_of(response: RankResponse) -> UsageInfo:
    u = response.usage
    return UsageInfo(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens)


class RecommenderServing:
    """Owns the recommender (loaded in the background), the gate and the metrics."""

    def __init__(self, settings: ServerSettings, metrics: Metrics,
                 load: Callable[[], Recommender] | Recommender,
                 on_load_failure: Callable[[BaseException], None] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._load = load
        self._on_load_failure = on_load_failure
        self.recommender: Recommender | None = load if isinstance(load, Recommender) else None
        self.load_error: str | None = None
        self.gate: InferenceGate | None = None
        self.created = int(time.time())
        self._load_task: asyncio.Future[Any] | None = None

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Create the gate on the serving loop and start loading the model in the background."""
        self.gate = InferenceGate(self.settings.max_concurrency, self.settings.max_queue,
                                  self.settings.retry_after_s, on_change=self._gate_changed,
                                  max_batch=self.settings.max_batch, batch_wait_ms=self.settings.batch_wait_ms,
                                  on_batch=self.metrics.batch_size.observe)
        if self.recommender is not None:
            self.metrics.model_ready.set(1)
            return
        self._load_task = asyncio.ensure_future(asyncio.to_thread(self._load_model))

    def _load_model(self) -> None:
        start = time.perf_counter()
        try:
            rec = self._load()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported through /health and the callback
            self.load_error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.error("model failed to load: %s", self.load_error)
            if self._on_load_failure:
                self._on_load_failure(exc)
            return
        if self.settings.max_concurrency > 1 and rec.backend_name == "transformers":
            log.warning("max_concurrency=%d with the in-process transformers backend: torch models are not "
                        "thread-safe; use 1, or the openai/vllm backend for concurrent requests",
                        self.settings.max_concurrency)
        self.catalogue = self._catalogue(rec)
        self.recommender = rec
        self.metrics.model_ready.set(1)
        log.info("model %s ready (%s backend) in %.1f s", rec.model_name, rec.backend_name, time.perf_counter() - start)

    @staticmethod
    def _catalogue(rec: Recommender) -> Any:
        """The chat agent's title index over the bundle's catalogue (popular titles win close ties)."""
        if rec.bundle is None:
            return None
        try:
            from ..agent import CatalogueIndex
        except ImportError:  # the [agent] extra is not installed: JSON chat requests only
            log.warning("chat in sentences needs the [agent] extra (rapidfuzz); JSON requests still work")
            return None
        return CatalogueIndex.from_bundle(rec.bundle)

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            await asyncio.wait({self._load_task}, timeout=60)
        if self.gate is not None:
            await asyncio.to_thread(self.gate.close)

    def _gate_changed(self, gate: InferenceGate) -> None:
        self.metrics.queue_depth.set(gate.waiting)
        self.metrics.running.set(gate.running)

    # ---- state ----------------------------------------------------------------------
    def health(self) -> tuple[int, HealthResponse]:
        if self.recommender is not None:
            return 200, HealthResponse(status="ok", model=self.model_id)
        if self.load_error is not None:
            return 503, HealthResponse(status="failed", detail=self.load_error)
        return 503, HealthResponse(status="loading")

    def _ready(self) -> Recommender:
        if self.recommender is None:
            if self.load_error is not None:
                raise NotReadyError(f"the model failed to load: {self.load_error}", retry_after=None)
            raise NotReadyError("the model is still loading; retry shortly (GET /health says when it is ready)")
        return self.recommender

    @property
    def model_id(self) -> str:
        if self.settings.served_model_name:
            return self.settings.served_model_name
        return self._ready().model_name

    def check_model(self, name: str) -> None:
        if name != self.model_id:
            raise ModelNotFoundError(
                f"model {name!r} does not exist on this server; it serves {self.model_id!r} (GET /v1/models)", param="model"
            )

    def list_models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_id, created=self.created)])

    def get_model(self, name: str) -> ModelCard:
        self.check_model(name)
        return ModelCard(id=self.model_id, created=self.created)

    # ---- ranking ----------------------------------------------------------------------
    def check_limits(self, request: RankRequest, rec: Recommender, prefix: str = "") -> None:
        """This server's own limits on a parsed request, before it takes a queue slot (parsing happened at the door)."""
        try:
            if not request.candidates and rec.bundle is None:
                raise InvalidRequestError("candidates must not be empty (a server started with --bundle retrieves "
                                          "them from its catalogue)", param="candidates")
            if len(request.candidates) > self.settings.max_candidates:
                raise TooManyCandidatesError(
                    f"{len(request.candidates)} candidates; this server accepts at most {self.settings.max_candidates} "
                    "(max_candidates)", param="candidates")
            if request.strategy is not None:
                rec.check_strategy(request.strategy)
        except RecommenderError as exc:
            raise _prefixed(exc, prefix.rstrip(".")) if prefix else exc from None

    async def recommend(self, request: RankRequest, disconnected: Disconnected | None = None,
                        prefix: str = "") -> RankResponse:
        rec = self._ready()
        self.check_limits(request, rec, prefix)
        assert self.gate is not None
        try:
            return await self.gate.run_batched(self._rank_batch, (rec, request), disconnected=disconnected)
        except ClientDisconnectedError:
            self.metrics.cancelled.inc()
            raise

    def _rank_batch(self, items: list[tuple[Recommender, RankRequest]]) -> list[RankResponse | Exception]:
        """One rank_many call for the gathered requests; each gets its own response (or error)."""
        rec = items[0][0]
        requests = [req for _, req in items]
        start = time.perf_counter()
        try:
            try:
                return list(rec.rank_many(requests))
            except Exception:
                if len(requests) == 1:
                    raise
            results: list[RankResponse | Exception] = []
            for req in requests:
                try:
                    results.append(rec.rank_request(req))
                except Exception as exc:  # noqa: BLE001 - this request's own error
                    results.append(exc)
            return results
        finally:
            self.metrics.inference.observe(time.perf_counter() - start)

    # ---- chat completions -------------------------------------------------------------
    def extract(self, chat: ChatCompletionRequest) -> tuple[RankRequest, str]:
        """The parsed recommendation request: the ``recommendation`` field, else the last user message's JSON;
        with the prefix that points an error inside it."""
        if chat.recommendation is not None:
            return chat.recommendation, "recommendation."
        for i in range(len(chat.messages) - 1, -1, -1):
            if chat.messages[i].role == "user":
                break
        else:
            raise InvalidRequestError(
                "no user message: send the recommendation request as JSON in the last user message, "
                "or in the 'recommendation' field", param="messages")
        param = f"messages[{i}].content"
        text = chat.messages[i].text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputDecodeError(
                f"the last user message must be a JSON recommendation request "
                f"({{history, candidates, top_k, reasons, strategy}}): {exc.msg} at line {exc.lineno} column {exc.colno}",
                param=param) from None
        if not isinstance(data, dict):
            raise InvalidRequestError("the last user message must be a JSON object", param=param)
        try:
            return parse_request(data), param + "."
        except RecommenderError as exc:
            raise _prefixed(exc, param) from None

    @staticmethod
    async def _response_schema(fmt: ResponseFormat | None) -> dict[str, Any] | bool | None:
        """The JSON schema the client asked the content to follow, checked before ranking: data only,
        bounded, never fetched (:mod:`.schemas`)."""
        if fmt is None or fmt.type != "json_schema":
            return None
        if fmt.json_schema is None:
            raise InvalidRequestError("response_format.type 'json_schema' needs a json_schema", param="response_format.json_schema")
        schema = fmt.json_schema.schema_
        if schema is None:
            return None
        return await schemas.check_schema(schema)

    def _conversational(self, chat: ChatCompletionRequest) -> bool:
        """A sentence for the agent, not a JSON request: no ``recommendation`` field, no JSON last message."""
        if chat.recommendation is not None or getattr(self, "catalogue", None) is None:
            return False
        users = [m for m in chat.messages if m.role == "user"]
        return bool(users) and not users[-1].text().lstrip().startswith(("{", "["))

    async def agent_chat(self, chat: ChatCompletionRequest, disconnected: Disconnected | None
                         ) -> ChatCompletionResponse | AsyncIterator[str]:
        """A sentence for the agent. Non-streaming: one ranking with reasons. Streaming: the ranked list
        first, then the reasons as a second gated call (the ranking is deterministic: same items)."""
        from ..agent import chat_turn
        from ..agent.agent import checked
        from ..agent.answer import tail_pieces

        rec = self._ready()
        assert self.gate is not None
        asked: dict[str, Any] = {}

        def rank_fn(history: Any, pool: Any, k: int) -> RankResponse:
            asked.update(history=history, pool=pool, k=k)
            return rec.rank_pool(history, pool, k, reasons=not chat.stream)

        def turn() -> tuple[str, Any]:
            start = time.perf_counter()
            try:
                return chat_turn(chat.messages, self.catalogue, rank_fn)
            finally:
                self.metrics.inference.observe(time.perf_counter() - start)

        text, answer = await self.gate.run(turn, disconnected=disconnected)
        response = answer.recommendation
        usage = usage_of(response) if response is not None else UsageInfo(prompt_tokens=0, completion_tokens=0,
                                                                           total_tokens=0)
        if not chat.stream:
            return ChatCompletionResponse(model=self.model_id, choices=[ChatChoice(message=AssistantMessage(content=text))],
                                          usage=usage, recommendation=response)
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        head = answer.list_pieces if response is not None else len(answer.pieces)
        spent = [usage]

        async def pieces() -> AsyncIterator[str]:
            for piece in answer.pieces[:head]:
                yield piece
            tail = answer.pieces[head:]
            if response is not None:
                def explain() -> RankResponse:
                    a = asked
                    return checked(rec.rank_pool(a["history"], a["pool"], a["k"], reasons=True), a["pool"], a["k"])

                try:
                    explained = await self.gate.run(explain, disconnected=disconnected)  # type: ignore[arg-type]
                except RecommenderError as exc:  # the list is out already: answer without reasons, say why in the log
                    log.warning("chat stream: reasons failed after the list was sent: %s", exc)
                else:
                    if [i.id for i in explained.items] == [i.id for i in response.items]:
                        tail = tail_pieces(answer.plan, explained)
                        spent.append(usage_of(explained))
            for piece in tail:
                yield piece

        def total() -> UsageInfo:
            return UsageInfo(**{k: sum(getattr(u, k) for u in spent)
                                for k in ("prompt_tokens", "completion_tokens", "total_tokens")})

        return self._stream(pieces(), total, include_usage)

    async def chat(self, chat: ChatCompletionRequest, disconnected: Disconnected | None = None
                   ) -> ChatCompletionResponse | AsyncIterator[str]:
        self._ready()
        self.check_model(chat.model)
        schema = await self._response_schema(chat.response_format)
        if schema is None and self._conversational(chat):
            return await self.agent_chat(chat, disconnected)
        request, prefix = self.extract(chat)
        response = await self.recommend(request, disconnected, prefix=prefix)
        pieces = content_pieces(response)
        if schema is not None:
            await schemas.validate_answer(schema, "".join(pieces))
        usage = usage_of(response)
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return self._stream(pieces, usage, include_usage)
        return ChatCompletionResponse(
            model=self.model_id,
            choices=[ChatChoice(message=AssistantMessage(content="".join(pieces)))],
            usage=usage,
        )

    async def _stream(self, pieces: list[str] | AsyncIterator[str], usage: UsageInfo | Callable[[], UsageInfo],
                      include_usage: bool) -> AsyncIterator[str]:
        """SSE chunks; ``pieces`` may arrive over time (the list, then the reasons), ``usage`` is read at the end."""
        base = ChatCompletionChunk(id=completion_id(), created=int(time.time()), model=self.model_id, choices=[])

        def event(choices: list[ChunkChoice], with_usage: UsageInfo | None = None) -> str:
            chunk = base.model_copy(update={"choices": choices, "usage": with_usage})
            data = chunk.model_dump(mode="json")
            for c in data["choices"]:
                c["delta"] = {k: v for k, v in c["delta"].items() if v is not None}
            if not include_usage:
                data.pop("usage")
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        yield event([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
        if isinstance(pieces, list):
            for piece in pieces:
                yield event([ChunkChoice(delta=DeltaMessage(content=piece))])
        else:
            async for piece in pieces:
                yield event([ChunkChoice(delta=DeltaMessage(content=piece))])
        yield event([ChunkChoice(delta=DeltaMessage(), finish_reason="stop")])
        if include_usage:
            yield event([], usage() if callable(usage) else usage)
        yield "data: [DONE]\n\n"
