"""Plan a story: each shot to an offering (kept consistent across shots), each shot longer
than its offering's maximum to segments, and what it all should cost and take.

Routing is the ordinary router's: every shot is an ordinary request. Consistency on top:

* one **primary** offering serves every shot it can (the one that serves the most shots,
  ties to the policy's ranking); a shot it cannot serve goes to the same model elsewhere,
  else the same vendor, else the router's choice, and the plan says why it switched (the
  primary's own rejection reasons for that shot);
* characters' and styles' reference images go to offerings that take subject or style
  references; one seed for the whole story where the model takes seeds.

A shot longer than every feasible offering's maximum is made of **segments**: the offering's
own ``extend`` mode where the catalog declares it (each segment continues the previous
video), else last-frame chaining (segment N's last frame is segment N+1's first frame, by
image-to-video), where the repeated frame is trimmed from N+1.
"""

from __future__ import annotations

import base64
import math
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import DurationSpec, Offering
from vidgate.errors import NoRoute, VidgateError
from vidgate.routing.router import Candidate, Router
from vidgate.stories.spec import LoadedStory, Problem, Shot, Story
from vidgate.types import (
    AudioMode,
    Constraints,
    Mode,
    Reference,
    ReferenceKind,
    ReferenceRole,
    VideoRequest,
    frame_size,
)

#: a 1x1 PNG standing in for the chained frame while planning (the router checks roles only)
PLACEHOLDER_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)
PLACEHOLDER_MP4 = "data:video/mp4;base64,AAAAGGZ0eXBtcDQyAAAAAG1wNDJpc29t"
#: budget-wise, a story plans for this share above the estimate: fallbacks may cost more
EPS = 1e-6
Chain = Literal["none", "extend", "frames"]


class SegmentPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    #: what the child job asks for (the chained reference is added when it is created)
    request: VideoRequest
    #: the offering first, then the fallbacks that take the same request
    offerings: list[str]
    offering_id: str
    #: seconds the offering delivers, seconds of them the film keeps, and where they start
    delivered_s: float
    keep_s: float
    trim_start_s: float = 0.0
    cost_usd: float
    latency_s: float
    #: how this segment starts: fresh, from the previous segment's last frame, or extending
    #: the previous segment's video
    starts: Literal["fresh", "last_frame", "extend"] = "fresh"


class ShotPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    prompt: str
    duration_s: float
    offering_id: str
    model: str
    chain: Chain = "none"
    segments: list[SegmentPlan]
    transition: str
    crossfade_s: float
    audio: str
    #: why this shot does not use the story's primary offering (None when it does)
    switched_because: str | None = None
    references: list[str] = Field(default_factory=list)
    seed: int | None = None

    @property
    def cost_usd(self) -> float:
        return round(sum(s.cost_usd for s in self.segments), 6)

    @property
    def latency_s(self) -> float:
        # segments of one shot run one after another (each starts from the one before)
        return sum(s.latency_s for s in self.segments)

    @property
    def keep_s(self) -> float:
        return sum(s.keep_s for s in self.segments)


class StoryPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    policy: str
    primary: str | None
    width: int
    height: int
    fps: int
    seed: int
    shots: list[ShotPlan]
    budget_usd: float | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return round(sum(s.cost_usd for s in self.shots), 6)

    @property
    def latency_s(self) -> float:
        # shots run side by side; the film waits for the slowest
        return max((s.latency_s for s in self.shots), default=0.0)

    def film_frames(self) -> int:
        """Frames of the assembled film: each shot's kept frames, less crossfade overlaps."""
        total = 0
        for i, s in enumerate(self.shots):
            total += sum(round(seg.keep_s * self.fps) for seg in s.segments)
            if i and s.transition == "crossfade":
                total -= round(s.crossfade_s * self.fps)
        return total

    @property
    def film_s(self) -> float:
        return self.film_frames() / self.fps

    def summary(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "primary": self.primary,
            "shots": len(self.shots),
            "segments": sum(len(s.segments) for s in self.shots),
            "film_s": round(self.film_s, 3),
            "estimated_cost_usd": self.cost_usd,
            "estimated_time_s": round(self.latency_s, 1),
            "budget_usd": self.budget_usd,
        }


class ShotUnplannable(VidgateError):
    code = "no_route"
    http_status = 422


# --- building requests -----------------------------------------------------------------------


