"""Each technical check against a sandbox-rendered clip that must fail it and one that must
pass it; thresholds pinned at their boundaries; `vidgate check` exit codes and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidgate.cli.main import main
from vidgate.sandbox.render import render_mp4
from vidgate.stages.base import CheckResult
from vidgate.stages.checks import CHECKS, THRESHOLDS, Expect, NotAVideo, run_checks

W, H, FPS, DUR = 128, 72, 24, 4.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    out: dict[str, Path] = {}
    specs: dict[str, dict[str, object]] = {
        "clean": {},
        "mute": {"audio": False},
        "square": {"width": 96, "height": 96},
        "slow": {"fps": 12},
        "short": {"duration_s": DUR / 2, "defect": "short"},
        **{
            k: {"defect": k}
            for k in ("black", "frozen", "silent", "truncated", "hard_cut", "flicker")
        },
    }
    for name, kw in specs.items():
        args: dict[str, object] = {
            "width": W,
            "height": H,
            "fps": FPS,
            "duration_s": DUR,
            "audio": True,
            **kw,
        }
        out[name] = render_mp4(d / f"{name}.mp4", **args)  # type: ignore[arg-type]
    return out


ASKED = Expect(duration_s=DUR, size=(W, H), fps=FPS, audio=True)

#: check -> (the clip that must fail it, the expectation it is checked against)
FAILING: dict[str, tuple[str, Expect]] = {
    "duration": ("short", ASKED),
    "resolution": ("clean", Expect(short_side=720)),
    "aspect": ("square", Expect(aspect=16 / 9)),
    "fps": ("slow", ASKED),
    "audio_present": ("mute", ASKED),
    "audio_silence": ("silent", ASKED),
    "black_frames": ("black", ASKED),
    "frozen": ("frozen", ASKED),
    "flicker": ("flicker", ASKED),
    "decode": ("truncated", ASKED),
    "hard_cuts": ("hard_cut", ASKED),
}


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_every_check_has_a_failing_clip() -> None:
    assert set(FAILING) == set(CHECKS)


@pytest.mark.parametrize("check", sorted(FAILING))
def test_check_fails_its_defective_clip(check: str, clips: dict[str, Path]) -> None:
    clip, expect = FAILING[check]
    r = by_name(run_checks(clips[clip], expect))[check]
    assert r.verdict == "fail", r
    assert r.threshold is not None


@pytest.mark.parametrize("check", sorted(FAILING))
def test_check_passes_the_clean_clip(check: str, clips: dict[str, Path]) -> None:
    r = by_name(run_checks(clips["clean"], ASKED))[check]
    assert r.verdict == "pass", r


def test_clean_clip_passes_every_check(clips: dict[str, Path]) -> None:
    results = run_checks(clips["clean"], ASKED)
    assert [r.name for r in results] == list(CHECKS)
    assert {r.verdict for r in results} == {"pass"}


def test_defects_fail_only_what_they_break(clips: dict[str, Path]) -> None:
    # a defect is named by its own check, not drowned in unrelated failures
    for clip, check in [
        ("short", "duration"),
        ("silent", "audio_silence"),
        ("frozen", "frozen"),
        ("hard_cut", "hard_cuts"),
    ]:
        failed = {r.name for r in run_checks(clips[clip], ASKED) if r.verdict == "fail"}
        assert failed == {check}, (clip, failed)


def test_measured_values(clips: dict[str, Path]) -> None:
    c = by_name(run_checks(clips["clean"], ASKED))
    assert c["duration"].value == pytest.approx(DUR, abs=0.05)
    assert c["resolution"].value == f"{W}x{H}"
    assert c["fps"].value == pytest.approx(FPS)
    assert -30 < float(c["audio_silence"].value or 0) < -10  # the sandbox tone: 0.2 FS sine
    black = by_name(run_checks(clips["black"], ASKED))["black_frames"]
    assert float(black.value or 0) == pytest.approx(0.6, abs=0.15)  # black from 30% on
    assert black.frames_s
    assert min(black.frames_s) >= DUR * 0.3 - 0.05
    frozen = by_name(run_checks(clips["frozen"], ASKED))["frozen"]
    assert float(frozen.value or 0) >= DUR * 0.5
    trunc = by_name(run_checks(clips["truncated"], ASKED))
    assert float(trunc["decode"].value or 1) < 0.8
    cut = by_name(run_checks(clips["hard_cut"], ASKED))["hard_cuts"]
    assert cut.value == 1
    assert abs(cut.frames_s[0] - DUR / 2) <= 1.01


def test_duration_tolerance_boundary(clips: dict[str, Path]) -> None:
    rel = THRESHOLDS["duration"].value
    inside = DUR / (1 - rel) - 0.01  # asked a little more: just within 8% of the ask
    outside = DUR / (1 - rel) + 0.05
    ok = by_name(run_checks(clips["clean"], Expect(duration_s=inside)))["duration"]
    bad = by_name(run_checks(clips["clean"], Expect(duration_s=outside)))["duration"]
    assert (ok.verdict, bad.verdict) == ("pass", "fail")
    # the request's own tolerance widens it
    wide = Expect(duration_s=outside + 1, duration_tolerance_s=1.5)
    assert by_name(run_checks(clips["clean"], wide))["duration"].verdict == "pass"


def test_fps_and_resolution_boundaries(clips: dict[str, Path]) -> None:
    at = by_name(run_checks(clips["clean"], Expect(fps=FPS * (1 + THRESHOLDS["fps"].value))))
    assert at["fps"].verdict == "pass"
    off = by_name(run_checks(clips["clean"], Expect(fps=FPS * 1.05)))
    assert off["fps"].verdict == "fail"
    # a tier whose 95% the short side reaches passes; the next tier up does not
    assert (
        by_name(run_checks(clips["clean"], Expect(short_side=75)))["resolution"].verdict == "pass"
    )
    assert (
        by_name(run_checks(clips["clean"], Expect(short_side=76)))["resolution"].verdict == "fail"
    )
    # 12 fps is the floor when no rate was asked
    assert by_name(run_checks(clips["slow"], Expect()))["fps"].verdict == "pass"


def test_unasked_checks_are_skipped_not_passed(clips: dict[str, Path]) -> None:
    r = by_name(run_checks(clips["mute"], Expect()))
    assert r["duration"].verdict == "skipped"
    assert r["audio_present"].verdict == "skipped"
    assert r["audio_silence"].verdict == "skipped"
    # a silent track nobody asked for is not held against the clip
    quiet = by_name(run_checks(clips["silent"], Expect(audio=False)))
    assert quiet["audio_silence"].verdict == "skipped"


def test_multi_shot_allows_cuts_and_only_limits_checks(clips: dict[str, Path]) -> None:
    r = by_name(run_checks(clips["hard_cut"], Expect(single_shot=False)))
    assert r["hard_cuts"].verdict == "skipped"
    only = run_checks(clips["black"], Expect(only=frozenset({"duration", "black_frames"})))
    assert [x.name for x in only] == ["duration", "black_frames"]
    with pytest.raises(ValueError, match="unknown check"):
        run_checks(clips["clean"], Expect(only=frozenset({"sharpness"})))


def test_not_a_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(NotAVideo, match="not a readable video"):
        run_checks(junk)
    with pytest.raises(NotAVideo):
        run_checks(tmp_path / "missing.mp4")


# -- the CLI ---------------------------------------------------------------------------


def test_cli_exit_codes(clips: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    clean = str(clips["clean"])
    assert main(["check", clean, "--duration", "4", "--resolution", f"{W}x{H}", "--audio"]) == 0
    assert main(["check", str(clips["black"])]) == 1
    assert main(["check", str(clips["mute"]), "--audio"]) == 1
    out = capsys.readouterr().out
    assert "black_frames" in out
    assert "audio_present" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["check", "{dir}/missing.mp4"], "no such file"),
        (["check"], "give the video file"),
        (["check", "{dir}/junk.mp4"], "not a readable video"),
        (["check", "{clean}", "--resolution", "huge"], "unknown resolution"),
        (["check", "{clean}", "--resolution", "12xq"], "not WxH"),
        (["check", "{clean}", "--aspect", "wide"], "not W:H"),
        (["check", "{clean}", "--duration", "-3"], "duration"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    args: list[str],
    fragment: str,
    clips: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"garbage" * 50)
    argv = [a.format(dir=tmp_path, clean=clips["clean"]) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_cli_json(clips: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(clips["truncated"]), "--duration", "4", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "fail"
    checks = {c["name"]: c for c in data["checks"]}
    assert list(checks) == list(CHECKS)
    for c in checks.values():
        assert {"name", "value", "threshold", "verdict"} <= set(c)
    assert checks["decode"]["verdict"] == "fail"
    assert checks["decode"]["threshold"] == THRESHOLDS["decode"].value
    assert checks["duration"]["verdict"] == "fail"
    assert main(["check", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["checks"] == list(CHECKS)
