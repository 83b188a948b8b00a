"""WORKLOAD.yaml: a description of the traffic a platform expects, for planning and simulation.

A workload names a daily volume of clips and splits it into classes (previews, finals, ...),
each with its share of the volume, a routing policy or a pinned offering, and the request
shape its clips have. Errors name the field and the line of the file they come from::

    workload.yaml line 7: classes[1].share: must be between 0 and 1

Lines come from the YAML node marks (``yaml.compose``), recorded per mapping key and
sequence item, so a pydantic error location maps back to the line a user edits.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from vidgate.catalog.loader import Catalog
from vidgate.errors import ConfigError
from vidgate.sandbox.core import FaultKind
from vidgate.types import (
    AudioMode,
    Constraints,
    LatencyPercentile,
    Mode,
    PolicyWeights,
    QualityTier,
    Reference,
    ReferenceKind,
    ReferenceRole,
    Resolution,
    VideoRequest,
    parse_aspect,
)

#: shares must add up to one within this tolerance
SHARE_TOLERANCE = 1e-6
#: the largest workload file read (a workload is a page of YAML, not a data set)
MAX_WORKLOAD_BYTES = 1_000_000
POLICY_NAMES = ("cheapest", "fastest", "best-quality", "balanced")
#: stand-ins for the inputs a mode needs (a planner has no user images): a 1x1 PNG and an
#: empty MP4 header; routing only looks at their roles, and the sandbox accepts data: URLs
_PLACEHOLDER_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
_PLACEHOLDER_VIDEO = "data:video/mp4;base64,AAAAGGZ0eXBtcDQyAAAAAG1wNDJpc29t"
_MODE_INPUTS: dict[Mode, list[tuple[ReferenceRole, ReferenceKind, str]]] = {
    Mode.TEXT_TO_VIDEO: [],
    Mode.IMAGE_TO_VIDEO: [(ReferenceRole.FIRST_FRAME, ReferenceKind.IMAGE, _PLACEHOLDER_IMAGE)],
    Mode.FIRST_LAST_FRAME: [
        (ReferenceRole.FIRST_FRAME, ReferenceKind.IMAGE, _PLACEHOLDER_IMAGE),
        (ReferenceRole.LAST_FRAME, ReferenceKind.IMAGE, _PLACEHOLDER_IMAGE),
    ],
    Mode.EXTEND: [(ReferenceRole.SOURCE_VIDEO, ReferenceKind.VIDEO, _PLACEHOLDER_VIDEO)],
    Mode.VIDEO_TO_VIDEO: [(ReferenceRole.SOURCE_VIDEO, ReferenceKind.VIDEO, _PLACEHOLDER_VIDEO)],
}

Path_ = tuple[str | int, ...]


class WorkloadError(ConfigError):
    """A workload file is invalid; ``line`` is the 1-based line of the offending field."""

    code = "workload_error"

    def __init__(self, message: str, *, line: int | None = None, field: str = "") -> None:
        super().__init__(message, details={"line": line, "field": field})
        self.line = line
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLA(_Strict):
    """The latency promise: ``percentile`` of clips finish within ``max_latency_s``."""

    max_latency_s: Annotated[float, Field(gt=0, le=86_400)]
    percentile: LatencyPercentile = LatencyPercentile.P90


class PriceOverride(_Strict):
    """A negotiated or third-party price for one offering, in USD per second of output."""

    usd_per_second: Annotated[float, Field(ge=0, le=100)]
    note: Annotated[str | None, Field(max_length=500)] = None


class ClassRequest(_Strict):
    """The shape of a class's clips: any :class:`VideoRequest` field except the prompt and
    the inputs themselves (references, provider options, metadata). A ``mode`` that needs
    inputs (image-to-video...) gets placeholder references of the right roles."""

    mode: Mode = Mode.TEXT_TO_VIDEO
    duration_s: Annotated[float | None, Field(gt=0, le=120)] = None
    duration_tolerance_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    resolution: Resolution = Resolution.R720P
    aspect_ratio: str = "16:9"
    fps: Annotated[int | None, Field(ge=1, le=120)] = None
    audio: AudioMode = AudioMode.NONE
    quality: QualityTier | None = None
    hints: Annotated[list[str], Field(max_length=8)] = Field(default_factory=list)
    weights: PolicyWeights | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    fallback_on_content_rejection: bool = False

    @field_validator("resolution", mode="before")
    @classmethod
    def _res(cls, v: Any) -> Any:
        return Resolution.parse(v) if isinstance(v, str) else v

    @field_validator("audio", mode="before")
    @classmethod
    def _audio(cls, v: Any) -> Any:
        # `audio: true` reads naturally in YAML: native audio required.
        if isinstance(v, bool):
            return AudioMode.REQUIRED if v else AudioMode.NONE
        return v

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect(cls, v: str) -> str:
        parse_aspect(v)
        return v.strip()

    @field_validator("hints")
    @classmethod
    def _hints(cls, v: list[str]) -> list[str]:
        return [h.strip().lower() for h in v]

    def to_request(self, default_duration_s: float, prompt: str) -> VideoRequest:
        data = self.model_dump(exclude={"duration_s"})
        refs = [Reference(role=r, kind=k, url=u) for r, k, u in _MODE_INPUTS[self.mode]]
        return VideoRequest(
            prompt=prompt,
            duration_s=self.duration_s if self.duration_s is not None else default_duration_s,
            references=refs,
            **data,
        )


class WorkloadClass(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    share: float
    policy: Literal["cheapest", "fastest", "best-quality", "balanced"] = "cheapest"
    #: pin: one offering id, or an ordered fallback list (the policy is then not used)
    offering: str | Annotated[list[str], Field(min_length=1, max_length=16)] | None = None
    #: the clips' shape and hard constraints (model strengths a class needs go under
    #: ``request.constraints.required_strengths``, which the router enforces)
    request: ClassRequest = Field(default_factory=ClassRequest)

    @field_validator("share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError("must be between 0 and 1")
        return v

    @property
    def pinned(self) -> list[str] | None:
        if self.offering is None:
            return None
        return [self.offering] if isinstance(self.offering, str) else list(self.offering)


class Fault(_Strict):
    """A failure to inject while simulating. Times are seconds after the simulation starts
    (wall-clock of the emulation); without a window the fault lasts the whole run."""

    kind: FaultKind
    rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    provider: str | None = None
    offering: str | None = None
    model: str | None = None
    start_s: Annotated[float | None, Field(ge=0)] = None
    end_s: Annotated[float | None, Field(gt=0)] = None
    retry_after_s: Annotated[float, Field(ge=0, le=3600)] = 1.0

    @model_validator(mode="after")
    def _target(self) -> Fault:
        named = [k for k in ("provider", "offering", "model") if getattr(self, k) is not None]
        if len(named) > 1:
            raise ValueError(f"name one target, not {' and '.join(named)}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s:g}) must be after start_s ({self.start_s:g})")
        return self


class Workload(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    description: Annotated[str | None, Field(max_length=4000)] = None
    #: clips per day, all classes together
    daily_volume: Annotated[float, Field(gt=0, le=1e9)]
    #: default clip duration (seconds) for classes whose request gives none
    clip_seconds: Annotated[float, Field(gt=0, le=120)] = 5.0
    days_per_month: Annotated[float, Field(gt=0, le=31)] = 30
    sla: SLA | None = None
    #: planned: bill the duration the offering will produce (its nearest allowed one);
    #: requested: rate × requested seconds, the arithmetic of the seed articles' tables
    billing: Literal["planned", "requested"] = "planned"
    price_overrides: dict[str, PriceOverride] = Field(default_factory=dict)
    classes: Annotated[list[WorkloadClass], Field(min_length=1, max_length=64)]
    baselines: Annotated[list[str] | None, Field(max_length=100)] = None
    faults: Annotated[list[Fault], Field(max_length=64)] = Field(default_factory=list)

    _where: str = PrivateAttr(default="workload")
    _lines: dict[Path_, int] = PrivateAttr(default_factory=dict)

    @field_validator("classes")
    @classmethod
    def _shares(cls, v: list[WorkloadClass]) -> list[WorkloadClass]:
        total = sum(c.share for c in v)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"shares sum to {total:.6g}; they must sum to 1")
        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"class names must be unique ({', '.join(dup)} repeated)")
        return v

    # -- locating fields in the source file ---------------------------------------------------

    @property
    def where(self) -> str:
        return self._where

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path`` (or of its nearest ancestor present in the file)."""
        return _line_for(self._lines, path)

    def error(self, path: Path_, message: str) -> WorkloadError:
        """An error about the field at ``path``, naming it and its line."""
        return _error(self._where, self._lines, path, message)

    def checked(self, catalog: Catalog) -> Workload:
        """Check every id the workload names against the catalog; returns self."""
        check_against(self, catalog)
        return self