def _prompt(story: Story, shot: Shot) -> str:
    parts = [shot.prompt]
    if shot.camera:
        parts.append(f"Camera: {shot.camera}.")
    for name in shot.characters:
        parts.append(f"{name}: {story.characters[name].description}.")
    style = shot.style or story.style
    if style is not None:
        parts.append(f"Style: {story.styles[style].description}.")
    return " ".join(parts)[:8000]


def _request_max_s() -> float:
    """The longest clip one request may ask for (VideoRequest's own bound)."""
    for m in VideoRequest.model_fields["duration_s"].metadata:
        if isinstance(getattr(m, "le", None), (int, float)):
            return float(m.le)
    return math.inf


#: a shot longer than this is made of segments; no single request can ask for all of it
REQUEST_MAX_S = _request_max_s()


def base_request(
    story: Story, shot: Shot, *, duration_s: float, mode: Mode = Mode.TEXT_TO_VIDEO
) -> VideoRequest:
    # a whole shot over one request's bound is routed (ranked, explained) as its longest
    # request; the chains split it into segments that each fit
    duration_s = min(duration_s, REQUEST_MAX_S)
    refs: list[Reference] = []
    if mode is Mode.IMAGE_TO_VIDEO:
        refs.append(Reference(role=ReferenceRole.FIRST_FRAME, url=PLACEHOLDER_PNG))
    elif mode is Mode.EXTEND:
        refs.append(
            Reference(
                role=ReferenceRole.SOURCE_VIDEO, kind=ReferenceKind.VIDEO, url=PLACEHOLDER_MP4
            )
        )
    tier, gate = story.shot_quality(shot)
    return VideoRequest(
        prompt=_prompt(story, shot),
        mode=mode,
        duration_s=duration_s,
        resolution=story.resolution,
        aspect_ratio=story.aspect,
        audio=AudioMode.REQUIRED if story.shot_audio(shot) == "native" else AudioMode.NONE,
        references=refs,
        quality=tier,
        quality_gate=gate,
        constraints=Constraints(deadline=story.deadline),
        metadata={"story": story.title[:512]},
    )


def with_looks(
    request: VideoRequest,
    offering: Offering,
    story: Story,
    shot: Shot,
    resolve: Callable[[str], str],
) -> tuple[VideoRequest, list[str]]:
    """Add the shot's character (subject) and style references the offering takes, and the
    story's seed where the model takes one. Returns the request and what was added."""
    caps = offering.capabilities
    room = caps.max_references - len(request.references)
    refs = list(request.references)
    added: list[str] = []
    if ReferenceRole.SUBJECT in caps.reference_roles:
        for name in shot.characters:
            for ref in story.characters[name].references:
                if room > 0:
                    refs.append(Reference(role=ReferenceRole.SUBJECT, url=resolve(ref)))
                    added.append(f"subject:{name}")
                    room -= 1
    style = shot.style or story.style
    if style is not None and ReferenceRole.STYLE in caps.reference_roles:
        for ref in story.styles[style].references:
            if room > 0:
                refs.append(Reference(role=ReferenceRole.STYLE, url=resolve(ref)))
                added.append(f"style:{style}")
                room -= 1
    seed = story.story_seed() if caps.seed else None
    return request.model_copy(update={"references": refs, "seed": seed}), added


def as_url(ref: str | Path) -> str:
    """A reference as the API takes it: URLs as given, local files as data: URLs."""
    if isinstance(ref, str):
        return ref
    mime = mimetypes.guess_type(ref.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(ref.read_bytes()).decode()}"


# --- durations -------------------------------------------------------------------------------


def ceil_duration(spec: DurationSpec, want: float) -> float | None:
    """The shortest supported duration of at least ``want`` seconds (None: over the max)."""
    if spec.values is not None:
        ok = [v for v in spec.values if v >= want - EPS]
        return min(ok) if ok else None
    lo, hi = float(spec.min or 0), float(spec.max or 0)
    if want > hi + EPS:
        return None
    steps = max(0, math.ceil((want - lo) / spec.step - EPS))
    return min(hi, lo + steps * spec.step)


