"""The story file: a pydantic model of a multi-shot film, read from YAML or JSON.

Every problem found is reported at once, each with the field, the line of the file it sits
on and what would work (``story.yaml:9: shots[1].duration: must be above 0 seconds``), so a
writer fixes a file in one pass. Line numbers come from PyYAML's composed node tree (its
marks), which JSON files get too: JSON is read as the YAML it is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vidgate.errors import InvalidRequest
from vidgate.types import QualityGate, QualityTier, Resolution, parse_aspect

MAX_SHOTS = 200
MAX_STORY_BYTES = 1_000_000
MAX_SHOT_S = 600.0  # ten minutes a shot; longer ones are made of segments anyway
#: the longest film one story makes: every shot is paid for before the film exists, so a
#: story of MAX_SHOTS ten-minute shots (33 hours) is refused before anything is reserved
MAX_FILM_S = 3600.0
_NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$"
_TRANSITION = re.compile(r"^(cut|crossfade)(?::(\d+(?:\.\d+)?))?$")
DEFAULT_CROSSFADE_S = 0.5


class _Spec(BaseModel):
    # YAML reads .inf and .nan as numbers; no time, gain or budget of a story is infinite
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Look(_Spec):
    """A character or a style: a description added to prompts, and reference images passed
    to offerings that take subject (character) or style references."""

    description: Annotated[str, Field(min_length=1, max_length=1000)]
    #: image paths (relative to the story file) or http(s)/data: URLs
    references: Annotated[list[str], Field(max_length=4)] = Field(default_factory=list)


class StoryQuality(QualityGate):
    """A quality gate for shots, with the model tier: the request's ``quality`` object."""

    #: the minimum model tier (as ``quality: standard`` does on its own)
    tier: QualityTier | None = None

    def gate(self) -> QualityGate:
        return QualityGate.model_validate(self.model_dump(exclude={"tier"}))


#: ``quality:`` is a tier (``standard``) or a gate with an optional tier
QualitySetting = QualityTier | StoryQuality


class Transition(_Spec):
    kind: Literal["cut", "crossfade"] = "cut"
    seconds: float = 0.0