# --- YAML with line numbers ---------------------------------------------------------------


def _lines_of(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out.setdefault((*path, key), key_node.start_mark.line + 1)
            _lines_of(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.setdefault((*path, i), item.start_mark.line + 1)
            _lines_of(item, (*path, i), out)


def _line_for(lines: dict[Path_, int], path: Path_) -> int | None:
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get(())


def label(path: Iterable[str | int]) -> str:
    """``('classes', 1, 'share')`` -> ``classes[1].share``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _error(where: str, lines: dict[Path_, int], path: Path_, message: str) -> WorkloadError:
    line = _line_for(lines, path)
    at = f" line {line}" if line is not None else ""
    name = label(path)
    return WorkloadError(
        f"{where}{at}: {name + ': ' if name else ''}{message}", line=line, field=name
    )


def _data_path(loc: tuple[str | int, ...], data: Any) -> tuple[Path_, bool]:
    """The part of a pydantic error location that exists in the data (dropping union and
    validator tags), and whether the last element names a missing key."""
    path: list[str | int] = []
    cur = data
    missing = False
    for part in loc:
        if isinstance(cur, dict):
            key = str(part)
            if key in cur:
                path.append(key)
                cur = cur[key]
            else:
                path.append(key)  # a missing required key: name it, point at its parent
                missing = True
                break
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path.append(part)
            cur = cur[part]
        # else: a tag such as 'list[str]' or 'function-after[...]': not part of the file
    return tuple(path), missing


def _model_at(path: Path_) -> type[BaseModel] | None:
    """The pydantic model that the mapping at ``path`` is validated against."""
    tp: Any = Workload
    for part in path:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        else:
            tp = _container_item(tp)
        tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated/unions down to the model or container inside."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[-1]
        else:
            return tp


def _container_item(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


#: keys an older workload format had, and what to write instead (by the model that had them)
_MOVED: dict[tuple[type[BaseModel], str], str] = {
    (WorkloadClass, "require_strengths"): (
        "no longer a class key; move the list under the class's request as "
        "request.constraints.required_strengths, which the router enforces"
    ),
}


def _message(err: Any, path: Path_, missing: bool) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(path[:-1])
        moved = _MOVED.get((model, str(path[-1]))) if model is not None and path else None
        if moved is not None:
            return moved
        allowed = f" (allowed: {', '.join(model.model_fields)})" if model else ""
        return f"unknown key{allowed}"
    if kind == "missing" or missing:
        return "required"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg[0].lower() + msg[1:] if msg[:1].isupper() and msg[1:2].islower() else msg


def parse_workload(text: str, where: str = "workload.yaml") -> Workload:
    """Validate a workload document; errors name the field and its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise WorkloadError(
            f"{where}{at}: not valid YAML: {problem}", line=mark.line + 1 if mark else None
        ) from None
    lines: dict[Path_, int] = {}
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _lines_of(node, (), lines)
    if not isinstance(data, dict):
        raise WorkloadError(f"{where}: expected a mapping with name, daily_volume and classes")
    try:
        workload = Workload.model_validate(data)
    except ValidationError as e:
        # A misspelt key shows up twice (unknown key, missing field): name the typo first.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        first = errors[0]
        path, missing = _data_path(tuple(first["loc"]), data)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        line = _line_for(lines, path[:-1] if missing else path)
        at = f" line {line}" if line is not None else ""
        raise WorkloadError(
            f"{where}{at}: {label(path)}: {_message(first, path, missing)}{more}",
            line=line,
            field=label(path),
        ) from None
    workload._where = where
    workload._lines = lines
    return workload


def load_workload(path: Path, catalog: Catalog | None = None) -> Workload:
    """Read and validate WORKLOAD.yaml; with a catalog, also check the ids it names."""
    try:
        size = path.stat().st_size
        if size > MAX_WORKLOAD_BYTES:
            raise WorkloadError(f"{path}: {size} bytes; a workload is at most 1 MB")
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise WorkloadError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{path}: cannot read it ({e})") from None
    workload = parse_workload(text, str(path))
    if catalog is not None:
        check_against(workload, catalog)
    return workload


# --- checks against the catalog -------------------------------------------------------------


def _suggest(name: str, choices: Iterable[str]) -> str:
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {found[0]!r}?)" if found else ""


def check_against(w: Workload, catalog: Catalog) -> None:
    """Every offering, provider, model and hint the workload names must exist."""
    offerings = catalog.offerings
    providers = sorted({o.provider for o in offerings.values()})
    strengths = sorted({s for m in catalog.models.values() for s in m.quality.strengths})

    def offering(path: Path_, oid: str) -> None:
        if oid not in offerings:
            raise w.error(path, f"unknown offering {oid!r}{_suggest(oid, offerings)}")

    def provider(path: Path_, name: str) -> None:
        if name not in providers:
            raise w.error(path, f"unknown provider {name!r}{_suggest(name, providers)}")

    for i, c in enumerate(w.classes):
        if isinstance(c.offering, str):
            offering(("classes", i, "offering"), c.offering)
        elif c.offering is not None:
            for j, oid in enumerate(c.offering):
                offering(("classes", i, "offering", j), oid)
        for j, h in enumerate(c.request.hints):
            if h not in catalog.hints:
                raise w.error(
                    ("classes", i, "request", "hints", j),
                    f"unknown hint {h!r}{_suggest(h, catalog.hints)}; "
                    f"use {', '.join(sorted(catalog.hints))}",
                )
        cons = c.request.constraints
        for j, s in enumerate(cons.required_strengths):
            if s not in strengths:
                raise w.error(
                    ("classes", i, "request", "constraints", "required_strengths", j),
                    f"no model in the catalog has strength {s!r}{_suggest(s, strengths)}",
                )
        for key in ("allowed_providers", "blocked_providers"):
            for j, name in enumerate(getattr(cons, key) or []):
                provider(("classes", i, "request", "constraints", key, j), name)
    for j, oid in enumerate(w.baselines or []):
        offering(("baselines", j), oid)
    for oid in w.price_overrides:
        offering(("price_overrides", oid), oid)
    for k, f in enumerate(w.faults):
        if f.offering is not None:
            offering(("faults", k, "offering"), f.offering)
        if f.provider is not None:
            provider(("faults", k, "provider"), f.provider)
        if f.model is not None and f.model not in catalog.models:
            pmids = {o.provider_model_id for o in offerings.values()}
            if f.model not in pmids:
                raise w.error(
                    ("faults", k, "model"),
                    f"unknown model {f.model!r}{_suggest(f.model, [*catalog.models, *pmids])}",
                )
