"""Asset storage over fsspec: streamed, checksummed, measured — on the local disk and on a
non-local backend (fsspec's in-memory filesystem stands in for S3 here: same interface)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import sandbox_settings
from vidgate.gateway import Gateway
from vidgate.sandbox.render import render_mp4
from vidgate.storage.assets import AssetStorage
from vidgate.storage.media import probe
from vidgate.types import JobState, VideoRequest


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("kind", ["local", "memory"])
async def test_write_stream_checksums_and_measures(tmp_path: Path, kind: str) -> None:
    url = str(tmp_path / "assets") if kind == "local" else f"memory://vg-{uuid.uuid4().hex}"
    storage = AssetStorage(url)
    clip = render_mp4(tmp_path / "c.mp4", width=160, height=96, fps=12, duration_s=1, audio=True)
    data = clip.read_bytes()
    path = storage.new_path("tenant/../x", "job_1")
    assert ".." not in path  # user-ish text never becomes a path
    sha, size = await storage.write_stream(path, chunks(data))
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert not storage.exists(path + ".part")
    with storage.open(path) as f:
        info = probe(f)
    assert (info.width, info.height, info.frames, info.has_audio) == (160, 96, 12, True)
    storage.delete(path)
    assert not storage.exists(path)


async def test_gateway_stores_outputs_in_a_non_local_backend(
    tmp_path, mini_catalog, sandbox
) -> None:
    url = f"memory://vg-{uuid.uuid4().hex}"
    gw = Gateway(
        sandbox_settings(tmp_path / "h", sandbox.url, storage_url=url), catalog=mini_catalog
    )
    try:
        job = await gw.generate(VideoRequest(prompt="to memory", duration_s=4))
        assert job.state is JobState.SUCCEEDED
        asset = job.assets[0]
        assert asset.uri.startswith("memory://")
        with gw.storage.open(gw.storage_path(asset.uri)) as f:
            assert hashlib.sha256(f.read()).hexdigest() == asset.sha256
    finally:
        await gw.aclose()
        gw.close()