class Shot(_Spec):
    prompt: Annotated[str, Field(min_length=1, max_length=4000)]
    duration: Annotated[float, Field(gt=0, le=MAX_SHOT_S)]
    #: camera direction appended to the prompt ("slow dolly in", "static wide")
    camera: Annotated[str | None, Field(max_length=200)] = None
    characters: Annotated[list[str], Field(max_length=8)] = Field(default_factory=list)
    style: str | None = None
    #: how this shot begins: ``cut``, ``crossfade`` or ``crossfade:0.8`` (seconds)
    transition: str = "cut"
    #: native: the model's own sound; none: silent; soundtrack: only the story's soundtrack
    audio: Literal["native", "none", "soundtrack"] | None = None
    #: this shot's tier and quality gate, instead of the story's
    quality: QualitySetting | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is blank; describe what the shot shows")
        return v.strip()

    @field_validator("duration", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("a number of seconds is expected, e.g. 5")
        return v

    @field_validator("transition")
    @classmethod
    def _transition(cls, v: str) -> str:
        m = _TRANSITION.match(v.strip())
        if not m:
            raise ValueError(f"transition {v!r}: use cut, crossfade or crossfade:SECONDS")
        if m.group(2) is not None and not 0 < float(m.group(2)) <= 5:
            raise ValueError("a crossfade lasts more than 0 and at most 5 seconds")
        return v.strip()

    def transition_in(self) -> Transition:
        m = _TRANSITION.match(self.transition)
        assert m is not None  # checked by the validator
        if m.group(1) == "cut":
            return Transition()
        return Transition(kind="crossfade", seconds=float(m.group(2) or DEFAULT_CROSSFADE_S))


class Soundtrack(_Spec):
    file: Annotated[str, Field(min_length=1)]
    #: gain in dB applied to the soundtrack before mixing (negative: quieter)
    gain_db: Annotated[float, Field(ge=-60, le=20)] = 0.0
    #: lower the soundtrack under native sound and voice-over
    duck: bool = False


class VoiceOver(_Spec):
    file: Annotated[str, Field(min_length=1)]
    #: film time (seconds) the voice-over starts at
    at: Annotated[float, Field(ge=0)] = 0.0


class Caption(_Spec):
    text: Annotated[str, Field(min_length=1, max_length=500)]
    start: Annotated[float, Field(ge=0)]
    end: Annotated[float, Field(gt=0)]


class Captions(_Spec):
    items: Annotated[list[Caption], Field(max_length=2000)] = Field(default_factory=list)
    #: also draw them into the picture (the sidecar file is always written)
    burn: bool = False
    format: Literal["vtt", "srt"] = "vtt"


class Story(_Spec):
    title: Annotated[str, Field(min_length=1, max_length=200)]
    aspect: str = "16:9"
    resolution: Resolution = Resolution.R720P
    fps: Annotated[int, Field(ge=8, le=60)] = 24
    #: routing policy for every shot: cheapest, fastest, best-quality or balanced
    policy: str = "cheapest"
    #: the minimum model tier, or a quality gate every shot's job gets (the request's
    #: ``quality`` object: min_score, checks, on_fail...), unless a shot gives its own
    quality: QualitySetting | None = None
    #: the most the whole story may cost (USD): the plan must fit under it, and no shot is
    #: started that could take the story past it
    budget: Annotated[float | None, Field(gt=0, le=100_000)] = None
    deadline: datetime | None = None
    #: one seed for every shot whose model takes seeds (derived from the title when unset)
    seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None
    characters: dict[str, Look] = Field(default_factory=dict)
    styles: dict[str, Look] = Field(default_factory=dict)
    #: the style every shot has unless it names its own
    style: str | None = None
    shots: Annotated[list[Shot], Field(min_length=1, max_length=MAX_SHOTS)]
    soundtrack: Soundtrack | None = None
    voiceover: Annotated[list[VoiceOver], Field(max_length=50)] = Field(default_factory=list)
    captions: Captions | None = None
    #: loudness target of the film's mix (LUFS)
    loudness: Annotated[float, Field(ge=-40, le=-5)] = -14.0

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, v: str) -> str:
        parse_aspect(v)
        return v.strip()

    @field_validator("resolution", mode="before")
    @classmethod
    def _res(cls, v: Any) -> Any:
        return Resolution.parse(v) if isinstance(v, str) else v

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        from vidgate.routing.policies import POLICIES

        if v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; use one of {', '.join(POLICIES)}")
        return v

    @field_validator("soundtrack", mode="before")
    @classmethod
    def _soundtrack(cls, v: Any) -> Any:
        return {"file": v} if isinstance(v, str) else v

    @field_validator("voiceover", mode="before")
    @classmethod
    def _voiceover(cls, v: Any) -> Any:
        return [{"file": v}] if isinstance(v, str) else v

    @field_validator("captions", mode="before")
    @classmethod
    def _captions(cls, v: Any) -> Any:
        return {"items": v} if isinstance(v, list) else v

    def story_seed(self) -> int:
        """The story's one seed: given, or derived from the title (stable across runs)."""
        if self.seed is not None:
            return self.seed
        return int(hashlib.sha256(self.title.encode()).hexdigest()[:8], 16)

    def shot_quality(self, shot: Shot) -> tuple[QualityTier | None, QualityGate | None]:
        """(minimum tier, quality gate) of a shot: its own ``quality``, else the story's."""
        q = shot.quality if shot.quality is not None else self.quality
        if isinstance(q, StoryQuality):
            return q.tier, q.gate()
        return q, None

    def shot_audio(self, shot: Shot) -> str:
        if shot.audio is not None:
            return shot.audio
        return "soundtrack" if self.soundtrack is not None else "none"

    @property
    def duration_s(self) -> float:
        return sum(s.duration for s in self.shots)


# --- errors with lines ---------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a story file: where (field path and line) and what would work."""

    loc: tuple[str | int, ...]
    message: str
    line: int | None = None

    @property
    def field(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or "story"

    def render(self, source: str = "story") -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.field}: {self.message}" if self.loc else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "line": self.line, "message": self.message}


class StoryInvalid(InvalidRequest):
    """A story file with problems; ``problems`` lists each one (field, line, message)."""

    code = "invalid_story"

    def __init__(self, problems: list[Problem], source: str = "story") -> None:
        self.problems = problems
        self.source = source
        lines = [p.render(source) for p in problems]
        super().__init__("; ".join(lines), details={"errors": [p.as_dict() for p in problems]})

    def lines(self) -> list[str]:
        return [p.render(self.source) for p in self.problems]


