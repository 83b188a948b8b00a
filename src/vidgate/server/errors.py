"""Errors as HTTP answers: problem+json (RFC 9457) on the native API, and OpenAI's own
envelope on the OpenAI-compatible routes so existing SDKs raise their usual exceptions."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate.errors import VidgateError

_OPENAI_TYPES = {
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An HTTP error raised by a route: status, machine code, one-line message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}


def openai_style(request: Request) -> bool:
    """Whether errors on this path use OpenAI's envelope (the OpenAI-compatible routes)."""
    return request.url.path.startswith("/v1/videos")


def media_type(request: Request, status: int) -> str:
    if status >= 400 and not openai_style(request):
        return "application/problem+json"
    return "application/json"


def render(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    if openai_style(request):
        body: dict[str, Any] = {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(
                    status, "server_error" if status >= 500 else "invalid_request_error"
                ),
                "param": param,
                "code": code,
            }
        }
        return JSONResponse(body, status_code=status, headers=headers)
    problem: dict[str, Any] = {
        "type": f"https://vidgate.dev/errors/{code}",
        "title": code,
        "status": status,
        "detail": message,
        "code": code,
    }
    if param:
        problem["param"] = param
    if extra:
        problem.update(extra)
    return JSONResponse(
        problem, status_code=status, headers=headers, media_type="application/problem+json"
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    if field is None and tuple(err.get("loc", ())) == ("body",):
        # the body as a whole: pydantic's words ("Input should be a valid dictionary or
        # object to extract fields from") do not say what to send instead
        if err.get("type") == "missing":
            return "the request body is empty; send a JSON object (application/json)", None
        return "the request body must be a JSON object, sent as application/json", None
    msg = str(err.get("msg", "invalid request")).removeprefix("Value error, ")
    return (f"{field}: {msg}" if field else msg), field


def render_exception(request: Request, exc: ApiError | VidgateError) -> JSONResponse:
    """The answer for an error a route raised (also what an Idempotency-Key replays)."""
    if isinstance(exc, ApiError):
        return render(
            request, exc.status, exc.code, exc.message, param=exc.param, headers=exc.headers
        )
    headers = {}
    retry_after = exc.details.get("retry_after") if exc.details else None
    if retry_after:
        headers["Retry-After"] = str(int(float(retry_after)) or 1)
    extra = {"nearest": exc.details["nearest"]} if "nearest" in (exc.details or {}) else None
    # A provider's own error is our upstream failing (502/503), never a 5xx of ours about
    # the caller's request; the message never carries a secret (errors.py).
    status = exc.http_status
    if status == 422 and openai_style(request):
        status = 400  # OpenAI answers an invalid request with 400 (its SDKs: BadRequestError)
    return render(request, status, exc.code, exc.message, headers=headers, extra=extra)


#: the largest request body the service reads (multipart images included)
MAX_REQUEST_BYTES = 32 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: a body past ``max_bytes`` is answered 413 the moment it passes the
    limit — also when it comes chunked, without a Content-Length (which a check of the
    header alone lets through, and which the framework would otherwise buffer whole).

    The 413 goes out at once; the application then sees a disconnected client, and
    whatever it answers to that is dropped."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        refused = False
        started = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not started:
                    refused = True
                    response = render(
                        Request(scope),
                        413,
                        "body_too_large",
                        f"request bodies are limited to {self.max_bytes} bytes",
                        headers={"Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out already
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, guarded)


def install(app: FastAPI) -> None:
    """Error answers for the whole app: exception handlers and the body-size limit."""
    app.add_middleware(BodyLimit, max_bytes=MAX_REQUEST_BYTES)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return render_exception(request, exc)

    @app.exception_handler(VidgateError)
    async def vidgate_error(request: Request, exc: VidgateError) -> JSONResponse:
        return render_exception(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return render(
            request,
            422 if not openai_style(request) else 400,
            "invalid_request",
            message,
            param=field,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return render(request, exc.status_code, code, str(exc.detail), headers=headers)