def split_frames(total: int, max_frames: int, overlap: int) -> list[int]:
    """Kept frames per segment: as few segments as fit under ``max_frames`` each (the
    continuing ones also carry ``overlap`` repeated frames), as even as possible."""
    k = max(1, math.ceil(total / max_frames))
    while k * max_frames - (k - 1) * overlap < total:
        k += 1
    base, extra = divmod(total, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


# --- planning --------------------------------------------------------------------------------


class _Option:
    """One way to make a shot: an offering and its segments' requests."""

    def __init__(self, ranked: list[Candidate], chain: Chain, why_segments: str | None) -> None:
        self.ranked = ranked  # pragma: no mutate - never constructed (unused), so no behaviour
        self.chain = chain  # pragma: no mutate - never constructed (unused), so no behaviour
        self.why_segments = why_segments  # pragma: no mutate - never constructed (unused)


class Planner:
    def __init__(self, router: Router, catalog: Catalog) -> None:
        self.router = router
        self.catalog = catalog

    def _route(self, request: VideoRequest, policy: str) -> list[Candidate]:
        try:
            return self.router.route(request, policy=policy).ranked
        except NoRoute:
            return []

    def _rejections(self, request: VideoRequest, offering_id: str) -> str:
        c = self.router.check(self.router.view(request), self.router.by_id[offering_id])
        return "; ".join(r.message for r in c.rejections) or "ranked lower for this shot"

    def _options(self, story: Story, shot: Shot) -> dict[str, tuple[Candidate, Chain]]:
        """Offerings able to make this shot, in the policy's order, with how."""
        req = base_request(story, shot, duration_s=shot.duration)
        out: dict[str, tuple[Candidate, Chain]] = (
            {c.offering.id: (c, "none") for c in self._route(req, story.policy)}
            if shot.duration <= REQUEST_MAX_S
            else {}
        )
        if out:
            return out
        # Longer than any offering makes in one go: offerings that make a first segment and
        # can continue it (their own extend mode first, else image-to-video from a frame).
        for c in self.router.compiled:
            o = c.offering
            seg = o.capabilities.durations.maximum
            if seg <= 0 or seg >= shot.duration:
                continue
            first = base_request(story, shot, duration_s=seg)
            got = self._route_one(first, o.id)
            if got is None:
                continue
            for chain, mode in (("extend", Mode.EXTEND), ("frames", Mode.IMAGE_TO_VIDEO)):
                nxt = base_request(story, shot, duration_s=seg, mode=mode)
                if self._route_one(nxt, o.id) is not None:
                    out[o.id] = (got, chain)  # type: ignore[assignment]
                    break
        ranked = {c.offering.id for c in self._rank([c for c, _ in out.values()], req, story)}
        return {oid: out[oid] for oid in ranked} if ranked else {}

    def _rank(self, cands: list[Candidate], req: VideoRequest, story: Story) -> list[Candidate]:
        from vidgate.routing.policies import rank

        return rank(story.policy, cands, req, self.catalog) if cands else []

    def _route_one(self, request: VideoRequest, offering_id: str) -> Candidate | None:
        try:
            return self.router.route(request, pinned=[offering_id]).ranked[0]
        except NoRoute:
            return None

    def plan(self, loaded: LoadedStory) -> tuple[StoryPlan, list[Problem]]:
        story = loaded.story
        options: list[dict[str, tuple[Candidate, Chain]]] = []
        problems: list[Problem] = []
        for i, shot in enumerate(story.shots):
            opts = self._options(story, shot)
            if not opts:
                req = base_request(story, shot, duration_s=shot.duration)
                try:
                    self.router.route(req, policy=story.policy)
                    why = "no offering can make or continue it"
                except NoRoute as e:
                    why = str(e)
                problems.append(
                    Problem(
                        ("shots", i),
                        f"no offering can make this shot: {why}",
                        loaded.marks.line(("shots", i)),
                    )
                )
            options.append(opts)
        primary = self._primary(options)
        shots: list[ShotPlan] = []
        for i, (shot, opts) in enumerate(zip(story.shots, options, strict=True)):
            if opts:
                shots.append(self._shot(loaded, i, shot, opts, primary))
        w, h = frame_size(story.resolution, story.aspect)
        plan = StoryPlan(
            title=story.title,
            policy=story.policy,
            primary=primary,
            width=w,
            height=h,
            fps=story.fps,
            seed=story.story_seed(),
            shots=shots,
            budget_usd=story.budget,
        )
        if story.budget is not None and plan.cost_usd > story.budget + EPS:
            partial = " for the shots that could be planned" if problems else ""
            problems.append(
                Problem(
                    ("budget",),
                    f"${story.budget:.2f} is below the plan's ${plan.cost_usd:.2f}{partial}; "
                    f"raise budget: to at least {math.ceil(plan.cost_usd * 100) / 100:.2f}, "
                    "or shorten or drop shots",
                    loaded.marks.line(("budget",)),
                )
            )
        return plan, problems

    def _primary(self, options: list[dict[str, tuple[Candidate, Chain]]]) -> str | None:
        """The offering serving the most shots; ties to the best average rank."""
        score: dict[str, list[int]] = {}
        for opts in options:
            for pos, oid in enumerate(opts):
                score.setdefault(oid, []).append(pos)
        if not score:
            return None
        return min(score, key=lambda o: (-len(score[o]), sum(score[o]) / len(score[o]), o))

    def _pick(self, opts: dict[str, tuple[Candidate, Chain]], primary: str | None) -> str:
        if primary is None or primary in opts:
            return primary or next(iter(opts))
        p = self.catalog.offerings[primary]
        model = self.catalog.models.get(p.model)
        for oid in opts:  # the same model through another provider
            if self.catalog.offerings[oid].model == p.model:
                return oid
        for oid in opts:  # the same vendor's family
            m = self.catalog.models.get(self.catalog.offerings[oid].model)
            if model is not None and m is not None and m.vendor == model.vendor:
                return oid
        return next(iter(opts))

    def _shot(
        self,
        loaded: LoadedStory,
        i: int,
        shot: Shot,
        opts: dict[str, tuple[Candidate, Chain]],
        primary: str | None,
    ) -> ShotPlan:
        story = loaded.story
        chosen = self._pick(opts, primary)
        cand, chain = opts[chosen]
        offering = cand.offering
        switched = None
        if primary is not None and chosen != primary:
            req = base_request(story, shot, duration_s=shot.duration)
            switched = f"{primary} cannot: {self._rejections(req, primary)}"

        def resolve(ref: str) -> str:
            return as_url(loaded.resolve(ref))

        fps = story.fps
        total = max(1, round(shot.duration * fps))
        if chain == "none":
            frames = [total]
        else:
            seg_max = int(offering.capabilities.durations.maximum * fps + EPS)
            frames = split_frames(total, seg_max, 1 if chain == "frames" else 0)
        segments: list[SegmentPlan] = []
        added: list[str] = []
        for n, keep in enumerate(frames):
            starts: Literal["fresh", "last_frame", "extend"] = "fresh"
            mode = Mode.TEXT_TO_VIDEO
            overlap = 0
            if n and chain == "frames":
                starts, mode, overlap = "last_frame", Mode.IMAGE_TO_VIDEO, 1
            elif n and chain == "extend":
                starts, mode = "extend", Mode.EXTEND
            want = (keep + overlap) / fps
            asked = ceil_duration(offering.capabilities.durations, want)
            if chain == "none":
                asked = cand.duration_s  # the router's own choice, within tolerance
            req = base_request(story, shot, duration_s=asked or want, mode=mode)
            req, added = with_looks(req, offering, story, shot, resolve)
            got = self._route_one(req, offering.id)
            c = got or cand
            fallbacks = [oid for oid in self._fallbacks(req, story.policy) if oid != offering.id]
            delivered = c.duration_s
            segments.append(
                SegmentPlan(
                    index=n,
                    request=req,
                    offerings=[offering.id, *fallbacks],
                    offering_id=offering.id,
                    delivered_s=delivered,
                    keep_s=min(keep, round(delivered * fps) - overlap) / fps,
                    trim_start_s=overlap / fps,
                    cost_usd=round(c.cost_usd or 0.0, 6),
                    latency_s=round(c.latency_s.get("p50", 0.0), 1),
                    starts=starts,
                )
            )
        t = shot.transition_in()
        return ShotPlan(
            index=i,
            prompt=segments[0].request.prompt,
            duration_s=shot.duration,
            offering_id=offering.id,
            model=offering.model,
            chain=chain,
            segments=segments,
            transition=t.kind,
            crossfade_s=t.seconds,
            audio=story.shot_audio(shot),
            switched_because=switched,
            references=sorted(set(added)),
            seed=segments[0].request.seed,
        )

    def _fallbacks(self, request: VideoRequest, policy: str) -> list[str]:
        """Other offerings that take exactly this request (kept as the child's fallbacks)."""
        return [c.offering.id for c in self._route(request, policy)][:4]


def plan_story(
    loaded: LoadedStory, router: Router, catalog: Catalog
) -> tuple[StoryPlan, list[Problem]]:
    return Planner(router, catalog).plan(loaded)
