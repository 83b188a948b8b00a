"""The signing pair: `dev-ca` output, and every way a pair can be wrong, found at start-up
with a message naming the fix (and c2pa itself refusing the same pairs, so the checks are
about real refusals)."""

from __future__ import annotations

import io
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import c2pa  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.provenance.conftest import Pair, settings_for
from vidgate.errors import InvalidRequest
from vidgate.provenance.devca import Issued, make_dev_ca, new_ca, new_leaf
from vidgate.provenance.keys import KeyProblem, check_pair, load_keys, startup_check
from vidgate.provenance.sign import _tiny_png


def c2pa_signs(chain: bytes, key: bytes) -> None:
    """c2pa's own verdict on a pair: raises when it refuses to sign."""
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, key, None))
    manifest = {"claim_generator_info": [{"name": "test"}], "title": "t", "format": "image/png"}
    with c2pa.Builder(manifest) as b:
        b.sign(signer, "image/png", io.BytesIO(_tiny_png()), io.BytesIO())


def self_signed() -> Issued:
    """A leaf with everything C2PA wants except an issuer: it signed itself."""
    ca = new_ca()
    leaf = new_leaf(ca)
    cert = (
        x509.CertificateBuilder()
        .subject_name(leaf.cert.subject)
        .issuer_name(leaf.cert.subject)
        .public_key(leaf.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.cert.not_valid_before_utc)
        .not_valid_after(leaf.cert.not_valid_after_utc)
    )
    for ext in leaf.cert.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier):
            cert = cert.add_extension(ext.value, ext.critical)
    return Issued(cert.sign(leaf.key, hashes.SHA256()), leaf.key)


def test_dev_ca_writes_a_chain_an_anchor_and_a_private_key(tmp_path: Path) -> None:
    made = make_dev_ca(tmp_path / "ca")
    assert stat.S_IMODE(os.stat(made.key).st_mode) == 0o600
    chain = x509.load_pem_x509_certificates(made.cert.read_bytes())
    anchor = x509.load_pem_x509_certificates(made.ca.read_bytes())
    assert len(chain) == 2
    assert chain[1] == anchor[0]
    leaf = chain[0]
    leaf.verify_directly_issued_by(anchor[0])
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert made.env_lines() == [
        f"export VIDGATE_C2PA_CERT={made.cert}",
        f"export VIDGATE_C2PA_KEY={made.key}",
    ]
    keys = startup_check(settings_for(tmp_path / "home", Pair(made, None)))  # type: ignore[arg-type]
    assert keys is not None
    assert keys.alg == "es256"


def test_dev_ca_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = make_dev_ca(tmp_path)
    old_key = first.key.read_bytes()
    with pytest.raises(InvalidRequest, match="--force"):
        make_dev_ca(tmp_path)
    assert first.key.read_bytes() == old_key
    assert make_dev_ca(tmp_path, force=True).key.read_bytes() != old_key


def test_self_signed_certificate_is_refused_naming_the_fix() -> None:
    leaf = self_signed()
    with pytest.raises(c2pa.C2paError):
        c2pa_signs(leaf.cert_pem, leaf.key_pem)
    with pytest.raises(KeyProblem, match="self-signed") as e:
        check_pair(leaf.cert_pem, leaf.key_pem)
    assert "vidgate provenance dev-ca" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("ekus", "words"),
    [
        ([ExtendedKeyUsageOID.SERVER_AUTH], "extended key usage serverAuth"),
        ([ExtendedKeyUsageOID.CODE_SIGNING], "extended key usage codeSigning"),
        (None, "no extended key usage"),
        (
            [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
            "anyExtendedKeyUsage",
        ),
    ],
)
def test_wrong_or_missing_eku_is_refused_naming_the_fix(
    ekus: list[x509.ObjectIdentifier] | None, words: str
) -> None:
    ca = new_ca()
    leaf = new_leaf(ca, ekus=ekus)
    chain = leaf.cert_pem + ca.cert_pem
    with pytest.raises(c2pa.C2paError):
        c2pa_signs(chain, leaf.key_pem)
    with pytest.raises(KeyProblem, match=words) as e:
        check_pair(chain, leaf.key_pem)
    assert "emailProtection" in str(e.value)