@dataclass
class Marks:
    """Line (1-based) of every key and value in the file, by field path."""

    values: dict[tuple[Any, ...], int] = field(default_factory=dict)
    keys: dict[tuple[Any, ...], int] = field(default_factory=dict)

    @classmethod
    def of(cls, node: Node | None) -> Marks:
        marks = cls()
        if node is not None:
            marks._walk(node, ())
        return marks

    def _walk(self, node: Node, path: tuple[Any, ...]) -> None:
        self.values[path] = node.start_mark.line + 1
        if isinstance(node, MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, ScalarNode) else str(k.value)
                self.keys[(*path, key)] = k.start_mark.line + 1
                self._walk(v, (*path, key))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i))

    def line(self, loc: tuple[Any, ...], *, key: bool = False) -> int | None:
        """The line of ``loc``, or of its nearest ancestor present in the file."""
        loc = tuple(loc)
        if key and loc in self.keys:
            return self.keys[loc]
        while loc:
            if loc in self.values:
                return self.values[loc]
            loc = loc[:-1]
        return self.values.get(())


def _parse(text: str, source: str) -> tuple[Any, Marks]:
    if len(text.encode()) > MAX_STORY_BYTES:
        raise StoryInvalid(
            [Problem((), f"the file is over {MAX_STORY_BYTES} bytes; split the story")], source
        )
    try:
        # libyaml's loader where built (a data: URL of a soundtrack is a long scalar that
        # the pure-Python scanner takes minutes over); both keep line marks
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)  # a safe loader (C or Python)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StoryInvalid(
            [Problem((), f"not valid YAML or JSON ({why}); check indentation and quotes", line)],
            source,
        ) from None
    return data, Marks.of(node)


def _pydantic_problems(e: ValidationError, marks: Marks) -> list[Problem]:
    out = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if p != "__root__")
        msg = str(err["msg"]).removeprefix("Value error, ")
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = f"unknown field; the fields here are {_fields_at(loc[:-1])}"
            out.append(Problem(loc, msg, marks.line(loc, key=True)))
            continue
        if kind == "missing":
            msg = "is required" + ("; e.g. duration: 5" if loc and loc[-1] == "duration" else "")
        elif kind == "greater_than" and loc and loc[-1] == "duration":
            msg = f"{err.get('input')!r} seconds: a duration must be above 0, e.g. 5"
        elif kind == "less_than_equal" and loc and loc[-1] == "duration":
            msg = (
                f"{err.get('input')!r} seconds: a shot lasts at most {MAX_SHOT_S:g} s; "
                "split it into several shots"
            )
        out.append(Problem(loc, msg, marks.line(loc)))
    return out


