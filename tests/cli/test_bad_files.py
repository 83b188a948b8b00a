"""The new file-taking commands (check, verify, story, provenance dev-ca) given the wrong
thing: a missing file, a directory, a device that never ends, an empty or non-video file,
an impossible output place. Each is one line on stderr, exit 2, no traceback, and nothing
is paid for or overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error, vidgate
from vidgate.stories.spec import MAX_STORY_BYTES

STORY = "title: t\nresolution: 480p\nshots: [{prompt: a fox, duration: 2}]\n"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello\n")
    (tmp_path / "s.yaml").write_text(STORY)
    (tmp_path / "latin1.yaml").write_bytes(STORY.replace("fox", "fo\xe9").encode("latin-1"))
    (tmp_path / "huge.yaml").write_text("# " + "x" * MAX_STORY_BYTES + "\n" + STORY)
    return tmp_path


CASES: list[tuple[list[str], tuple[str, ...]]] = [
    (["check", "{d}/missing.mp4"], ("no such file",)),
    (["check", "{d}/folder"], ("is a directory",)),
    (["check", "/dev/zero"], ("not a regular file",)),
    (["check", "{d}/empty.mp4"], ("not a readable video",)),
    (["check", "{d}/text.mp4"], ("not a readable video",)),
    (["verify", "{d}/missing.mp4"], ("does not exist",)),
    (["verify", "{d}/folder"], ("is a directory",)),
    (["verify", "{d}/empty.mp4"], ("not an MP4 or MOV",)),
    (["verify", "{d}/text.mp4", "--trust", "{d}/folder"], ("trust anchors",)),
    (["story", "{d}/missing.yaml", "--dry-run"], ("not found",)),
    (["story", "{d}/folder", "--dry-run"], ("a directory",)),
    (["story", "/dev/zero", "--dry-run"], ("not a regular file",)),
    (["story", "{d}/huge.yaml", "--dry-run"], (f"over {MAX_STORY_BYTES} bytes",)),
    (["story", "{d}/latin1.yaml", "--dry-run"], ("not UTF-8",)),
    (["story", "{d}/empty.mp4", "--dry-run"], ("a story is a mapping",)),
    (["story", "{d}/s.yaml", "-o", "{d}/folder"], ("is a directory",)),
    (["story", "{d}/s.yaml", "-o", "/proc/no/film.mp4"], ("cannot make its folder",)),
    (["story", "{d}/s.yaml", "-o", "{d}/s.yaml/film.mp4"], ("cannot make its folder",)),
    (["provenance", "dev-ca", "{d}/s.yaml"], ("is a file",)),
    (["provenance", "dev-ca", "/proc/no/ca"], ("cannot write the development CA",)),
    (["provenance", "dev-ca", "{d}/s.yaml/ca"], ("cannot write the development CA",)),
]


@pytest.mark.parametrize(("args", "fragments"), CASES, ids=lambda v: " ".join(v)[:60])
def test_bad_files_are_one_line_exit_2(
    files: Path, args: list[str], fragments: tuple[str, ...]
) -> None:
    proc = vidgate(*(a.format(d=files) for a in args), home=files / "home", timeout=60)
    assert_one_line_error(proc, *fragments)


def test_story_to_a_bad_output_pays_for_nothing(files: Path) -> None:
    home = files / "home"
    assert_one_line_error(
        vidgate("story", str(files / "s.yaml"), "-o", str(files / "folder"), home=home),
        "is a directory",
    )
    # the same story to a good place is a new story, not a resumed one: nothing was stored
    ok = vidgate("story", str(files / "s.yaml"), "-o", str(files / "film.mp4"), home=home)
    assert ok.returncode == 0, ok.stderr
    assert "resuming" not in ok.stderr
    assert (files / "film.mp4").stat().st_size > 0


def test_dev_ca_never_overwrites_keys_silently(files: Path) -> None:
    ca = files / "ca"
    ca.mkdir()
    (ca / "key.pem").write_text("my real key\n")
    (ca / "notes.txt").write_text("keep\n")
    assert_one_line_error(
        vidgate("provenance", "dev-ca", str(ca), home=files / "home"), "already has key.pem"
    )
    assert (ca / "key.pem").read_text() == "my real key\n"
    # a non-empty folder without keys is used, and its other files are left alone
    other = files / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep\n")
    proc = vidgate("provenance", "dev-ca", str(other), home=files / "home")
    assert proc.returncode == 0, proc.stderr
    assert (other / "notes.txt").read_text() == "keep\n"
    assert (other / "key.pem").stat().st_mode & 0o777 == 0o600
