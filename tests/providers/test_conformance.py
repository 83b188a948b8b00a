"""The provider conformance suite: every adapter, against the sandbox's emulation of its wire
protocol, over real HTTP — submit, poll through its statuses, fetch and decode, cancel, and
the mapping of each injected failure to the right error class.

A new adapter joins this suite by existing: the parameters are the protocols the sandbox
emulates, and the offerings in the shipped catalog that use them.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import av
import httpx
import pytest

from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AmbiguousSubmission,
    AuthFailed,
    ContentRejected,
    InvalidRequest,
    ProviderUnavailable,
    RateLimited,
)
from vidgate.gateway import Gateway
from vidgate.providers.base import Provider, ProviderJob, RemoteState, adapter_class
from vidgate.sandbox.app import SandboxServer, emulated_protocols
from vidgate.sandbox.core import INVALID_CREDENTIAL, FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import Mode, Reference, ReferenceRole, VideoRequest

CATALOG = load_catalog()
TODAY = datetime.now(UTC).date()
PROTOCOLS = sorted(emulated_protocols())
# A 2x2 PNG, for offerings that only do image-to-video.
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DA"
    "wMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


def offerings_of(protocol: str) -> list[Offering]:
    return [o for o in CATALOG.offerings.values() if o.protocol == protocol]


def representative(protocol: str) -> Offering:
    """An offering of this protocol, preferring one that is available today."""
    offs = offerings_of(protocol)
    assert offs, f"the catalog has no offering for protocol {protocol}"
    return next((o for o in offs if o.enabled and o.available_on(TODAY)), offs[0])


def request_for(offering: Offering, prompt: str = "a lighthouse in a storm") -> VideoRequest:
    """The smallest request the offering can serve (short, low resolution)."""
    caps = offering.capabilities
    spec = caps.durations
    duration = min(spec.values) if spec.values is not None else float(spec.min or 1)
    refs: list[Reference] = []
    mode = Mode.TEXT_TO_VIDEO
    if Mode.TEXT_TO_VIDEO not in caps.modes:
        mode = Mode.IMAGE_TO_VIDEO
        refs = [Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)]
    return VideoRequest(
        prompt=prompt,
        mode=mode,
        duration_s=duration,
        resolution=min(caps.resolutions, key=lambda r: r.short_side),
        aspect_ratio=caps.aspect_ratios[0],
        references=refs,
    )


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return CATALOG


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def make_adapter(
    protocol: str,
    sb: SandboxServer,
    client: httpx.AsyncClient,
    credentials: Credentials | None = None,
) -> Provider:
    cls = adapter_class(protocol)
    path = urlsplit(cls.default_base_url).path.rstrip("/")
    return cls(
        client=client,
        credentials=credentials or Credentials(sandbox=True),
        base_url=f"{sb.url}/{protocol}{path}",
    )


async def finish(adapter: Provider, job: ProviderJob) -> list[RemoteState]:
    states = []
    for _ in range(600):
        status = await adapter.poll(job)
        if not states or states[-1] is not status.state:
            states.append(status.state)
        if status.state.terminal:
            return states
        await asyncio.sleep(min(status.poll_after_s or 0.02, 0.05))
    raise AssertionError(f"never finished: {states}")


async def submit(
    adapter: Provider, offering: Offering, prompt: str = "a lighthouse"
) -> ProviderJob:
    return await adapter.submit(
        request_for(offering, prompt), offering, idempotency_key=f"conf-{prompt[:8]}"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_lifecycle_and_download(protocol: str, sb: SandboxServer, http) -> None:
    offering = representative(protocol)
    adapter = make_adapter(protocol, sb, http)
    req = request_for(offering)
    job = await adapter.submit(req, offering, idempotency_key="conf-life")
    assert job.protocol == protocol
    assert job.offering_id == offering.id
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job
    states = await finish(adapter, job)
    assert states[-1] is RemoteState.SUCCEEDED, states
    assets = await adapter.fetch(job)
    assert assets, "a succeeded job must have at least one asset"
    resp = await http.get(assets[0].url, headers=dict(assets[0].headers), follow_redirects=True)
    assert resp.status_code == 200, resp.text[:200]
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264"
        decoded = sum(1 for _ in c.decode(video=0))
    duration = offering.capabilities.durations.nearest(req.duration_s)
    fps = (offering.capabilities.fps or [24])[0]
    assert decoded == max(1, round(duration * fps))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("kind", "error"),
    [("rate_limit", RateLimited), ("unavailable", ProviderUnavailable)],
)
async def test_create_refusals_map_to_retryable_errors(protocol, kind, error, sb, http) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind=kind, rate=1.0, retry_after_s=2)])
    adapter = make_adapter(protocol, sb, http)
    with pytest.raises(error) as info:
        await submit(adapter, representative(protocol))
    assert info.value.retryable
    assert info.value.provider == protocol
    if kind == "rate_limit":
        assert info.value.retry_after == 2  # type: ignore[attr-defined]
    assert sb.core.store.stats()["creates"] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_dropped_create_is_ambiguous(protocol: str, sb: SandboxServer) -> None:
    # The sandbox records the create and never answers (5 s); our read times out first. A
    # generous connect timeout, and a read timeout of 3 s rather than 1, keep a loaded machine
    # from failing the calls before the create (a self-hosted fleet's discovery) instead.
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=5)
    async with httpx.AsyncClient(timeout=httpx.Timeout(3.0, connect=15.0)) as short:
        adapter = make_adapter(protocol, sb, short)
        with pytest.raises(AmbiguousSubmission):
            await submit(adapter, representative(protocol))
    # the request left: the sandbox counts it once its handler has run (on a loaded machine,
    # possibly after our client gave up)
    for _ in range(200):
        if sb.core.store.stats()["creates"]:
            break
        await asyncio.sleep(0.05)
    assert sb.core.store.stats()["creates"] == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_moderation_failure_is_content_rejected(protocol: str, sb, http) -> None:
    adapter = make_adapter(protocol, sb, http)
    offering = representative(protocol)
    try:
        job = await submit(adapter, offering, "[unsafe] a lighthouse")
    except ContentRejected:
        return  # some providers refuse at create time: equally right
    states = await finish(adapter, job)
    assert states[-1] is RemoteState.FAILED
    status = await adapter.poll(job)
    assert isinstance(status.error, ContentRejected), status.error
    assert not status.error.retryable


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_generation_failure_is_retryable(protocol: str, sb, http) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="fail", rate=1.0)])
    adapter = make_adapter(protocol, sb, http)
    job = await submit(adapter, representative(protocol))
    states = await finish(adapter, job)
    assert states[-1] is RemoteState.FAILED
    status = await adapter.poll(job)
    assert status.error is not None
    assert status.error.retryable


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_status_call_outage_is_retryable(protocol: str, sb, http) -> None:
    adapter = make_adapter(protocol, sb, http)
    job = await submit(adapter, representative(protocol))
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="poll_unavailable", rate=1.0)])
    with pytest.raises(ProviderUnavailable):
        await adapter.poll(job)


#: protocols whose offerings carry a credential (the self-hosted model server has none)
KEYED = [p for p in PROTOCOLS if representative(p).credential_env]


@pytest.mark.parametrize("protocol", KEYED)
async def test_invalid_credential_is_auth_failed(protocol: str, sb, http) -> None:
    offering = representative(protocol)
    bad = Credentials({name: INVALID_CREDENTIAL for name in offering.credential_env})
    adapter = make_adapter(protocol, sb, http, credentials=bad)
    with pytest.raises(AuthFailed):
        await submit(adapter, offering)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cancel(protocol: str, sb, http) -> None:
    adapter = make_adapter(protocol, sb, http)
    sb.core.time_scale = 1.0  # keep the job running long enough to cancel it
    if not adapter.supports_cancel:
        # No cancel endpoint at this provider (provider-apis.md): a clear final error, and
        # nothing is sent.
        job = await submit(adapter, representative(protocol))
        with pytest.raises(InvalidRequest, match="cannot cancel"):
            await adapter.cancel(job)
        return
    job = await submit(adapter, representative(protocol))
    await adapter.cancel(job)
    status = await adapter.poll(job)
    assert status.state is RemoteState.CANCELED


def available_offerings() -> list[str]:
    return sorted(o.id for o in CATALOG.offerings.values() if o.enabled and o.available_on(TODAY))


@pytest.mark.parametrize("offering_id", available_offerings())
async def test_every_offering_generates_in_sandbox_mode(offering_id: str, tmp_path, sb) -> None:
    """`VIDGATE_SANDBOX=1 vidgate generate --offering ID` for every routable offering."""
    from tests.conftest import sandbox_settings

    offering = CATALOG.offering(offering_id)
    gw = Gateway(sandbox_settings(tmp_path / "h", sb.url), catalog=CATALOG)
    try:
        job = await gw.generate(request_for(offering), pinned=[offering_id])
        assert job.state.value == "succeeded", job.error
        assert job.assets[0].codec == "h264"
        # the attempt really went through this offering's own adapter and wire protocol
        assert job.attempts[-1].provider_job
        assert job.attempts[-1].provider_job["protocol"] == offering.protocol
    finally:
        await gw.aclose()
        gw.close()
