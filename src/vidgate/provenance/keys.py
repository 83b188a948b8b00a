"""The C2PA signing pair: a PEM certificate chain and its private key, checked at start-up.

c2pa refuses to sign with a self-signed certificate, a leaf without an accepted extended key
usage (EKU), an expired one, or a key that does not match — but it says so only at the first
signature, with "the certificate is invalid". :func:`check_pair` finds each of these with
``cryptography`` first and names the fix; :func:`startup_check` then has c2pa itself sign a
tiny image, so whatever else c2pa objects to also surfaces at start-up, never at a job.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from vidgate.errors import ConfigError

CERT_VAR = "VIDGATE_C2PA_CERT"
KEY_VAR = "VIDGATE_C2PA_KEY"
DEV_FIX = "for development, `vidgate provenance dev-ca DIR` makes a pair that works"

#: EKUs a C2PA signing certificate may carry (the C2PA trust list's set); anyExtendedKeyUsage
#: is refused by the specification
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
C2PA_CLAIM_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
SIGNING_EKUS: dict[ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    DOCUMENT_SIGNING: "documentSigning",
    C2PA_CLAIM_SIGNING: "c2pa-kp-claimSigning",
}
#: the same set as c2pa's trust configuration wants it (one OID a line)
TRUST_CONFIG = "".join(f"{oid.dotted_string}\n" for oid in SIGNING_EKUS)

_EC_ALGS = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}


class KeyProblem(ConfigError):
    """The signing pair cannot sign; the message names the variable and the fix."""

    code = "c2pa_keys"


@dataclass(frozen=True)
class SigningKeys:
    """A checked pair, ready for c2pa (PEM bytes, the algorithm c2pa calls it by)."""

    chain_pem: bytes
    key_pem: bytes
    alg: str
    subject: str
    issuer: str
    not_after: datetime
    #: SHA-256 of the leaf certificate (DER), to say which key signed without showing it
    fingerprint: str


def read_pem(value: str, var: str) -> bytes:
    """A variable's PEM: the text itself (from a secret store), or a file path."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    path = Path(value).expanduser()
    try:
        return path.read_bytes()
    except OSError as e:
        raise KeyProblem(
            f"{var}={value}: cannot read it ({e.strerror or e}); point {var} at a PEM file "
            f"or give the PEM text ({DEV_FIX})"
        ) from None


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def _alg_of(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGS:
        return _EC_ALGS[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"  # C2PA allows RSA only with PSS padding
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise KeyProblem(
        f"{KEY_VAR} is a {type(key).__name__.removeprefix('_')} key; C2PA signs with "
        f"EC P-256/P-384/P-521, RSA (PSS) or Ed25519 keys ({DEV_FIX})"
    )


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_leaf(leaf: x509.Certificate) -> None:
    if leaf.issuer == leaf.subject and _issued_by(leaf, leaf):
        raise KeyProblem(
            f"the certificate in {CERT_VAR} is self-signed, and c2pa refuses to sign with a "
            "self-signed certificate: use a leaf issued by a CA, followed by the CA's "
            f"certificate in the same file ({DEV_FIX})"
        )
    basic = _ext(leaf, x509.BasicConstraints)
    if basic is not None and basic.ca:
        raise KeyProblem(
            f"the first certificate in {CERT_VAR} ({_cn(leaf.subject)}) is a CA certificate; "
            "put the signing (leaf) certificate first, then its issuers"
        )
    wanted = ", ".join(SIGNING_EKUS.values())
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is None:
        raise KeyProblem(
            f"the certificate in {CERT_VAR} has no extended key usage (EKU); C2PA signing "
            f"needs one of {wanted}: have the leaf issued with emailProtection ({DEV_FIX})"
        )
    oids = set(eku)
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in oids:
        raise KeyProblem(
            f"the certificate in {CERT_VAR} has anyExtendedKeyUsage, which C2PA refuses; "
            f"have the leaf issued with only {wanted} ({DEV_FIX})"
        )
    if not oids & set(SIGNING_EKUS):
        have = ", ".join(getattr(o, "_name", o.dotted_string) for o in oids)
        raise KeyProblem(
            f"the certificate in {CERT_VAR} has extended key usage {have}, not one C2PA "
            f"signs with ({wanted}): have the leaf issued with emailProtection ({DEV_FIX})"
        )
    usage = _ext(leaf, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise KeyProblem(
            f"the certificate in {CERT_VAR} does not allow digitalSignature in its key "
            f"usage; have the leaf issued with digitalSignature ({DEV_FIX})"
        )


def _check_dates(chain: list[x509.Certificate], now: datetime) -> None:
    for i, cert in enumerate(chain):
        which = "the certificate" if i == 0 else f"certificate {i + 1} ({_cn(cert.subject)})"
        if cert.not_valid_after_utc <= now:
            raise KeyProblem(
                f"{which} in {CERT_VAR} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                f"renew it and point {CERT_VAR} at the new chain ({DEV_FIX})"
            )
        if cert.not_valid_before_utc > now:
            raise KeyProblem(
                f"{which} in {CERT_VAR} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the machine's clock "
                "or use a certificate valid now"
            )


def check_pair(chain_pem: bytes, key_pem: bytes, *, now: datetime | None = None) -> SigningKeys:
    """Parse and check a chain and key the way c2pa will judge them; raise :class:`KeyProblem`."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise KeyProblem(
            f"{CERT_VAR} holds no PEM certificate; give the chain as PEM, the leaf first "
            f"(-----BEGIN CERTIFICATE-----...) ({DEV_FIX})"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise KeyProblem(
            f"{KEY_VAR} is encrypted; give an unencrypted PEM key (e.g. `openssl pkcs8 "
            "-topk8 -nocrypt -in key.pem`) and protect the file instead (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyProblem(
            f"{KEY_VAR} holds no PEM private key (-----BEGIN PRIVATE KEY-----...) ({DEV_FIX})"
        ) from None
    alg = _alg_of(key)
    leaf = chain[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise KeyProblem(
            f"{KEY_VAR} does not belong to the certificate in {CERT_VAR} (their public keys "
            "differ); use the key the leaf certificate was issued for, or put that leaf first"
        )
    _check_leaf(leaf)
    for i in range(len(chain) - 1):
        if not _issued_by(chain[i], chain[i + 1]):
            raise KeyProblem(
                f"the certificates in {CERT_VAR} are not a chain: certificate {i + 2} "
                f"({_cn(chain[i + 1].subject)}) did not issue certificate {i + 1} "
                f"({_cn(chain[i].subject)}); list the leaf first, then each issuer in turn"
            )
    _check_dates(chain, now or datetime.now(UTC))
    return SigningKeys(
        chain_pem=chain_pem,
        key_pem=key_pem,
        alg=alg,
        subject=_cn(leaf.subject),
        issuer=_cn(leaf.issuer),
        not_after=leaf.not_valid_after_utc,
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def configured(settings: Any) -> bool:
    return bool(getattr(settings, "c2pa_cert", None) or getattr(settings, "c2pa_key", None))


def load_keys(settings: Any) -> SigningKeys | None:
    """The checked pair from settings; None when neither variable is set."""
    cert, key = settings.c2pa_cert, settings.c2pa_key
    if not cert and not key:
        return None
    if not cert or not key:
        have, missing = (CERT_VAR, KEY_VAR) if cert else (KEY_VAR, CERT_VAR)
        raise KeyProblem(
            f"{have} is set but {missing} is not; set both (the PEM certificate chain and "
            f"its private key) or neither ({DEV_FIX})"
        )
    return check_pair(read_pem(cert, CERT_VAR), read_pem(key, KEY_VAR))


_checked: dict[tuple[bytes, bytes, str | None], SigningKeys] = {}
_checked_lock = threading.Lock()


def startup_check(settings: Any) -> SigningKeys | None:
    """Check the configured pair, and that c2pa itself signs with it, before any job runs.

    Returns None when signing is not configured (outputs stay unsigned), unless
    ``VIDGATE_C2PA_REQUIRED`` is set: then that is an error too."""
    keys = load_keys(settings)
    if keys is None:
        if settings.c2pa_required:
            raise KeyProblem(
                f"VIDGATE_C2PA_REQUIRED is set but {CERT_VAR} and {KEY_VAR} are not; point "
                f"them at the signing chain and key ({DEV_FIX})"
            )
        return None
    tsa = settings.c2pa_tsa_url
    cache_key = (keys.chain_pem, keys.key_pem, tsa)
    with _checked_lock:
        if cache_key in _checked:
            return _checked[cache_key]
    from vidgate.provenance.sign import trial_sign

    trial_sign(keys, tsa_url=tsa)
    with _checked_lock:
        _checked[cache_key] = keys
    return keys
