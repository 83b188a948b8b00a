"""`vidgate verify`, `vidgate provenance dev-ca` and the start-up refusal of a bad signing
pair, as a user meets them (exit codes: 0 valid/trusted, 1 invalid or no manifest, 2 bad
input; errors are one line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provenance.conftest import Pair, flip_byte_in
from vidgate.cli.main import main
from vidgate.provenance.sign import ManifestInfo, sign_file


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def vidgate(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    base.update({"COLUMNS": "200", "NO_COLOR": "1", **env})
    return subprocess.run(
        [sys.executable, "-m", "vidgate", *args],
        env=base,
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def signed(clip: Path, ours: Pair, tmp_path: Path) -> Path:
    dst = tmp_path / "signed.mp4"
    info = ManifestInfo(title="job_9.mp4", model="veo-3", provider="google", job_id="job_9")
    sign_file(clip, dst, manifest_info=info, keys=ours.keys)
    return dst


@pytest.mark.usefixtures("no_c2pa_env")
def test_verify_says_valid_trusted_and_what_made_it(
    capsys: pytest.CaptureFixture[str], signed: Path, ours: Pair
) -> None:
    code, out, _ = run(capsys, "verify", str(signed))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("valid: the manifest matches the video")
    assert "action: c2pa.created (by veo-3, trainedAlgorithmicMedia)" in lines
    assert "claim generator: vidgate/0.1.0" in lines
    code, out, _ = run(capsys, "verify", str(signed), "--trust", str(ours.ca.ca))
    assert code == 0
    assert out.startswith("trusted: ")


@pytest.mark.usefixtures("no_c2pa_env")
def test_verify_trust_anchors_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    signed: Path,
    ours: Pair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIDGATE_C2PA_TRUST_ANCHORS", str(ours.ca.ca))
    code, out, _ = run(capsys, "verify", str(signed), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["state"] == "Trusted"
    assert report["trust_anchors"] is True
    assert report["generation"]["job_id"] == "job_9"


@pytest.mark.usefixtures("no_c2pa_env")
def test_verify_tampered_and_unsigned_exit_1(
    capsys: pytest.CaptureFixture[str], signed: Path, clip: Path
) -> None:
    flip_byte_in(signed, b"mdat")
    code, out, _ = run(capsys, "verify", str(signed))
    assert code == 1
    assert out.startswith("INVALID: assertion.bmffHash.mismatch")
    code, out, _ = run(capsys, "verify", str(signed), "--json")
    assert code == 1
    assert "assertion.bmffHash.mismatch" in [f["code"] for f in json.loads(out)["failures"]]
    code, out, _ = run(capsys, "verify", str(clip))
    assert code == 1
    assert out == "no manifest: this video carries no C2PA provenance data\n"


@pytest.mark.usefixtures("no_c2pa_env")
def test_verify_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], clip: Path, tmp_path: Path
) -> None:
    text = tmp_path / "readme.txt"
    text.write_text("just words\n" * 40)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:4000])
    cases = [
        ((str(text),), "is not an MP4 or MOV video"),
        ((str(cut),), "is not a readable video"),
        ((str(tmp_path / "gone.mp4"),), "does not exist"),
        ((str(clip), "--trust", str(text)), "hold no PEM certificate"),
    ]
    for args, words in cases:
        code, out, err = run(capsys, "verify", *args)
        assert code == 2, (args, err)
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert words in err
        assert "Traceback" not in err


def test_dev_ca_prints_the_two_variables_and_they_work(tmp_path: Path, clip: Path) -> None:
    proc = vidgate("provenance", "dev-ca", "keys", env={}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = (tmp_path / "keys").resolve()
    assert proc.stdout.splitlines() == [
        f"export VIDGATE_C2PA_CERT={folder / 'cert.pem'}",
        f"export VIDGATE_C2PA_KEY={folder / 'key.pem'}",
    ]
    again = vidgate("provenance", "dev-ca", "keys", env={}, cwd=tmp_path)
    assert again.returncode == 2
    assert "pass --force" in again.stderr


def test_worker_and_serve_refuse_a_bad_pair_at_start_up(tmp_path: Path, ours: Pair) -> None:
    from vidgate.provenance.devca import make_dev_ca

    other = make_dev_ca(tmp_path / "other")
    mismatched = {
        "VIDGATE_HOME": str(tmp_path / "home"),
        "VIDGATE_C2PA_CERT": str(ours.ca.cert),
        "VIDGATE_C2PA_KEY": str(other.key),
    }
    for command in (["worker", "--sandbox"], ["serve", "--sandbox", "--port", "1"]):
        proc = vidgate(*command, env=mismatched, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "VIDGATE_C2PA_KEY does not belong to the certificate" in proc.stderr
    # no job ran: the database was never created
    assert not (tmp_path / "home" / "vidgate.db").exists()
    only_cert = {"VIDGATE_HOME": str(tmp_path / "home"), "VIDGATE_C2PA_CERT": str(ours.ca.cert)}
    proc = vidgate("worker", "--sandbox", env=only_cert, cwd=tmp_path)
    assert proc.returncode == 2
    assert "VIDGATE_C2PA_CERT is set but VIDGATE_C2PA_KEY is not" in proc.stderr


@pytest.mark.parametrize("problem", ["self-signed", "serverAuth EKU", "expired"])
def test_worker_start_names_the_fix_for_each_bad_certificate(
    problem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_c2pa_env: None,
) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography.x509.oid import ExtendedKeyUsageOID

    from tests.provenance.test_keys import self_signed
    from vidgate.provenance.devca import new_ca, new_leaf

    ca = new_ca()
    if problem == "self-signed":
        leaf, chain = self_signed(), b""
        words = "self-signed, and c2pa refuses to sign with a self-signed certificate"
    elif problem == "serverAuth EKU":
        leaf, chain = new_leaf(ca, ekus=[ExtendedKeyUsageOID.SERVER_AUTH]), ca.cert_pem
        words = "has extended key usage serverAuth, not one C2PA signs with"
    else:
        past = datetime.now(UTC) - timedelta(days=10)
        leaf, chain = new_leaf(ca, not_before=past, days=5), ca.cert_pem
        words = "expired on"
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem + chain)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    monkeypatch.setenv("VIDGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDGATE_C2PA_CERT", str(tmp_path / "cert.pem"))
    monkeypatch.setenv("VIDGATE_C2PA_KEY", str(tmp_path / "key.pem"))
    code, out, err = run(capsys, "worker", "--sandbox")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert words in err
    assert "vidgate provenance dev-ca DIR" in err
