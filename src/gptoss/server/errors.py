"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}`` (SPEC §6.6).

Every failure that reaches a client goes through :class:`APIError` or one of the handlers installed
by :func:`install_error_handlers`; an unexpected exception is logged with its traceback and answered
with a one-line ``server_error`` (never the traceback itself).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gptoss.server")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error answered to the client as ``status`` with the OpenAI error body."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(message, status=400, param=param, code=code)


def not_found(message: str, param: str | None = None) -> APIError:
    return APIError(message, status=404, param=param, code="not_found")


def busy() -> APIError:
    return APIError("the server is busy: too many requests are queued; retry shortly", status=429,
                    code="rate_limit_exceeded")


def _model_key(name: str) -> str:
    name = name.strip().lower()
    return name.removeprefix("openai/").replace(":", "-")


def check_model(model: str | None, ctx) -> None:
    """The request's ``model`` must name what is served: its id, or a gpt-oss alias (``gpt-oss-20b``,
    ``openai/gpt-oss-20b``, ``gpt-oss:20b``...: clients hard-code these). Anything else -> 404."""
    if model is None:
        return
    if not isinstance(model, str) or not model.strip():
        raise bad_request("model must be a non-empty string", param="model")
    key = _model_key(model)
    if key == _model_key(ctx.engine.model_id) or key.startswith("gpt-oss"):
        return
    raise APIError(f"the model {model!r} does not exist; this server serves {ctx.engine.model_id!r}",
                   status=404, param="model", code="model_not_found")


def _loc(loc: tuple) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not isinstance(p, str) or p.startswith(("function-", "union[", "literal[")) or "[" in p:
            continue  # pydantic's union-branch labels are no field names
        else:
            out += ("." if out else "") + p
    return out or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _loc(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg, param = "the request body is not valid JSON", None
        elif param:
            msg = f"{param}: {msg}"
        return APIError(msg, status=400, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        msg = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            msg = f"no such endpoint: {request.method} {request.url.path}"
        return APIError(msg, status=exc.status_code, code=code).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return APIError(f"internal server error ({type(exc).__name__})", status=500,
                        code="server_error").response()