def _fields_at(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Story
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            break
        inner = _model_in(info.annotation)
        if inner is None:
            # a dict of looks: the next part is the character's or style's name
            if str(part) in ("characters", "styles"):
                model = Look
            continue
        model = inner
    return ", ".join(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://", "data:"))


def _as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _check_refs(data: dict[str, Any], base_dir: Path | None, marks: Marks) -> list[Problem]:
    """Names that must exist (characters, styles) and files that must be readable.

    Read from the raw data, so these are found even where other fields are invalid: every
    problem of the file is reported in one pass."""
    out: list[Problem] = []
    characters = _as_dict(data.get("characters"))
    styles = _as_dict(data.get("styles"))
    loc: tuple[Any, ...]
    for i, raw in enumerate(_as_list(data.get("shots"))):
        shot = _as_dict(raw)
        for j, name in enumerate(_as_list(shot.get("characters"))):
            if isinstance(name, str) and name not in characters:
                have = ", ".join(sorted(characters)) or "none are defined"
                loc = ("shots", i, "characters", j)
                out.append(
                    Problem(
                        loc,
                        f"unknown character {name!r}; define it under characters: "
                        f"(defined: {have})",
                        marks.line(loc),
                    )
                )
        style = shot.get("style")
        if isinstance(style, str) and style not in styles:
            loc = ("shots", i, "style")
            have = ", ".join(sorted(styles)) or "none are defined"
            out.append(
                Problem(
                    loc,
                    f"unknown style {style!r}; define it under styles: (defined: {have})",
                    marks.line(loc),
                )
            )
        if shot.get("audio") == "soundtrack" and not data.get("soundtrack"):
            loc = ("shots", i, "audio")
            out.append(
                Problem(
                    loc,
                    "audio: soundtrack needs a soundtrack: file at the top level; "
                    "or use native or none",
                    marks.line(loc),
                )
            )
    style = data.get("style")
    if isinstance(style, str) and style not in styles:
        out.append(
            Problem(
                ("style",),
                f"unknown style {style!r}; define it under styles:",
                marks.line(("style",)),
            )
        )
    for group, looks in (("characters", characters), ("styles", styles)):
        for name, look in looks.items():
            if not re.match(_NAME, str(name)):
                loc = (group, name)
                out.append(
                    Problem(
                        loc,
                        "names are 1-64 letters, digits, spaces, '-', '_' or '.'",
                        marks.line(loc, key=True),
                    )
                )
            for j, ref in enumerate(_as_list(_as_dict(look).get("references"))):
                if isinstance(ref, str):
                    loc = (group, name, "references", j)
                    out += _file_problem(ref, base_dir, loc, marks, "image")
    track = data.get("soundtrack")
    if isinstance(track, str):
        out += _file_problem(track, base_dir, ("soundtrack",), marks, "audio")
    elif isinstance(f := _as_dict(track).get("file"), str):
        out += _file_problem(f, base_dir, ("soundtrack", "file"), marks, "audio")
    vo = data.get("voiceover")
    if isinstance(vo, str):
        out += _file_problem(vo, base_dir, ("voiceover",), marks, "audio")
    for j, item in enumerate(_as_list(vo)):
        f = _as_dict(item).get("file")
        if isinstance(f, str):
            out += _file_problem(f, base_dir, ("voiceover", j, "file"), marks, "audio")
    return out


def _check_story(story: Story, marks: Marks) -> list[Problem]:
    """Rules across fields of a valid story."""
    out: list[Problem] = []
    film_s = story.duration_s
    if film_s > MAX_FILM_S:
        out.append(
            Problem(
                ("shots",),
                f"the shots last {film_s:g} s in all; a story makes at most {MAX_FILM_S:g} s "
                "of film: split it into several stories",
                marks.line(("shots",), key=True),
            )
        )
    for j, vo in enumerate(story.voiceover):
        if vo.at >= film_s:
            loc: tuple[Any, ...] = ("voiceover", j, "at")
            out.append(
                Problem(
                    loc,
                    f"starts at {vo.at:g} s, after the shots end ({film_s:g} s); "
                    "use a time within the film",
                    marks.line(loc),
                )
            )
    if story.captions is not None:
        for j, cap in enumerate(story.captions.items):
            loc = ("captions", "items", j)
            if cap.end <= cap.start:
                out.append(
                    Problem(loc, "a caption ends after it starts (end > start)", marks.line(loc))
                )
            elif cap.start >= film_s:
                out.append(
                    Problem(
                        loc,
                        f"starts at {cap.start:g} s, after the shots end ({film_s:g} s); "
                        "use a time within the film",
                        marks.line(loc),
                    )
                )
    return out


def _repaired(data: dict[str, Any], problems: list[Problem]) -> Story | None:
    """The story without the parts that have problems (invalid shots dropped, unknown names
    removed, invalid top-level fields back to their defaults), or None when nothing valid
    is left. It lets later checks (the budget against the plan) still run and report."""
    fixed = dict(data)
    shot_problems = [p for p in problems if len(p.loc) > 1 and p.loc[0] == "shots"]
    # a shot whose only problem is a name (character, style) or audio is kept without it
    mendable = ("characters", "style", "audio")
    bad_shots = {p.loc[1] for p in shot_problems if len(p.loc) < 3 or p.loc[2] not in mendable}
    unset = {(p.loc[1], p.loc[2]) for p in shot_problems if len(p.loc) > 2 and p.loc[2] in mendable}
    for p in problems:
        if p.loc and p.loc[0] not in ("shots", "title") and p.loc[0] in fixed:
            fixed.pop(p.loc[0])
    known = set(_as_dict(fixed.get("characters")))
    shots = []
    for i, raw in enumerate(_as_list(data.get("shots"))):
        if i in bad_shots or not isinstance(raw, dict):
            continue
        shot = {k: v for k, v in raw.items() if (i, k) not in unset or k == "characters"}
        if "characters" in shot:
            shot["characters"] = [c for c in _as_list(shot["characters"]) if c in known]
        shots.append(shot)
    fixed["shots"] = shots
    try:
        return Story.model_validate(fixed)
    except ValidationError:
        return None


def _file_problem(
    ref: str, base_dir: Path | None, loc: tuple[Any, ...], marks: Marks, what: str
) -> list[Problem]:
    if what == "audio" and ref.startswith(("http://", "https://")):
        # sound is never fetched (the film is assembled from local files or data: URLs), so
        # an audio URL would fail the story only after every shot was paid for
        where = "a local file or " if base_dir is not None else ""
        return [
            Problem(
                loc,
                f"a sound file is {where}a data: URL (data:audio/wav;base64,...), not an "
                "http(s) URL",
                marks.line(loc),
            )
        ]
    if what == "audio" and ref.startswith("data:"):
        return _audio_problem(ref, loc, marks)
    if _is_url(ref):
        return []
    if base_dir is None:
        return [
            Problem(
                loc,
                f"{ref!r}: a story sent over HTTP names files as http(s):// or data: URLs",
                marks.line(loc),
            )
        ]
    path = (base_dir / ref).expanduser()
    if not path.is_file():
        return [
            Problem(
                loc,
                f"{what} file {ref!r} not found (looked in {base_dir}); give a path relative "
                "to the story file or an http(s) URL",
                marks.line(loc),
            )
        ]
    if what == "audio":
        return _audio_problem(path, loc, marks)
    return []


def _audio_problem(src: str | Path, loc: tuple[Any, ...], marks: Marks) -> list[Problem]:
    """A sound file that FFmpeg cannot open as audio is refused now, not when the film is
    assembled after every shot was paid for. Only the container's header is read."""
    import base64
    import binascii
    import io

    import av

    name = str(src) if isinstance(src, Path) else "the data: URL"
    try:
        if isinstance(src, Path):
            data: Any = str(src)
        else:
            payload = src.partition(",")[2]
            data = io.BytesIO(base64.b64decode(payload, validate=True))
            if not data.getbuffer().nbytes:
                raise ValueError("it is empty")
        with av.open(data) as c:
            if not c.streams.audio:
                raise ValueError("it has no audio stream")
    except (av.error.FFmpegError, binascii.Error, ValueError, OSError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [
            Problem(
                loc,
                f"{name} is not a readable sound file ({why[:120]}); give WAV, MP3 or M4A audio",
                marks.line(loc),
            )
        ]
    return []


@dataclass
class LoadedStory:
    story: Story
    marks: Marks
    source: str
    #: where relative file names resolve (None: the story came over HTTP)
    base_dir: Path | None

    def resolve(self, ref: str) -> str | Path:
        """A reference as a URL, or as a local path (CLI stories only)."""
        if _is_url(ref) or self.base_dir is None:
            return ref
        return (self.base_dir / ref).expanduser()


@dataclass
class Checked:
    """A parsed story with every problem found. ``loaded`` is the story itself when it has
    no problems, else what is left of it without the broken parts (or None)."""

    loaded: LoadedStory | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems and self.loaded is not None


def parse_story(text: str, *, source: str = "story", base_dir: Path | None = None) -> Checked:
    """Parse and check a story, collecting every problem."""
    try:
        data, marks = _parse(text, source)
    except StoryInvalid as e:
        return Checked(None, e.problems)
    if not isinstance(data, dict):
        return Checked(None, [Problem((), "a story is a mapping with title: and shots:", 1)])
    problems = _check_refs(data, base_dir, marks)
    try:
        story: Story | None = Story.model_validate(data)
    except ValidationError as e:
        problems = _pydantic_problems(e, marks) + problems
        story = _repaired(data, problems)
    if story is not None:
        problems += _check_story(story, marks)
    problems.sort(key=lambda p: (p.line or 0, p.field))
    if story is not None and story.duration_s > MAX_FILM_S:
        story = None  # not planned at all: planning 33 hours of segments is work refused
    loaded = LoadedStory(story, marks, source, base_dir) if story is not None else None
    return Checked(loaded, problems)


def load_story(text: str, *, source: str = "story", base_dir: Path | None = None) -> LoadedStory:
    """Parse a story or raise :class:`StoryInvalid` naming every problem."""
    checked = parse_story(text, source=source, base_dir=base_dir)
    if not checked.ok or checked.loaded is None:
        raise StoryInvalid(checked.problems, source)
    return checked.loaded


def read_story_file(path: Path) -> str:
    """The story file's text; one line naming the problem when it cannot be (missing, a
    directory or device, over MAX_STORY_BYTES, not UTF-8). Reads at most one byte past the
    limit, so a huge file or /dev/zero is refused without being read."""
    try:
        if not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file"
            if not path.exists():
                what = "not found"
            raise InvalidRequest(f"story file {path}: {what}; give a YAML or JSON story file")
        with path.open("rb") as f:
            raw = f.read(MAX_STORY_BYTES + 1)
        if len(raw) > MAX_STORY_BYTES:
            raise InvalidRequest(
                f"story file {path} is over {MAX_STORY_BYTES} bytes; split the story"
            )
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"story file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise InvalidRequest(f"cannot read story file {path}: {e.strerror or e}") from None


def load_story_file(path: Path) -> LoadedStory:
    return load_story(read_story_file(path), source=str(path), base_dir=path.resolve().parent)


def json_schema() -> dict[str, Any]:
    """The story file's JSON Schema (published as docs/story.schema.json)."""
    schema = Story.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vidgate story"
    return schema
