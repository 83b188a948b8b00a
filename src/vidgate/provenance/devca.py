"""An offline test CA and a signing leaf for development (`vidgate provenance dev-ca DIR`).

c2pa will not sign with a self-signed certificate, so even development needs two: a root CA
(the trust anchor, ``ca.pem``) and a leaf it issued with what C2PA asks of a signer — EC
P-256 (ES256), KeyUsage digitalSignature, EKU emailProtection, subject and authority key
identifiers. ``cert.pem`` is the chain (leaf, then CA) and ``key.pem`` the leaf's key (0600):
exactly what ``VIDGATE_C2PA_CERT`` and ``VIDGATE_C2PA_KEY`` take. Nothing here is for
production: the CA's own key is thrown away, so it can issue nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from vidgate.errors import InvalidRequest

PEM = serialization.Encoding.PEM
ORG = "vidgate development"


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class DevCA:
    folder: Path
    cert: Path
    ca: Path
    key: Path

    def env_lines(self) -> list[str]:
        return [f"export VIDGATE_C2PA_CERT={self.cert}", f"export VIDGATE_C2PA_KEY={self.key}"]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        ]
    )


def _usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(common_name: str = "vidgate Development Root CA", *, days: int = 3650) -> Issued:
    """A self-signed root: the trust anchor (it never signs content itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def new_leaf(
    ca: Issued,
    common_name: str = "vidgate Development Signer",
    *,
    ekus: Sequence[ObjectIdentifier] | None = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    not_before: datetime | None = None,
    days: int = 365,
) -> Issued:
    """A signing leaf issued by ``ca``; ``ekus=None`` leaves the EKU out (tests use that)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(UTC) - timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL after the existence check above: a file appearing meanwhile is never clobbered
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it; 0600 must stay 0600


def make_dev_ca(folder: Path, *, force: bool = False) -> DevCA:
    """Write ``cert.pem`` (leaf + CA), ``ca.pem`` and ``key.pem`` (0600) into ``folder``."""
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise InvalidRequest(f"{folder} is a file; give a directory for the development CA")
    out = DevCA(folder, folder / "cert.pem", folder / "ca.pem", folder / "key.pem")
    present = [p.name for p in (out.cert, out.ca, out.key) if p.exists()]
    if present and not force:
        raise InvalidRequest(
            f"{folder} already has {', '.join(present)}; pass --force to replace them "
            "(jobs signed with the old key stay valid)"
        )
    ca = new_ca()
    leaf = new_leaf(ca)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for p in (out.cert, out.ca, out.key):
            p.unlink(missing_ok=True)
        _write(out.key, leaf.key_pem, 0o600)
        _write(out.cert, leaf.cert_pem + ca.cert_pem, 0o644)
        _write(out.ca, ca.cert_pem, 0o644)
    except OSError as e:
        # an unwritable or impossible place: one line, not a traceback
        raise InvalidRequest(
            f"cannot write the development CA into {folder}: {e.strerror or e}; "
            "give a directory you can write to"
        ) from None
    return out
