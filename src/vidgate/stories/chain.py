"""Frame chaining: the last frame of a segment as the next one's first frame, and how well
two segments meet (a continuity score at each join).

The score is the normalised cross-correlation of the two frames as small grey images
(64×36 by default): 1.0 for the same picture, near 0 for unrelated ones. It ignores a
uniform change of brightness or contrast, which codecs and models introduce at a join, and
costs microseconds, so every join of every story is scored.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

#: a join scoring below this is flagged in the story record (not failed: models drift)
CONTINUITY_MIN = 0.5
_SMALL = (64, 36)


def _frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def last_frame(path: Path) -> av.VideoFrame:
    """The last decodable frame of a video file."""
    frames = _frames(path)
    if not frames:
        raise ValueError(f"{path.name} has no video frames")
    return frames[-1]


def frame_at(path: Path, index: int) -> av.VideoFrame:
    """Frame ``index`` of a video (clamped to the last one)."""
    frames = _frames(path)
    if not frames:
        raise ValueError(f"{path.name} has no video frames")
    return frames[min(max(index, 0), len(frames) - 1)]


def png_data_url(frame: av.VideoFrame) -> str:
    """A frame as a PNG ``data:`` URL, the form a first-frame reference takes."""
    buf = io.BytesIO()
    frame.to_image().save(buf, format="PNG")  # type: ignore[no-untyped-call]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _small_gray(frame: av.VideoFrame) -> NDArray[np.float64]:
    small = frame.reformat(width=_SMALL[0], height=_SMALL[1], format="gray")
    return small.to_ndarray().astype(np.float64)


def similarity(a: av.VideoFrame, b: av.VideoFrame) -> float:
    """Normalised cross-correlation of two frames (downscaled, grey), in [-1, 1]."""
    x, y = _small_gray(a), _small_gray(b)
    x -= x.mean()
    y -= y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    if denom == 0.0:
        # flat frames: the same flat picture is continuous, different levels are not
        return 1.0 if np.allclose(_small_gray(a), _small_gray(b), atol=2.0) else 0.0
    return float((x * y).sum() / denom)


def join_score(before: Path, after: Path, skip: int = 0) -> float:
    """How well ``after`` continues ``before``: its first kept frame (after ``skip``
    repeated frames) against ``before``'s last frame."""
    return round(similarity(last_frame(before), frame_at(after, skip)), 4)
