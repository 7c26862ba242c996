"""Checks done before any route runs: the API key and the body size.

Pure ASGI, so a wrong key is refused before the body is even parsed, and an oversized
body is refused without reading more than the limit. Responses come from the one error
mapping in :mod:`.errors`.
"""

from __future__ import annotations

import hmac
from typing import Any

from .errors import AuthenticationError, PayloadTooLargeError, error_response

PROTECTED_PREFIX = "/v1/"


class RequestGuard:
    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self._key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes

    def _authorized(self, scope: dict) -> bool:
        if self._key is None or not scope.get("path", "").startswith(PROTECTED_PREFIX):
            return True
        header = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            token = b""
        # Constant time: the comparison does not reveal how much of the key matched.
        return hmac.compare_digest(token.strip(), self._key)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await error_response(AuthenticationError(
                "missing or incorrect API key: send 'Authorization: Bearer <key>'", param=None))(scope, receive, send)
            return
        limit = self.max_body_bytes
        too_large = PayloadTooLargeError(f"request body larger than {limit} bytes (max_body_bytes)", param="body")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await error_response(too_large)(scope, receive, send)
                    return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # Read the body here (bounded), then replay it; later receives pass through so the
        # app still learns about client disconnects.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await error_response(too_large)(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
