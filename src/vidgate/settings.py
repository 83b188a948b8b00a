"""Settings, read once at the edge (CLI, server) and passed down explicitly.

All state lives under one data directory (``VIDGATE_HOME``, default ``~/.vidgate``): the
database, stored assets and the sandbox's own records. Provider credentials are read from the
providers' usual environment variables by name, only when a call needs them; they are never
copied into settings objects, job rows, logs or errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SANDBOX_CREDENTIAL = "sandbox-key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDGATE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".vidgate")
    database_url: str | None = None
    storage_url: str | None = None
    #: a YAML file overriding catalog entries (negotiated prices, disabled offerings, extras)
    catalog: Path | None = None

    sandbox: bool = False
    #: an already-running sandbox to use instead of starting one in-process
    sandbox_url: str | None = None
    #: multiplies every emulated provider latency (0.02: a 65 s Veo job takes 1.3 s)
    sandbox_time_scale: float = Field(default=0.02, ge=0, le=10)

    #: per-request HTTP timeout towards providers (seconds)
    http_timeout_s: float = Field(default=60.0, gt=0)
    #: default polling interval when a provider gives no hint (seconds)
    poll_interval_s: float = Field(default=2.0, gt=0)
    #: give up on a stalled attempt whose remote job cannot be cancelled and try the next
    #: offering; the stalled one is followed to its end and booked ``pending`` meanwhile,
    #: and the job's reservation is topped up to cover both (false: keep waiting on it)
    fallback_on_stall: bool = True
    #: times a job's driving may raise before the job is failed with the error kept
    max_drive_errors: int = Field(default=3, ge=1)

    #: Redis URL shared by gateway processes (rate-limit windows); memory when unset
    redis_url: str | None = None
    #: circuit breakers: outcomes remembered, minimum calls and failure ratio to open,
    #: seconds open before half-open probes, probes allowed at once
    breaker_window: int = Field(default=20, ge=1)
    breaker_min_calls: int = Field(default=5, ge=1)
    breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    breaker_open_s: float = Field(default=30.0, ge=0)
    breaker_max_probes: int = Field(default=1, ge=1)
    #: finished attempts an offering needs before learned latency replaces the catalog's
    learn_min_samples: int = Field(default=20, ge=1)

    #: Standard Webhooks signing secret for per-job webhook URLs (whsec_...); generated and
    #: kept in VIDGATE_HOME when unset
    webhook_secret: str | None = None
    #: seconds before each webhook retry, comma-separated (Standard Webhooks' schedule)
    webhook_retry_schedule_s: str = "5,300,1800,7200,18000,36000,36000"
    #: hosts ("host" or "host:port") exempt from SSRF checks: a development receiver on
    #: loopback. Never set this in production.
    ssrf_allow_hosts: str = ""

    #: C2PA signing (docs/provenance.md): the PEM certificate chain (leaf first, then its
    #: issuing CAs) and the PEM private key, each a file path or the PEM text itself;
    #: `vidgate provenance dev-ca DIR` makes a development pair. Unset: outputs are unsigned.
    c2pa_cert: str | None = None
    c2pa_key: str | None = None
    #: refuse to start (and fail the stage) when the signing pair is not configured
    c2pa_required: bool = False
    #: put the prompt itself in the manifest (its SHA-256 is always there)
    c2pa_include_prompt: bool = False
    #: a timestamp authority (RFC 3161) to countersign with; none by default (offline)
    c2pa_tsa_url: str | None = None
    #: PEM bundle of trust anchors for `vidgate verify` and the provenance route ("Trusted")
    c2pa_trust_anchors: str | None = None
    #: JPEG thumbnails of ingredients in the manifest (~185 KB for a 2 KB input image)
    c2pa_thumbnails: bool = False

    def webhook_schedule(self) -> tuple[float, ...]:
        try:
            return tuple(float(x) for x in self.webhook_retry_schedule_s.split(",") if x.strip())
        except ValueError:
            from vidgate.errors import ConfigError

            raise ConfigError(
                "VIDGATE_WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds"
            ) from None

    def allow_hosts(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.ssrf_allow_hosts.split(",") if h.strip())

    def resolved_home(self) -> Path:
        home = self.home.expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return home

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home() / 'vidgate.db'}"

    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return str(self.resolved_home() / "assets")

    def sandbox_home(self) -> Path:
        path = self.resolved_home() / "sandbox"
        path.mkdir(parents=True, exist_ok=True)
        return path


class Credentials:
    """Reads provider secrets from an environment mapping, by variable name, on demand.

    In sandbox mode every credential reads as a fixed placeholder the sandbox accepts, so no
    real key can ever be sent to the emulator.
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, sandbox: bool = False) -> None:
        self._env = env if env is not None else os.environ
        self.sandbox = sandbox

    def present(self, names: list[str]) -> bool:
        return self.sandbox or all(self._env.get(n) for n in names)

    def missing(self, names: list[str]) -> list[str]:
        return [] if self.sandbox else [n for n in names if not self._env.get(n)]

    def get(self, name: str) -> str:
        if self.sandbox:
            return SANDBOX_CREDENTIAL
        value = self._env.get(name)
        if not value:
            from vidgate.errors import AuthFailed

            raise AuthFailed(f"credential {name} is not set; export {name}=... to use it")
        return value

    def base_url_override(self, provider: str) -> str | None:
        """``VIDGATE_<PROVIDER>_BASE_URL`` points an adapter at a private endpoint."""
        key = "VIDGATE_" + provider.upper().replace("-", "_") + "_BASE_URL"
        return self._env.get(key) or None
