"""Requests fitted to a family's shapes: "round" records each change, "exact" refuses."""

from __future__ import annotations

import pytest

from vidgate.local.protocol import ApiError, Constraints, CreateVideo
from vidgate.local.shapes import fit

# The published rules of the real checkpoints (the tiny ones derive theirs the same way).
WAN = Constraints("Wan 2.1", 4, 16, 81, 16.0, False, (832, 480), 81)
LTX = Constraints("LTX-2", 8, 32, 257, 24.0, True, (768, 512), 121)
COG = Constraints("CogVideoX", 4, 16, 49, 8.0, False, (720, 480), 49, fixed_frames=49)


def req(**kw: object) -> CreateVideo:
    return CreateVideo(model="m", prompt="a fox", **kw)


def test_wan_seconds_round_to_4k_plus_1_and_are_recorded() -> None:
    shape = fit(req(seconds=5, size="832x480"), WAN)
    assert (shape.num_frames, shape.width, shape.height, shape.fps) == (81, 832, 480, 16.0)
    assert [(a.field, a.requested, a.used) for a in shape.adjustments] == [("num_frames", 80, 81)]
    assert "4k+1" in shape.adjustments[0].why
    assert shape.seconds == pytest.approx(81 / 16)


@pytest.mark.parametrize(
    ("asked", "used"), [(1, 5), (5, 5), (6, 5), (7, 9), (8, 9), (9, 9), (80, 81), (81, 81)]
)
def test_wan_frames_go_to_the_nearest_4k_plus_1_half_up(asked: int, used: int) -> None:
    assert fit(req(num_frames=asked, size="832x480"), WAN).num_frames == used


def test_frames_over_the_maximum_are_clamped_to_the_largest_valid() -> None:
    shape = fit(req(num_frames=200, size="832x480"), WAN)
    assert shape.num_frames == 81
    assert "up to 81" in shape.adjustments[0].why


def test_sides_round_to_the_nearest_multiple() -> None:
    shape = fit(req(num_frames=81, size="840x470"), WAN)
    assert (shape.width, shape.height) == (848, 464)
    (adj,) = shape.adjustments
    assert (adj.field, adj.requested, adj.used) == ("size", "840x470", "848x464")
    assert "divisible by 16" in adj.why


def test_a_valid_request_has_no_adjustments_and_passes_exact() -> None:
    shape = fit(req(num_frames=33, size="480x832", shape="exact"), WAN)
    assert shape.adjustments == ()
    assert (shape.width, shape.height, shape.num_frames) == (480, 832, 33)


def test_exact_refuses_and_says_what_would_work() -> None:
    with pytest.raises(ApiError) as e:
        fit(req(num_frames=80, size="833x480", shape="exact"), WAN)
    assert (e.value.status, e.value.code, e.value.param) == (400, "invalid_shape", "num_frames")
    for part in ("80 → 81", "833x480 → 832x480", "4k+1", "divisible by 16"):
        assert part in e.value.message


def test_ltx_takes_8k_plus_1_sides_32_and_any_frame_rate() -> None:
    shape = fit(req(seconds=2, fps=30, size="700x500"), LTX)
    assert shape.fps == 30
    assert shape.num_frames == 57  # 60 asked: 57 (8·7+1) is nearer than 65
    assert (shape.width, shape.height) == (704, 512)
    assert {a.field for a in shape.adjustments} == {"num_frames", "size"}


def test_cogvideox_takes_exactly_49_frames_at_8_fps() -> None:
    shape = fit(req(seconds=10, fps=24), COG)
    assert (shape.num_frames, shape.fps, shape.width, shape.height) == (49, 8.0, 720, 480)
    fields = {a.field: (a.requested, a.used) for a in shape.adjustments}
    assert fields == {"fps": (24, 8.0), "num_frames": (80, 49)}
    with pytest.raises(ApiError, match="exactly 49 frames"):
        fit(req(num_frames=48, shape="exact"), COG)
    assert fit(req(num_frames=49, shape="exact"), COG).adjustments == ()


def test_defaults_are_the_models_own() -> None:
    shape = fit(req(), WAN)
    assert (shape.width, shape.height, shape.num_frames, shape.adjustments) == (832, 480, 81, ())


@pytest.mark.parametrize("size", ["832", "0x480", "832x99999", "axb", "5000x480"])
def test_a_malformed_size_is_refused(size: str) -> None:
    with pytest.raises(ValueError, match="size"):
        req(size=size)
