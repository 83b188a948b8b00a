"""The one error tree of vidgate.

Errors are split by what the caller should do about them (design.md §5):

* :class:`RetryableError` — the same request may succeed later or on another offering
  (rate limited, provider unavailable, timed out).
* :class:`FinalError` — retrying the same request cannot help (invalid request, capability
  mismatch, content rejected, auth failed, quota exhausted, no route, budget exceeded).

Every error carries the provider, the provider's request id and the HTTP status code where
they are known, so a user can quote them to the provider's support. Secrets never go in here.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VidgateError(Exception):
    """Base of every error vidgate raises on purpose."""

    code: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False
    #: HTTP status the gateway service answers with for this error.
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id
        self.status_code = status_code
        self.details = details or {}

    def __str__(self) -> str:
        extra = []
        if self.provider:
            extra.append(f"provider={self.provider}")
        if self.status_code:
            extra.append(f"status={self.status_code}")
        if self.request_id:
            extra.append(f"request_id={self.request_id}")
        return self.message + (f" ({', '.join(extra)})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, stored on jobs and attempts."""
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "provider": self.provider,
            "request_id": self.request_id,
            "status_code": self.status_code,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VidgateError:
        """Rebuild a stored error as the right class (unknown codes become VidgateError)."""
        klass = _BY_CODE.get(str(data.get("code")), VidgateError)
        err = klass.__new__(klass)
        VidgateError.__init__(
            err,
            str(data.get("message", "")),
            provider=data.get("provider"),
            request_id=data.get("request_id"),
            status_code=data.get("status_code"),
            details=data.get("details") or {},
        )
        if isinstance(err, RateLimited):
            err.retry_after = (data.get("details") or {}).get("retry_after")
        return err


# --- retryable -------------------------------------------------------------------------


class RetryableError(VidgateError):
    """The request may succeed later, or on another offering."""

    code = "retryable"
    retryable = True
    http_status = 503


class RateLimited(RetryableError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        if retry_after is not None:
            self.details.setdefault("retry_after", retry_after)


class ProviderUnavailable(RetryableError):
    code = "provider_unavailable"
    http_status = 503


class ProviderTimeout(RetryableError):
    code = "provider_timeout"
    http_status = 504


# --- final -------------------------------------------------------------------------------


class FinalError(VidgateError):
    """Retrying the same request cannot help."""

    code = "final"
    retryable = False
    http_status = 400


class InvalidRequest(FinalError):
    code = "invalid_request"
    http_status = 422


class CapabilityMismatch(FinalError):
    """The offering cannot do what the request asks (checked before any network call)."""

    code = "capability_mismatch"
    http_status = 422


class ContentRejected(FinalError):
    """The provider's moderation refused the prompt or an input, or filtered the output."""

    code = "content_rejected"
    http_status = 422


class AuthFailed(FinalError):
    code = "auth_failed"
    http_status = 502  # our credential to the provider failed: not the caller's fault


class QuotaExhausted(FinalError):
    code = "quota_exhausted"
    http_status = 402


class NotFound(FinalError):
    code = "not_found"
    http_status = 404


class NoRoute(FinalError):
    """No offering satisfies the request; ``details['nearest']`` lists the nearest misses."""

    code = "no_route"
    http_status = 422


class BudgetExceeded(FinalError):
    code = "budget_exceeded"
    http_status = 402


class ProviderProtocolError(FinalError):
    """The provider answered something we do not understand (e.g. an unknown status).

    Final because guessing (treating an unknown status as "queued") is how jobs hang forever.
    """

    code = "provider_protocol_error"
    http_status = 502


class AmbiguousSubmission(FinalError):
    """A create call was sent but its outcome is unknown (timeout or dropped response).

    Never retried blindly: the job is reconciled or parked as ``needs_reconciliation``.
    """

    code = "ambiguous_submission"
    http_status = 502


class ConfigError(FinalError):
    """A catalog, config or settings file is invalid."""

    code = "config_error"
    http_status = 500


def _all_subclasses(cls: type[VidgateError]) -> list[type[VidgateError]]:
    out: list[type[VidgateError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[str, type[VidgateError]] = {VidgateError.code: VidgateError}
_BY_CODE.update({c.code: c for c in _all_subclasses(VidgateError)})
