"""Shared pieces for provenance tests: a development CA made by the real `dev-ca` code, a
second CA playing a provider that signs its own outputs, and sandbox-rendered MP4s."""

from __future__ import annotations

import base64
import shutil
import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vidgate.provenance.devca import DevCA, make_dev_ca
from vidgate.provenance.keys import SigningKeys, check_pair
from vidgate.sandbox.render import render_mp4
from vidgate.settings import Settings
from vidgate.types import Asset, Job, JobState, VideoRequest


@dataclass(frozen=True)
class Pair:
    ca: DevCA
    keys: SigningKeys

    @property
    def anchor(self) -> bytes:
        return self.ca.ca.read_bytes()


def _pair(folder: Path) -> Pair:
    made = make_dev_ca(folder)
    return Pair(made, check_pair(made.cert.read_bytes(), made.key.read_bytes()))


@pytest.fixture(scope="session")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """vidgate's signing pair, as `vidgate provenance dev-ca DIR` writes it."""
    return _pair(tmp_path_factory.mktemp("dev-ca"))


@pytest.fixture(scope="session")
def provider_pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """Another CA: a provider that embeds its own manifest in what it delivers."""
    return _pair(tmp_path_factory.mktemp("provider-ca"))


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sandbox clip (H.264 + AAC), rendered once per session."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    return render_mp4(path, width=320, height=180, fps=24, duration_s=2, audio=True)


@pytest.fixture
def clip(rendered: Path, tmp_path: Path) -> Path:
    """A private copy of the sandbox clip (tests sign and tamper with it)."""
    return Path(shutil.copy(rendered, tmp_path / "delivered.mp4"))


def png_bytes(width: int = 24, height: int = 24) -> bytes:
    """A small noisy RGB PNG (about 2 KB at 24x24), like an uploaded reference image."""
    import numpy as np

    rows = np.random.default_rng(7).integers(0, 255, (height, width * 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def settings_for(home: Path, pair: Pair | None = None, **kw: object) -> Settings:
    values: dict[str, object] = {"home": home}
    if pair is not None:
        values.update(c2pa_cert=str(pair.ca.cert), c2pa_key=str(pair.ca.key))
    values.update(kw)
    return Settings(**values)  # type: ignore[arg-type]


def make_job(clip: Path, *, references: list[dict[str, str]] | None = None) -> Job:
    now = datetime.now(UTC)
    request = VideoRequest.model_validate(
        {
            "prompt": "a lighthouse at dusk, waves below",
            "mode": "image-to-video" if references else "text-to-video",
            "references": references or [],
        }
    )
    asset = Asset(
        id="asset_0123456789abcdef",
        uri=str(clip),
        sha256="0" * 64,
        bytes=clip.stat().st_size,
        synthetic=True,
    )
    return Job(
        id="job_provenance0000000001",
        state=JobState.POST_PROCESSING,
        request=request,
        created_at=now,
        updated_at=now,
        offering_id="veo-3-vertex",
        route={"chosen": {"offering": "veo-3-vertex", "model": "veo-3", "provider": "google"}},
        assets=[asset],
        synthetic=True,
    )


def flip_byte_in(path: Path, box: bytes) -> None:
    """Flip one byte in the middle of a top-level box's payload (mdat: the video data)."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == box:
            data[pos + size // 2] ^= 0xFF
            path.write_bytes(bytes(data))
            return
        pos += size
    raise AssertionError(f"no {box!r} box in {path}")


@pytest.fixture
def no_c2pa_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CERT", "KEY", "REQUIRED", "TSA_URL", "TRUST_ANCHORS", "INCLUDE_PROMPT"):
        monkeypatch.delenv(f"VIDGATE_C2PA_{var}", raising=False)
