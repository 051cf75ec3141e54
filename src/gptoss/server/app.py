"""The FastAPI application: ``create_app(engine, ...)``.

Everything a route needs lives in :class:`ServerContext` (``app.state.ctx``): the engine, the response
store, the admission counter behind HTTP 429, API keys and defaults. Routes are in ``routes_responses``
and ``routes_chat``; errors are shaped by ``errors``.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gptoss.server.engine import DEFAULT_MAX_QUEUE, Engine
from gptoss.server.errors import APIError, busy, install_error_handlers
from gptoss.server.sessions import ToolSessions
from gptoss.server.store import ResponseStore

DEFAULT_MAX_TOKENS = 4096
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # bytes of one request body


class Admission:
    """At most ``limit`` requests in the server at once (the engine's batch plus the queue)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self.active >= self.limit:
                raise busy()
            self.active += 1

    def release(self) -> None:
        with self._lock:
            self.active = max(0, self.active - 1)


class KeyCheck:
    """Pure ASGI middleware: ``/v1/*`` needs ``Authorization: Bearer KEY`` (``/health`` stays open). Pure ASGI,
    unlike ``@app.middleware``, so client disconnects still reach the routes."""

    def __init__(self, app, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            key = header[7:].strip() if header[:7].lower() == b"bearer " else b""
            if not any(hmac.compare_digest(key, k) for k in self.keys):
                response = APIError("invalid or missing API key (send 'Authorization: Bearer KEY')", status=401,
                                    code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Pure ASGI middleware: a body over ``limit`` bytes (declared or streamed) gets 413, and is never buffered
    whole."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = APIError(f"the request body is larger than {self.limit} bytes", status=413,
                           code="request_too_large").response()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_big(scope, receive, send)
            return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # a streamed body: the route's body read fails with 413
                    raise StarletteHTTPException(413, f"the request body is larger than {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


@dataclass
class ServerContext:
    engine: Engine
    store: ResponseStore
    admission: Admission
    api_keys: tuple[str, ...] = ()
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    max_tool_rounds: int = 8
    sessions: ToolSessions = field(default_factory=ToolSessions)
    started: int = field(default_factory=lambda: int(time.time()))

    def budget(self, prompt_len: int, requested: int | None) -> int:
        """Sampled-token budget: the request's (or the default), clamped to what the context can hold."""
        room = self.engine.max_context - prompt_len
        if room < 1:
            raise APIError(f"the prompt is {prompt_len} tokens; this model holds {self.engine.max_context}",
                           status=400, param="input", code="context_length_exceeded")
        return min(requested or self.default_max_tokens, room)


def create_app(engine: Engine, *, db_path: str | Path | None = None, store: ResponseStore | None = None,
               api_keys: Sequence[str] = (), max_queue: int = DEFAULT_MAX_QUEUE,
               default_max_tokens: int = DEFAULT_MAX_TOKENS, max_tool_rounds: int = 8,
               builtin=None, tool_sessions: ToolSessions | None = None, max_body_bytes: int = DEFAULT_MAX_BODY
               ) -> FastAPI:
    """An app serving ``engine`` (the caller owns it and closes it).

    ``db_path`` (default under the gptoss cache dir) holds stored responses; ``api_keys`` (if any) must be
    presented as ``Authorization: Bearer KEY``; at most ``max_queue`` requests wait behind the ones the engine
    is decoding (its ``max_batch``), more get 429. ``builtin`` (a :class:`gptoss.tools.builtin.BuiltinOptions`)
    enables the browser/python tools requests may use (or pass ``tool_sessions``); ``max_tool_rounds`` bounds the
    tool calls run in a turn; request bodies over ``max_body_bytes`` get 413."""
    from gptoss.harmony.render import harmony_encoding
    from gptoss.server import routes_chat, routes_responses
    from gptoss.tokenizer import get_tokenizer

    # Built now, not by the first requests: on a cache miss every concurrent request would build its own copy.
    get_tokenizer()
    harmony_encoding()
    own_store = store is None
    running = int(getattr(engine, "max_batch", 1))  # requests the engine decodes at once
    ctx = ServerContext(engine, store or ResponseStore(db_path), Admission(running + max_queue), tuple(api_keys),
                        default_max_tokens, max_tool_rounds, tool_sessions or ToolSessions(builtin))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        ctx.sessions.close()
        if own_store:  # the engine (and a store passed in) belong to the caller
            ctx.store.close()

    app = FastAPI(title="gptoss", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.ctx = ctx
    install_error_handlers(app)

    if ctx.api_keys:
        app.add_middleware(KeyCheck, keys=ctx.api_keys)
    app.add_middleware(BodyLimit, limit=max_body_bytes)  # outermost: before the key check reads anything

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "model": ctx.engine.model_id, "active_requests": ctx.admission.active})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [_model_card(ctx)]})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> JSONResponse:
        return JSONResponse(_model_card(ctx))

    app.include_router(routes_responses.router)
    app.include_router(routes_chat.router)
    return app


def _model_card(ctx: ServerContext) -> dict:
    return {"id": ctx.engine.model_id, "object": "model", "created": ctx.started, "owned_by": "gptoss"}
