"""``provider_options`` are governed, not trusted: the one rule every adapter's escape hatch
passes through before any job exists.

``provider_options[provider]`` is merged into the provider's create body, so without a rule it
could change what the job is priced on (a fal ``duration`` override delivered 8 s at the 5 s
price) or smuggle an internal address past the SSRF rules that references obey. Each adapter
declares, as data (:attr:`Provider.option_fields`), which fields it lets through and what each
means:

- ``passed(types)``: forwarded as-is; it changes neither the price nor the route.
- ``url()``: a URL the provider will fetch or call; checked with the same function as a
  reference URL (:func:`vidgate.net.ssrf.resolve_checked`).
- ``priced(use)``: set by vidgate from the request (duration, resolution, model...); refused
  with a message naming the request field to use, because the price and the route were
  computed from that field.

:data:`COMMON` lists the names that change the bill on most providers; they are refused on
every adapter unless the adapter declares the name itself, so a forgotten declaration fails
closed. An unknown field is refused unless the offering allows free-form options
(``free_form_options: true`` in the catalog); even then priced names stay refused, and every
string that looks like a URL anywhere in any option value is SSRF-checked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Collection, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vidgate.catalog.schema import Offering
from vidgate.errors import InvalidRequest
from vidgate.net.ssrf import BlockedAddress, resolve_checked
from vidgate.types import VideoRequest


class Meaning(StrEnum):
    PASSED = "passed"
    URL = "url"
    PRICED = "priced"


@dataclass(frozen=True)
class OptionField:
    meaning: Meaning
    #: JSON types the value may have (empty: any JSON value)
    types: tuple[type, ...] = ()
    #: for PRICED fields: the request field that sets it
    use: str = ""


def passed(*types: type) -> OptionField:
    return OptionField(Meaning.PASSED, types)


def url() -> OptionField:
    return OptionField(Meaning.URL, (str,))


def priced(use: str) -> OptionField:
    return OptionField(Meaning.PRICED, use=use)


#: names that change what is billed or what the router decided on most wire protocols.
COMMON: Mapping[str, OptionField] = {
    "model": priced("model (or pin an offering)"),
    "model_name": priced("model (or pin an offering)"),
    "version": priced("model (or pin an offering)"),
    "prompt": priced("prompt"),
    "negative_prompt": priced("negative_prompt"),
    "seed": priced("seed"),
    "aspect_ratio": priced("aspect_ratio"),
    "duration": priced("duration_s"),
    "durationSeconds": priced("duration_s"),
    "seconds": priced("duration_s"),
    "num_frames": priced("duration_s"),
    "resolution": priced("resolution"),
    "size": priced("resolution and aspect_ratio"),
    "mode": priced("resolution (and quality)"),
    "fps": priced("fps"),
    "frames_per_second": priced("fps"),
    "audio": priced("audio"),
    "generate_audio": priced("audio"),
    "generateAudio": priced("audio"),
    "sound": priced("audio"),
    "with_audio": priced("audio"),
    "n": priced("one job per request (submit several jobs)"),
    "num_outputs": priced("one job per request (submit several jobs)"),
    "num_videos": priced("one job per request (submit several jobs)"),
    "sampleCount": priced("one job per request (submit several jobs)"),
    "number_of_videos": priced("one job per request (submit several jobs)"),
}


def fields_for(cls: Any, offering: Offering) -> dict[str, OptionField]:
    """The adapter's declaration over :data:`COMMON` (the adapter's own word wins)."""
    hook = getattr(cls, "option_fields_for", None)
    own: Mapping[str, OptionField] = (
        hook(offering) if callable(hook) else getattr(cls, "option_fields", {})
    )
    return {**COMMON, **own}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _looks_like_url(s: str) -> bool:
    # only what a provider would fetch over the network (gs:// output buckets are not)
    return s.strip().lower().startswith(("http:", "https:", "//"))


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if not types:
        return True
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is not a number
    return isinstance(value, types)


def _check(
    provider: str, key: str, value: Any, spec: OptionField | None, offering: Offering
) -> list[tuple[str, str]]:
    """Refuse what the declaration refuses; return the URLs to SSRF-check."""
    where = f"provider_options.{provider}.{key}"
    if spec is None:
        if not offering.free_form_options:
            raise InvalidRequest(
                f"{where} is not an option vidgate passes to {provider} (offering "
                f"{offering.id}); set it through the request's own fields, or pin an offering "
                "that allows free-form options"
            )
    elif spec.meaning is Meaning.PRICED:
        raise InvalidRequest(
            f"{where} would change what the job is priced and routed on; use the request's "
            f"{spec.use} instead"
        )
    elif not _type_ok(value, spec.types):
        names = " or ".join(t.__name__ for t in spec.types)
        raise InvalidRequest(f"{where} must be a {names}")
    elif spec.meaning is Meaning.URL and not value.lower().startswith(
        ("https://", "http://", "data:")
    ):
        raise BlockedAddress(f"{where} must be an http(s) URL")
    return [(where, s.strip()) for s in _strings(value) if _looks_like_url(s)]


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run the (async) SSRF check from sync code, inside or outside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _check_urls(urls: list[tuple[str, str]], allow_hosts: Collection[str]) -> None:
    for where, u in urls:
        try:
            await resolve_checked(u, allow_hosts=allow_hosts)
        except BlockedAddress as e:
            raise BlockedAddress(f"{where} {u!r} is not allowed: {e.message}") from None


def govern(
    request: VideoRequest,
    ranked: Iterable[Offering],
    catalog_offerings: Iterable[Offering],
    *,
    allow_hosts: Collection[str] = (),
) -> None:
    """Refuse ``request.provider_options`` unless every field is one the offerings that may
    receive it let through, and every URL in it passes the SSRF rules. Raises
    :class:`InvalidRequest` (a 4xx; exit 2 on the CLI)."""
    if not request.provider_options:
        return
    from vidgate.providers.base import registry  # the registry imports every adapter

    adapters = registry()
    ranked = list(ranked)
    every = list(catalog_offerings)
    urls: list[tuple[str, str]] = []
    for provider, options in request.provider_options.items():
        targets = [o for o in ranked if o.provider == provider] or [
            o for o in every if o.provider == provider
        ]
        if not targets:
            known = ", ".join(sorted({o.provider for o in every}))
            raise InvalidRequest(
                f"provider_options names unknown provider {provider!r}; known: {known}"
            )
        if not isinstance(options, Mapping):
            raise InvalidRequest(f"provider_options.{provider} must be an object")
        for offering in targets:
            cls = adapters.get(offering.protocol)
            table = fields_for(cls, offering) if cls is not None else dict(COMMON)
            for key, value in options.items():
                urls += _check(provider, key, value, table.get(key), offering)
    if urls:
        _run(_check_urls(list(dict.fromkeys(urls)), allow_hosts))


#: request fields that an offering maps onto provider input names (fal, Replicate: the input
#: name comes from catalog data, so the refusal must too)
ROLE_FIELDS: Mapping[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "duration": "duration_s",
    "num_frames": "duration_s",
    "fps": "fps",
    "aspect_ratio": "aspect_ratio",
    "resolution": "resolution",
    "audio": "audio",
}


def mapped(pairs: Iterable[tuple[str, str]]) -> dict[str, OptionField]:
    """``priced`` entries for the input names an offering fills from the request: each
    (role, wire name) pair; a role that is not a request field is a reference slot."""
    return {name: priced(ROLE_FIELDS.get(role, "references")) for role, name in pairs if name}
