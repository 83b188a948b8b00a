"""The provider contract and its registry.

A provider adapter speaks one wire protocol. It does four things — submit, poll, fetch,
cancel — and nothing else: retries, fallback, budgets, polling pace and storage live outside
it (design.md §5). Adding a provider is one new module in this package that subclasses
:class:`Provider`; the registry discovers it, and third-party packages can add adapters
through the ``vidgate.providers`` entry-point group.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AuthFailed,
    ConfigError,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    VidgateError,
)
from vidgate.providers.lookup import Listing, Page
from vidgate.providers.options import OptionField
from vidgate.settings import Credentials
from vidgate.types import VideoRequest


class ProviderJob(BaseModel):
    """Where a remote job lives. Frozen and JSON-serialisable so it can be stored the moment
    the create call returns, and every follow-up call (status, content, cancel) goes to
    exactly the endpoint, credential and region that created it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: str
    offering_id: str
    remote_id: str
    base_url: str
    #: names of the environment variables holding the credential (never the secret itself)
    credential_ref: tuple[str, ...] = ()
    region: str | None = None
    #: protocol-specific locators the provider returned (e.g. fal's status/response URLs)
    extra: dict[str, str] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)


class RemoteState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (RemoteState.SUCCEEDED, RemoteState.FAILED, RemoteState.CANCELED)


@dataclass(frozen=True)
class ReportedCost:
    """What a provider says a task cost, in the provider's own unit, as it reported it.

    ``unit`` is ``usd``, ``credits`` (Runway's ``cost.credits``), ``tokens`` (BytePlus
    ``usage.completion_tokens``) or ``hardware_seconds`` (Replicate ``metrics.predict_time``);
    ``field`` names where it was read. The offering's catalog rates turn it into dollars
    (:meth:`usd`); where the offering has no rate for the unit it stays informational.
    """

    amount: float
    unit: Literal["usd", "credits", "tokens", "hardware_seconds"]
    field: str

    def usd(self, offering: Offering) -> float | None:
        rate = {
            "usd": 1.0,
            "credits": offering.usd_per_credit,
            "tokens": (
                offering.usd_per_million_tokens / 1e6
                if offering.usd_per_million_tokens is not None
                else None
            ),
            "hardware_seconds": offering.usd_per_hardware_second,
        }[self.unit]
        return None if rate is None else round(self.amount * rate, 6)


@dataclass(frozen=True)
class RemoteStatus:
    state: RemoteState
    #: the provider's own status string, kept for explanations and debugging
    raw: str
    progress: float | None = None  # 0..1
    error: VidgateError | None = None
    #: a pacing hint from the provider (e.g. ``openai-poll-after-ms``), in seconds
    poll_after_s: float | None = None
    #: what the provider reports this task cost (on a terminal status), where it reports it
    reported_cost: ReportedCost | None = None


