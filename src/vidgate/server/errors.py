"""Errors as HTTP answers: problem+json (RFC 9457) on the native API, and OpenAI's own
envelope on the OpenAI-compatible routes so existing SDKs raise their usual exceptions."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _openai_style(request: Request) -> bool:
    return request.url.path.startswith("/v1/videos")


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
    if _openai_style(request):
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
    msg = str(err.get("msg", "invalid request")).removeprefix("Value error, ")
    return (f"{field}: {msg}" if field else msg), field


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return render(
            request, exc.status, exc.code, exc.message, param=exc.param, headers=exc.headers
        )

    @app.exception_handler(VidgateError)
    async def vidgate_error(request: Request, exc: VidgateError) -> JSONResponse:
        headers = {}
        retry_after = exc.details.get("retry_after") if exc.details else None
        if retry_after:
            headers["Retry-After"] = str(int(float(retry_after)) or 1)
        extra = {"nearest": exc.details["nearest"]} if "nearest" in (exc.details or {}) else None
        # A provider's own error is our upstream failing (502/503), never a 5xx of ours
        # about the caller's request; the message never carries a secret (errors.py).
        return render(request, exc.http_status, exc.code, exc.message, headers=headers, extra=extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return render(
            request,
            422 if not _openai_style(request) else 400,
            "invalid_request",
            message,
            param=field,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return render(request, exc.status_code, code, str(exc.detail))