def test_mismatched_pair_is_refused() -> None:
    ca = new_ca()
    a, b = new_leaf(ca), new_leaf(ca)
    with pytest.raises(c2pa.C2paError):
        c2pa_signs(a.cert_pem + ca.cert_pem, b.key_pem)
    with pytest.raises(KeyProblem, match="does not belong to the certificate"):
        check_pair(a.cert_pem + ca.cert_pem, b.key_pem)


def test_expired_and_not_yet_valid_certificates_are_refused() -> None:
    ca = new_ca()
    old = new_leaf(ca, not_before=datetime.now(UTC) - timedelta(days=30), days=29)
    with pytest.raises(c2pa.C2paError):
        c2pa_signs(old.cert_pem + ca.cert_pem, old.key_pem)
    with pytest.raises(KeyProblem, match=r"expired on \d{4}-\d\d-\d\d; renew it"):
        check_pair(old.cert_pem + ca.cert_pem, old.key_pem)
    early = new_leaf(ca, not_before=datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(KeyProblem, match="not valid before"):
        check_pair(early.cert_pem + ca.cert_pem, early.key_pem)
    # one second either side of the boundary
    good = new_leaf(ca)
    end = good.cert.not_valid_after_utc
    check_pair(good.cert_pem + ca.cert_pem, good.key_pem, now=end - timedelta(seconds=1))
    with pytest.raises(KeyProblem, match="expired"):
        check_pair(good.cert_pem + ca.cert_pem, good.key_pem, now=end)


def test_chain_out_of_order_and_ca_first_are_refused() -> None:
    ca, other = new_ca(), new_ca("another CA")
    leaf = new_leaf(ca)
    with pytest.raises(KeyProblem, match="not a chain"):
        check_pair(leaf.cert_pem + other.cert_pem, leaf.key_pem)
    with pytest.raises(KeyProblem, match="does not belong to the certificate"):
        check_pair(ca.cert_pem + leaf.cert_pem, leaf.key_pem)


def test_only_one_variable_set_and_unreadable_files(tmp_path: Path, ours: Pair) -> None:
    home = tmp_path / "home"
    with pytest.raises(KeyProblem, match="VIDGATE_C2PA_CERT is set but VIDGATE_C2PA_KEY is not"):
        load_keys(settings_for(home, c2pa_cert=str(ours.ca.cert)))
    with pytest.raises(KeyProblem, match="VIDGATE_C2PA_KEY is set but VIDGATE_C2PA_CERT is not"):
        load_keys(settings_for(home, c2pa_key=str(ours.ca.key)))
    missing = tmp_path / "nope.pem"
    with pytest.raises(KeyProblem, match=f"VIDGATE_C2PA_KEY={missing}: cannot read it"):
        load_keys(settings_for(home, c2pa_cert=str(ours.ca.cert), c2pa_key=str(missing)))
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(KeyProblem, match="holds no PEM certificate"):
        load_keys(settings_for(home, c2pa_cert=str(junk), c2pa_key=str(ours.ca.key)))
    with pytest.raises(KeyProblem, match="holds no PEM private key"):
        load_keys(settings_for(home, c2pa_cert=str(ours.ca.cert), c2pa_key=str(junk)))


def test_pem_text_works_as_well_as_a_path(tmp_path: Path, ours: Pair) -> None:
    settings = settings_for(
        tmp_path,
        c2pa_cert=ours.ca.cert.read_text(),
        c2pa_key=ours.ca.key.read_text(),
    )
    keys = load_keys(settings)
    assert keys is not None
    assert keys.fingerprint == ours.keys.fingerprint


def test_unset_is_fine_unless_required(tmp_path: Path) -> None:
    assert startup_check(settings_for(tmp_path)) is None
    with pytest.raises(KeyProblem, match="VIDGATE_C2PA_REQUIRED is set but"):
        startup_check(settings_for(tmp_path, c2pa_required=True))


def test_unreachable_timestamp_authority_fails_at_start_up(tmp_path: Path, ours: Pair) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tsa"
    with pytest.raises(
        KeyProblem, match=rf"\(timestamp authority {url}\): .* unset VIDGATE_C2PA_TSA_URL"
    ):
        startup_check(settings_for(tmp_path, ours, c2pa_tsa_url=url))
