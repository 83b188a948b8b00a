"""Client-side rate limits per provider credential, with the `limits` library.

Providers publish request rates per key (seed 000, "Rate Limits Comparison": Runway 30/min
paid, Veo 15/min, ...). Sending past them only buys 429s, so the router treats an exhausted
window as "no headroom" and picks another offering, and the runner takes a slot right before
each create. Storage is in memory by default; a ``redis://`` URL shares the windows between
gateway processes that share credentials.

Credentials are identified by a hash of the secret, never the secret itself, so two keys for
the same provider get separate windows and nothing sensitive reaches Redis or logs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from vidgate.errors import ConfigError


def credential_id(provider: str, secret: str) -> str:
    return f"{provider}:{hashlib.sha256(secret.encode()).hexdigest()[:16]}"


class RateLimits:
    def __init__(
        self, limits_by_provider: Mapping[str, str], storage_url: str = "memory://"
    ) -> None:
        self.items: dict[str, RateLimitItem] = {}
        for provider, spec in limits_by_provider.items():
            try:
                self.items[provider] = parse(spec)
            except ValueError:
                raise ConfigError(
                    f"rate limit {spec!r} for {provider} is not like '30/minute'"
                ) from None
        try:
            self.storage = storage_from_string(storage_url)
        except Exception as e:  # the library raises several types for bad URLs
            raise ConfigError(f"rate-limit storage {storage_url!r}: {e}") from None
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._adhoc: dict[int, RateLimitItem] = {}

    def headroom(self, provider: str, credential: str) -> bool:
        item = self.items.get(provider)
        return item is None or bool(self.limiter.test(item, "vidgate", credential))

    def take(self, provider: str, credential: str) -> bool:
        """Consume one request slot; False when the window is full."""
        item = self.items.get(provider)
        return item is None or bool(self.limiter.hit(item, "vidgate", credential))

    def take_rate(self, identity: str, per_minute: int) -> bool:
        """A slot under an ad-hoc per-minute limit (API keys' rpm)."""
        item = self._adhoc.get(per_minute)
        if item is None:
            item = self._adhoc[per_minute] = parse(f"{per_minute}/minute")
        return bool(self.limiter.hit(item, "vidgate-key", identity))

    def describe(self, provider: str) -> str:
        item = self.items.get(provider)
        return str(item) if item is not None else "unlimited"
