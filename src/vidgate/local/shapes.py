"""A request's shape fitted to what a pipeline takes: rounded (recorded) or refused.

Policy (documented in docs/local-models.md): ``shape: "round"`` (the default) moves each of
frames, size and fps to the nearest value the family takes and records every change as an
adjustment on the job; ``shape: "exact"`` refuses a request that would need any change, with
a message that says what would work.
"""

from __future__ import annotations

import math

from vidgate.local.protocol import Adjustment, ApiError, Constraints, CreateVideo, Shape, parse_size


def _half_up(x: float) -> int:
    # Python's round() goes to even on .5; a rule users read ("nearest") rounds half up.
    return math.floor(x + 0.5)


def nearest_frames(n: int, c: Constraints) -> int:
    if c.fixed_frames is not None:
        return c.fixed_frames
    k = max(1, _half_up((n - 1) / c.frame_step))
    top = (c.max_frames - 1) // c.frame_step
    return min(k, top) * c.frame_step + 1


def nearest_side(v: int, multiple: int) -> int:
    return max(1, _half_up(v / multiple)) * multiple


def requested_frames(req: CreateVideo, fps: float, c: Constraints) -> int:
    if req.num_frames is not None:
        return req.num_frames
    if req.seconds is not None:
        return max(1, _half_up(req.seconds * fps))
    return c.default_frames


def fit(req: CreateVideo, c: Constraints) -> Shape:
    """The shape to run, or ApiError 400 ``invalid_shape`` under ``shape: exact``."""
    adjustments: list[Adjustment] = []
    fps = c.fps
    if req.fps is not None:
        if c.fps_free or req.fps == c.fps:
            fps = req.fps
        else:
            adjustments.append(
                Adjustment("fps", req.fps, c.fps, f"{c.family_label} plays at {c.fps:g} fps")
            )
    frames_asked = requested_frames(req, fps, c)
    frames = nearest_frames(frames_asked, c)
    if frames != frames_asked:
        adjustments.append(
            Adjustment(
                "num_frames", frames_asked, frames, f"{c.family_label} takes {c.frames_rule()}"
            )
        )
    w_asked, h_asked = parse_size(req.size) if req.size else c.default_size
    if c.fixed_size is not None:
        w, h = c.fixed_size
        why = f"{c.family_label} makes {w}x{h} videos"
    else:
        m = c.side_multiple
        w, h = nearest_side(w_asked, m), nearest_side(h_asked, m)
        why = f"{c.family_label} takes sides divisible by {m}"
    if (w, h) != (w_asked, h_asked):
        adjustments.append(Adjustment("size", f"{w_asked}x{h_asked}", f"{w}x{h}", why))
    if adjustments and req.shape == "exact":
        asked = "; ".join(f"{a.field} {a.requested} → {a.used} ({a.why})" for a in adjustments)
        raise ApiError(
            400,
            "invalid_shape",
            f"shape exact: the request needs changes to run: {asked}; send the used values "
            'or shape "round"',
            param=adjustments[0].field,
        )
    return Shape(width=w, height=h, num_frames=frames, fps=fps, adjustments=tuple(adjustments))
