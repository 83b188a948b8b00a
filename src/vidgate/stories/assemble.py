"""Assemble a story's shot files into one film with PyAV: normalise, join, mix, caption.

Every shot is brought to the story's resolution, frame rate and pixel format and joined by a
cut or a crossfade; the film is H.264 in MP4 with one continuous AAC track (see
:mod:`vidgate.stories.audio`) and, optionally, captions (see :mod:`vidgate.stories.captions`).
When every shot is already uniform (same H.264 parameters as the film, cuts only, no trims, no
burned captions) the video packets are copied, not re-encoded, and the copy is verified by
decoding it; otherwise every frame is decoded, normalised and encoded once.

Durations are exact to the frame: a shot contributes ``round((duration - trims) * fps)``
frames and a crossfade of ``k`` frames overlaps the two shots by ``k`` frames, so the film has
``sum(shot frames) - sum(crossfade frames)`` frames (:func:`planned_frames`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Transition = Literal["cut", "crossfade"]
ShotAudio = Literal["native", "none", "soundtrack"]
PixFmt = Literal["yuv420p", "yuv422p", "yuv444p"]


class AssemblyError(ValueError):
    """A clip or spec that cannot be assembled; the message is one line naming what and why."""


@dataclass(frozen=True)
class ShotClip:
    """One shot's file and how it enters the film.

    ``transition_in`` is how this shot joins the previous one (ignored for the first shot);
    a crossfade overlaps the two shots by ``round(crossfade_s * fps)`` frames. ``audio``:
    ``native`` keeps the file's own sound (silence if it has none), ``none`` drops it,
    ``soundtrack`` drops it and lets the soundtrack play unducked under this shot.
    ``trim_start_s`` / ``trim_end_s`` cut that much from the shot's start / end (frame chaining
    trims the overlap this way). ``label`` names the shot in joins and errors.
    """

    path: Path
    transition_in: Transition = "cut"
    crossfade_s: float = 0.5
    audio: ShotAudio = "native"
    trim_start_s: float = 0.0
    trim_end_s: float = 0.0
    label: str = ""


@dataclass(frozen=True)
class Caption:
    """A caption shown from ``start_s`` to ``end_s`` of the film (seconds)."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class VoiceOver:
    """A voice-over audio file placed at ``start_s`` of the film; it counts as dialogue."""

    path: Path
    start_s: float = 0.0
    gain_db: float = 0.0


@dataclass(frozen=True)
class AssemblySpec:
    """The film's format and sound.

    ``loudness_lufs``: integrated loudness target of the final mix (pyloudnorm, BS.1770).
    ``soundtrack``: an audio (or video-with-audio) file mixed under the shots at
    ``soundtrack_gain_db``, looped if shorter than the film, faded out at the end.
    ``duck_under_dialogue``: lower the soundtrack by ``duck_db`` wherever native shot audio or a
    voice-over is sounding. ``captions`` are written as a sidecar (``caption_format``, next to
    the film) and, with ``burn_captions``, drawn onto the frames. ``crf``/``preset`` are libx264's.
    """

    width: int
    height: int
    fps: int
    pix_fmt: PixFmt = "yuv420p"
    loudness_lufs: float = -14.0
    soundtrack: Path | None = None
    soundtrack_gain_db: float = -6.0
    duck_under_dialogue: bool = False
    duck_db: float = -12.0
    voice_over: tuple[VoiceOver, ...] = ()
    captions: tuple[Caption, ...] = ()
    caption_format: Literal["vtt", "srt"] = "vtt"
    burn_captions: bool = False
    crf: int = 20
    preset: str = "veryfast"
    audio_rate: int = 48_000


@dataclass(frozen=True)
class Join:
    """Where shot ``index`` enters the film (``index`` ≥ 1): a cut at ``at_s``, or a crossfade
    of ``frames`` frames starting at ``at_s``."""

    index: int
    at_s: float
    transition: Transition
    frames: int
    label: str = ""


@dataclass(frozen=True)
class AssemblyResult:
    """What was written: the film, its measured length and format, how it was made."""

    path: Path
    duration_s: float
    frames: int
    width: int
    height: int
    fps: int
    stream_copied: bool
    has_audio: bool
    loudness_lufs: float | None
    joins: tuple[Join, ...] = ()
    shot_starts_s: tuple[float, ...] = ()
    captions_path: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def shot_frames(
    duration_s: float, fps: int, trim_start_s: float = 0.0, trim_end_s: float = 0.0
) -> int:
    """How many film frames a shot of ``duration_s`` contributes after trims (at least 1)."""
    raise NotImplementedError


def planned_frames(
    durations_s: Sequence[float],
    transitions: Sequence[Transition],
    crossfade_s: Sequence[float],
    fps: int,
) -> int:
    """The film's frame count for shots of these durations (``transitions[i]`` and
    ``crossfade_s[i]`` are shot i's way in; entry 0 is ignored). Use it to plan a duration."""
    raise NotImplementedError


def assemble(clips: Sequence[ShotClip], spec: AssemblySpec, out: Path) -> AssemblyResult:
    """Write the film to ``out`` (atomically) and return what was made.

    Raises :class:`AssemblyError` for a missing or undecodable clip, a crossfade longer than
    either shot, trims that leave nothing, or a spec the encoder cannot take."""
    raise NotImplementedError