@dataclass(frozen=True)
class RemoteAsset:
    """A downloadable output. ``headers`` carry whatever auth the download needs; they are
    built at fetch time and never persisted."""

    url: str
    kind: str = "video"
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def status_table(table: Mapping[str, RemoteState], raw: str, provider: str) -> RemoteState:
    """Map a provider status string through an explicit table; unknown strings are errors."""
    from vidgate.errors import ProviderProtocolError

    try:
        return table[raw]
    except KeyError:
        raise ProviderProtocolError(
            f"unknown status {raw!r} from {provider}; known: {', '.join(sorted(table))}",
            provider=provider,
        ) from None


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Read ``retry-after-ms`` (OpenAI-style) or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    request_id: str | None,
    retry_after: float | None = None,
) -> VidgateError:
    """The default HTTP-status → error mapping. Adapters call it after reading their own
    error bodies, and first pick out what only they can recognise (moderation, quota)."""
    kw: dict[str, Any] = {"provider": provider, "request_id": request_id, "status_code": status}
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **kw)
    if status in (401, 403):
        return AuthFailed(message, **kw)
    if status == 402:
        return QuotaExhausted(message, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if status in (408,) or status >= 500:
        return ProviderUnavailable(message, **kw)
    return InvalidRequest(message, **kw)


class Provider(ABC):
    """Base class of every adapter. Dependencies are injected so tests can pass fakes."""

    #: registry key; offerings name it in their ``protocol`` field
    protocol: ClassVar[str]
    default_base_url: ClassVar[str]
    supports_cancel: ClassVar[bool] = False
    #: the provider can look a job up by the idempotency key we sent (see :meth:`find`)
    can_find: ClassVar[bool] = False
    #: which ``provider_options`` fields pass through and what each means (providers/options.py
    #: holds the one rule that reads it); undeclared fields are refused
    option_fields: ClassVar[Mapping[str, OptionField]] = {}

    # -- inbound callbacks: declared as data; jobs/callbacks.py holds the mechanisms ------
    #: how the provider's callbacks are authenticated: "ed25519-jwks", "standard-webhooks",
    #: "token" (unsigned: our URL carries a secret token), or None (no callbacks)
    callback_scheme: ClassVar[str | None] = None
    #: where the remote job id sits in a callback body (dotted paths, first found wins)
    callback_id_fields: ClassVar[tuple[str, ...]] = ("id",)
    #: ed25519-jwks: the provider's public keys, and the headers carrying the request id,
    #: user id, timestamp and hex signature (in that order)
    callback_jwks_url: ClassVar[str | None] = None
    callback_signature_headers: ClassVar[tuple[str, str, str, str] | None] = None
    #: standard-webhooks: the environment variable holding the signing secret
    callback_secret_env: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        credentials: Credentials,
        base_url: str | None = None,
    ) -> None:
        self.client = client
        self.credentials = credentials
        self.base_url = (base_url or self.default_base_url).rstrip("/")

    def check(self, request: VideoRequest, offering: Offering) -> None:  # noqa: B027
        """Reject what this protocol cannot express, before any network call. The router
        already checked the offering's declared capabilities; this catches wire limits."""

    @abstractmethod
    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        """Send the create call once. Never retried here or by the HTTP layer."""

    @abstractmethod
    async def poll(self, job: ProviderJob) -> RemoteStatus: ...

    @abstractmethod
    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]: ...

    async def cancel(self, job: ProviderJob) -> None:
        raise InvalidRequest(f"{self.protocol} cannot cancel a running job", provider=self.protocol)

    # -- reconciliation of an ambiguous create (crash or timeout after sending) -------------

    def resubmit_is_idempotent(self, offering: Offering) -> bool:
        """True when sending the same create again with the same idempotency key returns
        the job the first one made (the server honours the key), so it is safe."""
        return False

    async def find(
        self, request: VideoRequest, offering: Offering, idempotency_key: str
    ) -> ProviderJob | None:
        """The remote job created with this idempotency key, or None if the provider
        authoritatively has none. Only called when :attr:`can_find` is true."""
        raise NotImplementedError

    # -- reconciliation by lookup in the provider's job list (providers/lookup.py) ---------

    #: what the provider's job list offers (None: it has none vidgate can use)
    listing: ClassVar[Listing | None] = None

    def listing_for(self, offering: Offering) -> Listing | None:
        """The list this offering's jobs appear in (an adapter serving several APIs may list
        only some)."""
        return self.listing

    def listed_inputs(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> dict[str, Any]:
        """What the list echoes of the create this request makes with this attempt's key, in
        the body's own names: a listed job matches when it shows every one of these values."""
        raise NotImplementedError

    async def list_page(self, offering: Offering, cursor: str | None) -> Page:
        """One page of the provider's jobs, newest first; ``cursor`` is the last page's
        ``next`` (None: the first page)."""
        raise NotImplementedError


# --- registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Provider]] = {}
_DISCOVERED = False


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: make an adapter available under its ``protocol`` key."""
    key = cls.protocol
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ConfigError(f"two adapters claim protocol {key!r}")
    _REGISTRY[key] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import vidgate.providers as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_") and mod.name not in ("base",):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    for ep in entry_points(group="vidgate.providers"):
        register(ep.load())
    _DISCOVERED = True


def registry() -> Mapping[str, type[Provider]]:
    _discover()
    return dict(_REGISTRY)


def adapter_class(protocol: str) -> type[Provider]:
    _discover()
    try:
        return _REGISTRY[protocol]
    except KeyError:
        raise ConfigError(
            f"no adapter speaks protocol {protocol!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
