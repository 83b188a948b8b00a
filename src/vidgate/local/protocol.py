"""The wire shapes of the model server protocol (docs/model-server-protocol.md), torch-free."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: the largest side a request may ask for; far beyond any served model, but bounded so a
#: typo cannot ask the device for a terabyte of latents
MAX_SIDE = 4096
SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


class ApiError(Exception):
    """An answer with an error body: ``{"error": {"code", "message", "param"?}}``."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param is not None:
            err["param"] = self.param
        return {"error": err}


def parse_size(size: str) -> tuple[int, int]:
    """``"832x480"`` → (width, height)."""
    m = SIZE_RE.match(size)
    if m is None:
        raise ValueError(f"size {size!r} is not WIDTHxHEIGHT (e.g. 832x480)")
    w, h = int(m.group(1)), int(m.group(2))
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise ValueError(f"size {size!r}: each side must be 1..{MAX_SIDE}")
    return w, h


class CreateVideo(BaseModel):
    """``POST /v1/videos``. Unknown fields are refused, so a misspelt one is named, not lost."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=20_000)
    seconds: float | None = Field(default=None, gt=0, le=120)
    size: str | None = None
    fps: float | None = Field(default=None, gt=0, le=120)
    num_frames: int | None = Field(default=None, ge=1, le=2000)
    negative_prompt: str | None = Field(default=None, max_length=20_000)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    steps: int | None = Field(default=None, ge=1, le=1000)
    input_reference: str | None = None
    shape: Literal["round", "exact"] = "round"

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None:
            parse_size(v)
        return v


@dataclass(frozen=True)
class Constraints:
    """What shapes a loaded pipeline takes, read from its components at load time."""

    family_label: str  # "Wan", "LTX-2", … for messages
    frame_step: int  # frames must be frame_step·k + 1 (the VAE's temporal compression)
    side_multiple: int  # each side divisible by this (VAE spatial compression × patch)
    max_frames: int
    fps: float  # the frame rate the model was trained at
    fps_free: bool  # the pipeline takes a frame rate (LTX-2): any fps is used as asked
    default_size: tuple[int, int]  # (width, height)
    default_frames: int
    fixed_frames: int | None = None  # CogVideoX: exactly its sample_frames
    fixed_size: tuple[int, int] | None = None  # image-to-video pipelines that size from the image

    def frames_rule(self) -> str:
        if self.fixed_frames is not None:
            return f"exactly {self.fixed_frames} frames"
        return f"{self.frame_step}k+1 frames (up to {self.max_frames})"

    def wire(self) -> dict[str, Any]:
        w, h = self.default_size
        out: dict[str, Any] = {
            "frames": f"{self.frame_step}k+1",
            "side_multiple": self.side_multiple,
            "max_frames": self.max_frames,
            "fps": self.fps,
            "fps_free": self.fps_free,
            "default_size": f"{w}x{h}",
            "default_frames": self.default_frames,
        }
        if self.fixed_frames is not None:
            out["frames"] = str(self.fixed_frames)
        return out


@dataclass(frozen=True)
class Adjustment:
    field: str
    requested: Any
    used: Any
    why: str


@dataclass(frozen=True)
class Shape:
    """A request's shape as the pipeline will run it."""

    width: int
    height: int
    num_frames: int
    fps: float
    adjustments: tuple[Adjustment, ...] = field(default=())

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def wire_adjustments(self) -> list[dict[str, Any]]:
        return [asdict(a) for a in self.adjustments]


class JobSpec(BaseModel):
    """What a device worker needs to run one job (travels to Ray replicas as plain data)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_frames: int
    fps: float
    seed: int
    guidance_scale: float | None
    steps: int
    image_png: bytes | None = None  # the first frame, decoded and re-encoded once at intake
