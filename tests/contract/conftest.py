"""The SDK contract suite: each provider's official Python SDK (the test-only ``contract``
extra) runs its own flows against the sandbox, and its response models parse what the
emulator answers. Providers without an SDK are checked against fixtures from their docs
(tests/contract/test_documented_fixtures.py). The table lives in docs/adding-a-provider.md."""

from __future__ import annotations

import datetime
import importlib.metadata
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import INVALID_CREDENTIAL

#: a key every emulator accepts (any value except the refused one)
KEY = "sk-contract-not-a-real-key"
assert KEY != INVALID_CREDENTIAL

#: 1x1 PNG (a valid image for every emulator that checks the bytes)
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

SDKS = (
    "openai",
    "google-genai",
    "runwayml",
    "lumaai",
    "replicate",
    "fal-client",
    "byteplus-python-sdk-v2",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "contract: an official provider SDK against the sandbox (tests/contract)"
    )
    # Print the SDK versions on every run (this conftest is not an initial one under a plain
    # `pytest`, so pytest_report_header alone would not show them).
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not getattr(config, "_vidgate_sdks_printed", False):
        config._vidgate_sdks_printed = True  # type: ignore[attr-defined]
        reporter.write_line(sdk_versions())


def sdk_versions() -> str:
    out = []
    for dist in SDKS:
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} MISSING")
    return "contract SDKs: " + ", ".join(out)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.contract)


def pytest_report_header() -> list[str]:
    """The SDK versions under test, at the top of a run that starts in tests/contract."""
    return [sdk_versions()]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def sb(tmp_path: Path, catalog: Catalog) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sb", catalog, time_scale=0.002).start()
    yield server
    server.stop()


class TlsSandbox(SandboxServer):
    """The same sandbox served over TLS with a throwaway self-signed certificate, for SDKs
    that only treat ``https:`` URLs as files (replicate's FileOutput). Only the harness
    changes; the emulators' wire format is the same."""

    def __init__(self, home: Path, catalog: Catalog, **kw: Any) -> None:
        super().__init__(home, catalog, **kw)
        home.mkdir(parents=True, exist_ok=True)
        self.cert, key = _self_signed(home)
        self.server.config.ssl_certfile = str(self.cert)
        self.server.config.ssl_keyfile = str(key)

    @property
    def url(self) -> str:
        return super().url.replace("http://", "https://", 1)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def _self_signed(home: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = home / "tls.crt", home / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_sb(tmp_path: Path, catalog: Catalog) -> Iterator[TlsSandbox]:
    server = TlsSandbox(tmp_path / "tls", catalog, time_scale=0.002).start()
    yield server
    server.stop()
