"""The story driver: a story is a parent job; it only waits, chains and assembles.

Each step of a claimed story (short, fenced, resumable from the stored row):

1. create the child job of every segment that can start — a shot's first segment at once,
   a continuing one when the segment before it has succeeded (its last frame, or its video
   for ``extend``, becomes the new request's reference). Children are ordinary jobs: the
   router, fallbacks, ledger and quality stages all apply; the worker drives them. Each is
   created with an idempotency key of (story, shot, segment), so a crash between creating a
   child and recording it can never make a second one: the repeat returns the first;
2. a child that fails fails the story (the others are cancelled); a cancel request cancels
   every child;
3. once every segment has succeeded: join each shot's segments (overlap trimmed, continuity
   scored), assemble the film, store it with every shot's file and the story record.

The budget for the whole story is reserved at submit; each child takes its share of that hold
when it is created, and the story's terminal write releases the rest.

Limits held at run time, before each child starts (a child not started costs nothing):

* **the story's ``budget``** is a hard cap: a child starts only when its price fits under what
  is left — the budget less what the shots started have spent or may still spend (each live
  child counts at its own cap) and less the plan's price of the segments not started yet —
  and it gets that room as its request's ``max_cost_usd``, so its own fallbacks and quality
  regenerations stop there too. A child that does not fit waits while other shots run (they
  may end cheaper than their caps), then the story fails ``story_budget_exceeded``;
* **the tenant's cap on running jobs** (``max_concurrent_jobs``): the story's running children
  count toward it, so a child starts only while the tenant is under its cap (else it waits);
* **the story's ``deadline``**: no child starts once it has passed, or when the router says
  the segment could not finish before it; the story ends ``expired`` once the shots running
  have ended.

A story that ends without its film still keeps every finished shot's file and its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidgate.errors import BudgetExceeded, NoRoute, VidgateError
from vidgate.jobs.store import StaleLease, request_hash
from vidgate.providers.options import govern as govern_options
from vidgate.stories import chain
from vidgate.stories.plan import SegmentPlan, ShotPlan, StoryPlan
from vidgate.stories.record import build_record
from vidgate.stories.spec import LoadedStory, Story
from vidgate.stories.store import StoryClaim, StoryDoc, StoryState, StoryStore
from vidgate.types import Constraints, Job, JobState, Reference, ReferenceKind, ReferenceRole

if TYPE_CHECKING:
    from vidgate.gateway import Gateway

log = logging.getLogger("vidgate.stories")


def _now() -> datetime:
    return datetime.now(UTC)


def story_store(gw: Gateway) -> StoryStore:
    return StoryStore(gw.store.engine)


def story_fingerprint(story: Story) -> str:
    return hashlib.sha256(story.model_dump_json().encode()).hexdigest()


def submit_story(
    gw: Gateway,
    loaded: LoadedStory,
    plan: StoryPlan,
    *,
    tenant: str = "default",
    idempotency_key: str | None = None,
) -> tuple[StoryDoc, bool]:
    """Store a planned story (state ``queued``) with the whole budget reserved for it.
    Returns (story, created); a repeated idempotency key returns the first story."""
    now = _now()
    doc = StoryDoc(
        id="story_" + uuid.uuid4().hex[:20],
        tenant=tenant,
        title=loaded.story.title,
        story=loaded.story.model_dump(mode="json"),
        plan=plan,
        synthetic=gw.sandbox,
        created_at=now,
        updated_at=now,
    )
    _store_inputs(gw, doc, loaded)
    total = plan.cost_usd
    # Held up front, atomically against the tenant's budget (BudgetExceeded when it does not
    # fit); False: the tenant has no budget row, so nothing is held.
    doc.held = gw.accounts.reserve(tenant, total)
    try:
        stored, created = story_store(gw).create(
            doc,
            idempotency_key=idempotency_key,
            fingerprint=story_fingerprint(loaded.story),
            reserved_usd=total if doc.held else 0.0,
        )
    except BaseException:
        if doc.held:
            gw.accounts.release(tenant, total)
        raise
    if not created and doc.held:
        gw.accounts.release(tenant, total)  # a replay: the first submit holds the budget
    return stored, created


def _store_inputs(gw: Gateway, doc: StoryDoc, loaded: LoadedStory) -> None:
    """Copy the story's local sound files into our storage (any worker can read them there);
    the stored story names them ``storage:<uri>``."""
    folder = f"{gw.storage.root}/{doc.tenant}/stories/{doc.id}/inputs"

    def keep(ref: str, name: str) -> str:
        src = loaded.resolve(ref)
        if isinstance(src, str):
            return ref
        gw.storage.fs.makedirs(folder, exist_ok=True)
        dest = f"{folder}/{name}{src.suffix.lower()[:8]}"
        with src.open("rb") as f, gw.storage.open(dest, "wb") as out:
            shutil.copyfileobj(f, out)
        return "storage:" + gw.storage.uri(dest)

    track = doc.story.get("soundtrack")
    if track:
        track["file"] = keep(track["file"], "soundtrack")
    for i, vo in enumerate(doc.story.get("voiceover") or []):
        vo["file"] = keep(vo["file"], f"voiceover-{i}")


def child_key(story_id: str, shot: int, segment: int) -> str:
    return f"story:{story_id}:{shot}:{segment}"


class StoryDriver:
    def __init__(self, gw: Gateway, workdir: Path | None = None) -> None:
        self.gw = gw
        self.stories = story_store(gw)
        self.workdir = workdir or gw.settings.resolved_home() / "stories"

    # -- children ------------------------------------------------------------------------

    def _create_child(
        self,
        claim: StoryClaim,
        shot: int,
        seg: SegmentPlan,
        ref: Reference | None,
        room: float | None = None,
    ) -> tuple[Job, float]:
        """Create (or find again, by its key) a segment's child job. Returns the job and
        what of the story's hold it takes. ``room``: what the story's budget leaves for this
        child (its request's ``max_cost_usd``); :class:`NoRoom` when its price is above it."""
        doc, gw = claim.doc, self.gw
        request = seg.request
        if ref is not None:
            keep = [r for r in request.references if r.role is not ref.role]
            request = request.model_copy(update={"references": [ref, *keep]})
        plan = gw.route(request, pinned=seg.offerings)
        cost = plan.choice.cost_usd or 0.0
        # the key's fingerprint leaves the cap out: a retry after a crash may compute
        # another room, and must still find the child made before it
        fingerprint = request_hash(request)
        if room is not None:
            if cost > room + 1e-9:
                raise NoRoom(cost, plan.choice.offering.id)
            request = _capped(request, room)
        govern_options(
            request,
            [c.offering for c in plan.ranked],
            gw.catalog.offerings.values(),
            allow_hosts=gw.settings.allow_hosts(),
        )
        take = min(cost, max(0.0, claim.reserved_usd)) if doc.held else 0.0
        extra = round(cost - take, 6) if doc.held else 0.0
        if extra > 0 and not gw.accounts.reserve(doc.tenant, extra):
            extra = 0.0
        now = _now()
        route = plan.explain()
        route["ranked"] = [c.offering.id for c in plan.ranked]
        route["estimates"] = {c.offering.id: c.cost_usd for c in plan.ranked}
        job = Job(
            id="job_" + uuid.uuid4().hex[:20],
            tenant=doc.tenant,
            state=JobState.QUEUED,
            request=request,
            policy=plan.policy,
            created_at=now,
            updated_at=now,
            offering_id=plan.choice.offering.id,
            route=route,
            estimated_cost_usd=plan.choice.cost_usd,
            synthetic=gw.sandbox,
            reserved_usd=(take + extra) or None if doc.held else None,
            parent_id=doc.id,
        )
        try:
            stored, created = gw.store.create(
                job, idempotency_key=child_key(doc.id, shot, seg.index), fingerprint=fingerprint
            )
        except BaseException:
            if extra:
                gw.accounts.release(doc.tenant, extra)
            raise
        if not created:
            # made before a crash: its hold is the one it was created with
            if extra:
                gw.accounts.release(doc.tenant, extra)
            held = stored.reserved_usd or 0.0
            return stored, min(held, max(0.0, claim.reserved_usd)) if doc.held else 0.0
        return stored, take

    def _chain_ref(self, doc: StoryDoc, seg: SegmentPlan, before: Job) -> Reference | None:
        if seg.starts == "fresh":
            return None
        path = self._local(doc, before)
        if seg.starts == "extend":
            return Reference(
                role=ReferenceRole.SOURCE_VIDEO,
                kind=ReferenceKind.VIDEO,
                url="data:video/mp4;base64," + _b64(path.read_bytes()),
            )
        return Reference(
            role=ReferenceRole.FIRST_FRAME, url=chain.png_data_url(chain.last_frame(path))
        )

    def _local(self, doc: StoryDoc, job: Job) -> Path:
        """The child's stored video as a local file (copied from storage once)."""
        asset = job.assets[0]
        dest = self.workdir / doc.id / f"{job.id}.mp4"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".part")
            with self.gw.storage.open(self.gw.storage_path(asset.uri)) as src, tmp.open("wb") as f:
                shutil.copyfileobj(src, f)
            tmp.replace(dest)
        return dest

    # -- one step --------------------------------------------------------------------------

    async def step(self, claim: StoryClaim) -> StoryDoc:
        doc = claim.doc
        store = self.gw.store
        if doc.state is StoryState.QUEUED:
            doc.state = StoryState.RUNNING
        jobs: dict[str, Job] = {}
        for key, jid in doc.children.items():
            jobs[key] = await asyncio.to_thread(store.get, jid)
        if claim.cancel_requested:
            return await self._wind_up(claim, jobs, StoryState.CANCELED, None)
        live = any(not j.state.terminal for j in jobs.values())
        if doc.halt is None:
            bad = [
                k for k, j in jobs.items() if j.state.terminal and j.state is not JobState.SUCCEEDED
            ]
            if bad and jobs[bad[0]].state is JobState.EXPIRED:
                # its deadline is the story's: the other shots expire with it; what was
                # made is kept
                doc.halt = self._halt(StoryState.EXPIRED, _expired(doc, bad[0], jobs[bad[0]]))
            elif bad:
                return await self._wind_up(
                    claim, jobs, StoryState.FAILED, self._child_failed(doc, bad[0], jobs[bad[0]])
                )
        if doc.halt is not None:
            if live:  # the shots running end on their own (their caps and deadline hold)
                return await asyncio.to_thread(self.stories.save, claim, next_run_s=0.5)
            return await self._wind_up(
                claim, jobs, StoryState(doc.halt["state"]), dict(doc.halt["error"])
            )
        created = await self._start_ready(claim, jobs)
        if doc.halt is not None and not any(not j.state.terminal for j in jobs.values()):
            return await self._wind_up(
                claim, jobs, StoryState(doc.halt["state"]), dict(doc.halt["error"])
            )
        total = sum(len(s.segments) for s in doc.plan.shots)
        done = sum(1 for j in jobs.values() if j.state is JobState.SUCCEEDED)
        doc.progress = round(0.9 * done / max(1, total), 4)
        if done == total and not created:
            doc.state = StoryState.ASSEMBLING
            await asyncio.to_thread(self.stories.save, claim, release=False)
            try:
                await asyncio.to_thread(self._finish, doc, jobs)
            except (VidgateError, ValueError, OSError) as e:
                err = {"code": "assembly_failed", "message": str(e).splitlines()[0][:2000]}
                return await self._wind_up(claim, jobs, StoryState.FAILED, err)
            doc.state = StoryState.SUCCEEDED
            doc.progress = 1.0
            doc.finished_at = _now()
            return await asyncio.to_thread(self.stories.save, claim)
        return await asyncio.to_thread(self.stories.save, claim, next_run_s=0.3)

    @staticmethod
    def _halt(state: StoryState, error: dict[str, Any]) -> dict[str, Any]:
        return {"state": state.value, "error": error}

    def _child_failed(self, doc: StoryDoc, key: str, job: Job) -> dict[str, Any]:
        shot, seg = key.split(".")
        msg = (job.error or {}).get("message", job.state.value)
        where = f"shot {int(shot) + 1} segment {int(seg) + 1}"
        budget = doc.plan.budget_usd
        cap = job.request.constraints.max_cost_usd
        capped = "max_cost_usd" in msg or any(
            "max_cost_usd" in str(skip.get("why", ""))
            for skip in (job.route or {}).get("skipped", [])
        )
        if budget is not None and cap is not None and capped:
            # its cap was what the story's budget left it: the story's budget stopped it
            return {
                "code": "story_budget_exceeded",
                "message": (
                    f"{where} {job.state.value}: the story's budget ${budget:.2f} left it "
                    f"${cap:.2f} and it needed more ({msg}); raise budget:"
                )[:4000],
                "job_id": job.id,
                "budget_usd": budget,
            }
        return {
            "code": "shot_failed",
            "message": f"{where} {job.state.value}: {msg}",
            "job_id": job.id,
        }

    # -- limits before a child starts ------------------------------------------------------

    def _room(self, doc: StoryDoc, jobs: dict[str, Job], key: str) -> _Room | None:
        """What the story's budget leaves for the child ``key`` (None: no budget)."""
        budget = doc.plan.budget_usd
        if budget is None:
            return None
        held = sum(_committed(j) for j in jobs.values())
        rest = [
            seg.cost_usd
            for shot in doc.plan.shots
            for seg in shot.segments
            if f"{shot.index}.{seg.index}" not in jobs and f"{shot.index}.{seg.index}" != key
        ]
        return _Room(budget, held, sum(rest), len(rest))

    def _slot(self, doc: StoryDoc) -> str | None:
        """Why no child may start now under the tenant's cap on running jobs (None: one
        may). The story's running children are the tenant's jobs like any other (each is
        stored as it is created, so the count includes the ones this step started)."""
        row = self.gw.accounts.tenant(doc.tenant)
        cap = row.get("max_concurrent_jobs") if row else None
        if cap is None:
            return None
        running = self.gw.accounts.running_jobs(doc.tenant)
        if running < cap:
            return None
        return (
            f"tenant {doc.tenant} has {running} jobs running, its cap "
            f"(max_concurrent_jobs {cap}); the next shot starts when one ends"
        )

    def _deadline_miss(self, doc: StoryDoc, seg: SegmentPlan, ref: Reference | None) -> str | None:
        """Why ``seg`` cannot finish by the story's deadline (None: it can, or no deadline)."""
        deadline = seg.request.constraints.deadline
        if deadline is None:
            return None
        left = (deadline - _now()).total_seconds()
        if left <= 0:
            return f"the story's deadline {deadline.isoformat()} passed"
        request = seg.request
        if ref is not None:
            keep = [r for r in request.references if r.role is not ref.role]
            request = request.model_copy(update={"references": [ref, *keep]})
        free = request.model_copy(
            update={"constraints": request.constraints.model_copy(update={"deadline": None})}
        )
        try:
            plan = self.gw.router().route(free, pinned=seg.offerings)
        except NoRoute:
            return None  # not the deadline: the real routing below says what it is
        c = plan.choice
        need = c.latency_s.get("p90", c.latency_s.get("p50", 0.0))
        if need <= left:
            return None
        return (
            f"{c.offering.id} takes about {need:.0f} s and {left:.0f} s remain before the "
            f"story's deadline {deadline.isoformat()}"
        )

    async def _start_ready(self, claim: StoryClaim, jobs: dict[str, Job]) -> bool:
        """Create every child that can start now; each is recorded (and takes its share of
        the hold) in its own fenced write, right after it is created. A child the budget,
        the tenant's cap or the deadline keeps from starting is not created."""
        doc = claim.doc
        created = False
        doc.waiting = None
        for shot in doc.plan.shots:
            for seg in shot.segments:
                key = f"{shot.index}.{seg.index}"
                if key in doc.children:
                    continue
                before = jobs.get(f"{shot.index}.{seg.index - 1}") if seg.index else None
                if seg.index and (before is None or before.state is not JobState.SUCCEEDED):
                    break  # waits for the segment it continues
                made = await asyncio.to_thread(self._made_before, doc, key)
                if made is not None:
                    # created before a crash, never recorded: it is this story's whatever
                    # the limits say now (it may be running, and it is billed)
                    held = made.reserved_usd or 0.0
                    take = min(held, max(0.0, claim.reserved_usd)) if doc.held else 0.0
                    doc.children[key] = made.id
                    jobs[key] = made
                    await asyncio.to_thread(
                        self.stories.save, claim, release=False, take_usd=take, next_run_s=0.3
                    )
                    created = True
                    break
                ready = await self._may_start(claim, shot, seg)
                if not ready:
                    return created
                ref = (
                    await asyncio.to_thread(self._chain_ref, doc, seg, before)
                    if before is not None
                    else None
                )
                miss = await asyncio.to_thread(self._deadline_miss, doc, seg, ref)
                if miss is not None:
                    err = {
                        "code": "deadline",
                        "message": f"shot {shot.index + 1} segment {seg.index + 1} was not "
                        f"started: {miss}; the shots made are kept",
                    }
                    doc.halt = self._halt(StoryState.EXPIRED, err)
                    return created
                room = self._room(doc, jobs, key)
                try:
                    job, take = await asyncio.to_thread(
                        self._create_child,
                        claim,
                        shot.index,
                        seg,
                        ref,
                        None if room is None else room.left,
                    )
                except NoRoom as e:
                    assert room is not None
                    if any(not j.state.terminal for j in jobs.values()):
                        # shots running may end under their caps and leave room: wait
                        doc.waiting = f"the story's budget: {room.explain(shot, seg, e)}"
                        return created
                    doc.halt = self._halt(
                        StoryState.FAILED,
                        {
                            "code": "story_budget_exceeded",
                            "message": room.explain(shot, seg, e),
                            "budget_usd": room.budget,
                            "needed_usd": round(room.held + room.rest + e.cost, 6),
                        },
                    )
                    return created
                doc.children[key] = job.id
                jobs[key] = job
                await asyncio.to_thread(
                    self.stories.save, claim, release=False, take_usd=take, next_run_s=0.3
                )
                created = True
                break
        return created

    def _made_before(self, doc: StoryDoc, key: str) -> Job | None:
        """The child of ``key`` if one was created and the story never recorded it."""
        from sqlalchemy import select

        from vidgate.jobs import db

        shot, seg = (int(x) for x in key.split("."))
        j = db.jobs
        with self.gw.store.engine.begin() as conn:
            jid = conn.execute(
                select(j.c.id).where(
                    j.c.tenant == doc.tenant, j.c.idempotency_key == child_key(doc.id, shot, seg)
                )
            ).scalar()
        return None if jid is None else self.gw.store.get(str(jid))

    async def _may_start(self, claim: StoryClaim, shot: ShotPlan, seg: SegmentPlan) -> bool:
        doc = claim.doc
        deadline = seg.request.constraints.deadline
        if deadline is not None and _now() >= deadline:
            doc.halt = self._halt(
                StoryState.EXPIRED,
                {
                    "code": "deadline",
                    "message": f"the story's deadline {deadline.isoformat()} passed before "
                    f"shot {shot.index + 1} segment {seg.index + 1} could start; the shots "
                    "made are kept",
                },
            )
            return False
        why = await asyncio.to_thread(self._slot, doc)
        if why is not None:
            doc.waiting = why
            return False
        return True

    async def _wind_up(
        self,
        claim: StoryClaim,
        jobs: dict[str, Job],
        state: StoryState,
        error: dict[str, Any] | None,
    ) -> StoryDoc:
        """Cancel what still runs; the story ends once every child has, keeping the file of
        every shot that was finished and the record of what was spent."""
        doc = claim.doc
        live = [j for j in jobs.values() if not j.state.terminal]
        for j in live:
            with contextlib.suppress(VidgateError):
                await asyncio.to_thread(self.gw.store.request_cancel, j.id)
        if error is not None:
            doc.error = error
        if live:
            return await asyncio.to_thread(self.stories.save, claim, next_run_s=0.5)
        doc.state = state
        doc.waiting = None
        if state is StoryState.CANCELED and doc.error is None:
            doc.error = {"code": "canceled", "message": "the story was canceled"}
        try:
            await asyncio.to_thread(self._keep_finished, doc, jobs)
        except (VidgateError, ValueError, OSError) as e:
            # the record still says what was made and spent; the files are a convenience
            log.warning("story %s: keeping finished shots failed: %s", doc.id, e)
        doc.finished_at = _now()
        doc.record = self._record(doc, jobs)
        return await asyncio.to_thread(self.stories.save, claim)

    # -- assembly --------------------------------------------------------------------------

    def _finish(self, doc: StoryDoc, jobs: dict[str, Job]) -> None:
        from vidgate.stories import assemble as asm

        story = Story.model_validate(doc.story)
        plan = doc.plan
        work = self.workdir / doc.id
        work.mkdir(parents=True, exist_ok=True)
        clips: list[asm.ShotClip] = []
        joins: list[dict[str, Any]] = []
        shot_paths: dict[str, Path] = {}
        for shot in plan.shots:
            shot_path = self._shot_file(doc, shot, jobs, work, joins, story.loudness)
            shot_paths[str(shot.index)] = shot_path
            clips.append(
                asm.ShotClip(
                    path=shot_path,
                    transition_in="crossfade" if shot.transition == "crossfade" else "cut",
                    crossfade_s=shot.crossfade_s or 0.5,
                    audio=shot.audio,  # type: ignore[arg-type]
                    label=f"shot {shot.index + 1}",
                )
            )
        spec = asm.AssemblySpec(
            width=plan.width,
            height=plan.height,
            fps=plan.fps,
            loudness_lufs=story.loudness,
            soundtrack=self._input(story.soundtrack.file, work) if story.soundtrack else None,
            soundtrack_gain_db=story.soundtrack.gain_db if story.soundtrack else -6.0,
            duck_under_dialogue=bool(story.soundtrack and story.soundtrack.duck),
            voice_over=tuple(
                asm.VoiceOver(path=self._input(v.file, work), start_s=v.at) for v in story.voiceover
            ),
            captions=tuple(
                asm.Caption(start_s=c.start, end_s=c.end, text=c.text)
                for c in (story.captions.items if story.captions else [])
            ),
            caption_format=story.captions.format if story.captions else "vtt",
            burn_captions=bool(story.captions and story.captions.burn),
        )
        film_path = work / "film.mp4"
        result = asm.assemble(clips, spec, film_path)
        signed = self._sign(doc, story, film_path, shot_paths)
        doc.joins = joins
        doc.shot_files = {
            k: self._keep(doc, p, f"shot-{int(k) + 1:02d}") for k, p in shot_paths.items()
        }
        film_uri = self._keep(doc, film_path, "film")
        doc.film = {
            "uri": film_uri,
            "duration_s": result.duration_s,
            "frames": result.frames,
            "planned_frames": plan.film_frames(),
            "width": result.width,
            "height": result.height,
            "fps": result.fps,
            "has_audio": result.has_audio,
            "loudness_lufs": result.loudness_lufs,
            "stream_copied": result.stream_copied,
            "sha256": _sha256(film_path),
        }
        if signed:
            doc.film["c2pa"] = {"signed": True, "ingredients": signed}
        if result.captions_path is not None:
            doc.film["captions_uri"] = self._keep(
                doc, result.captions_path, "captions", suffix=result.captions_path.suffix
            )
        doc.record = self._record(doc, jobs)
        record_path = work / "record.json"
        record_path.write_text(json.dumps(doc.record, indent=2, default=str))
        doc.film["record_uri"] = self._keep(doc, record_path, "record", suffix=".json")

    def _shot_file(
        self,
        doc: StoryDoc,
        shot: ShotPlan,
        jobs: dict[str, Job],
        work: Path,
        joins: list[dict[str, Any]],
        loudness: float,
    ) -> Path:
        """One shot as it enters the film: its segments joined (overlap trimmed, continuity
        scored into ``joins``), or its one clip as delivered when nothing is trimmed."""
        from vidgate.stories import assemble as asm

        plan = doc.plan
        base = asm.AssemblySpec(
            width=plan.width, height=plan.height, fps=plan.fps, loudness_lufs=loudness
        )
        parts = []
        for seg in shot.segments:
            job = jobs[f"{shot.index}.{seg.index}"]
            path = self._local(doc, job)
            measured = job.assets[0].duration_s or seg.delivered_s
            trim_end = max(0.0, measured - seg.trim_start_s - seg.keep_s)
            parts.append(
                asm.ShotClip(
                    path=path,
                    audio="native",
                    trim_start_s=seg.trim_start_s,
                    trim_end_s=trim_end,
                    label=f"shot {shot.index + 1}.{seg.index + 1}",
                )
            )
            if seg.index:
                prev = parts[-2].path
                score = chain.join_score(prev, path, skip=round(seg.trim_start_s * plan.fps))
                joins.append(
                    {
                        "shot": shot.index,
                        "after_segment": seg.index - 1,
                        "segment": seg.index,
                        "how": seg.starts,
                        "continuity": score,
                        "ok": score >= chain.CONTINUITY_MIN,
                    }
                )
        if len(parts) == 1 and not parts[0].trim_start_s and parts[0].trim_end_s < 0.5 / plan.fps:
            return parts[0].path
        shot_path = work / f"shot-{shot.index + 1:02d}.mp4"
        asm.assemble(parts, base, shot_path)
        return shot_path

    def _keep_finished(self, doc: StoryDoc, jobs: dict[str, Job]) -> None:
        """A story ending without its film keeps the file of every shot whose segments all
        succeeded (``GET /v1/stories/{id}/shots/{n}/content``, the record's ``file``)."""
        work = self.workdir / doc.id
        work.mkdir(parents=True, exist_ok=True)
        joins: list[dict[str, Any]] = []
        loudness = float(doc.story.get("loudness", -14.0))
        for shot in doc.plan.shots:
            k = str(shot.index)
            keys = [f"{shot.index}.{seg.index}" for seg in shot.segments]
            if k in doc.shot_files or not all(
                key in jobs and jobs[key].state is JobState.SUCCEEDED and jobs[key].assets
                for key in keys
            ):
                continue
            path = self._shot_file(doc, shot, jobs, work, joins, loudness)
            doc.shot_files[k] = self._keep(doc, path, f"shot-{shot.index + 1:02d}")
        if joins:
            doc.joins = joins

    def _sign(self, doc: StoryDoc, story: Story, film: Path, shots: dict[str, Path]) -> int:
        """Sign the film (C2PA) with every shot as a ``componentOf`` ingredient, when signing
        is configured. Returns how many shots it lists (0: not signed)."""
        from vidgate.provenance.keys import startup_check
        from vidgate.provenance.sign import Ingredient, SigningFailed, sign_file

        settings = self.gw.settings
        keys = startup_check(settings)
        if keys is None:
            return 0
        by_index = {str(s.index): s for s in doc.plan.shots}
        ingredients = [
            Ingredient(
                title=f"shot {int(k) + 1}: {by_index[k].offering_id}",
                path=p,
                relationship="componentOf",
                format="video/mp4",
                description=by_index[k].prompt[:500],
            )
            for k, p in sorted(shots.items(), key=lambda kv: int(kv[0]))
        ]
        signed = film.with_name("film.signed.mp4")
        try:
            self._sign_file(sign_file, film, signed, keys, ingredients, doc, story)
        except SigningFailed as e:
            raise VidgateError(f"signing the film failed: {e}") from None
        signed.replace(film)
        return len(ingredients)

    def _sign_file(
        self,
        sign_file: Any,
        film: Path,
        signed: Path,
        keys: Any,
        ingredients: list[Any],
        doc: StoryDoc,
        story: Story,
    ) -> None:
        from vidgate.provenance.sign import COMPOSITE, ManifestInfo

        settings = self.gw.settings
        sign_file(
            film,
            signed,
            manifest_info=ManifestInfo(
                title=story.title,
                model="vidgate-story",
                provider="vidgate",
                job_id=doc.id,
                prompt="\n".join(s.prompt for s in doc.plan.shots),
                include_prompt=settings.c2pa_include_prompt,
                source_type=COMPOSITE,
                extra={
                    "shots": len(ingredients),
                    "offerings": sorted({s.offering_id for s in doc.plan.shots}),
                },
            ),
            ingredients=ingredients,
            keys=keys,
            tsa_url=settings.c2pa_tsa_url,
            thumbnails=settings.c2pa_thumbnails,
        )

    def _input(self, ref: str, work: Path) -> Path:
        """A soundtrack or voice-over as a local file: from our storage (where submit put
        local files) or a data: URL, written out once."""
        if ref.startswith("storage:"):
            uri = ref.removeprefix("storage:")
            dest = work / ("input-" + hashlib.sha256(uri.encode()).hexdigest()[:16])
            dest = dest.with_suffix(Path(uri).suffix)
            if not dest.exists():
                with self.gw.storage.open(self.gw.storage_path(uri)) as src, dest.open("wb") as f:
                    shutil.copyfileobj(src, f)
            return dest
        return _local_file(ref, work)

    def _keep(self, doc: StoryDoc, path: Path, name: str, suffix: str = ".mp4") -> str:
        """Copy a made file into the gateway's storage (names are ours, never the user's)."""
        storage = self.gw.storage
        folder = f"{storage.root}/{doc.tenant}/stories/{doc.id}"
        storage.fs.makedirs(folder, exist_ok=True)
        dest = f"{folder}/{name}{suffix}"
        with path.open("rb") as src, storage.open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return storage.uri(dest)

    def _record(self, doc: StoryDoc, jobs: dict[str, Job]) -> dict[str, Any]:
        ledger = [row for j in jobs.values() for row in self.gw.store.ledger(job_id=j.id)]
        return build_record(
            story_id=doc.id,
            title=doc.title,
            plan=doc.plan,
            children=jobs,
            ledger=ledger,
            joins=doc.joins,
            film=doc.film,
            shot_files=doc.shot_files,
        )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _local_file(ref: str, work: Path) -> Path:
    """A soundtrack or voice-over as a local file: a path as given (CLI stories), or a
    data: URL written out once."""
    if ref.startswith("data:"):
        import base64

        head, _, payload = ref.partition(",")
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
        ext = ".wav" if "wav" in head else ".mp3" if "mpeg" in head else ".m4a"
        dest = work / f"audio-{digest}{ext}"
        if not dest.exists():
            dest.write_bytes(base64.b64decode(payload))
        return dest
    raise VidgateError(
        f"sound file {ref[:80]}: give a local file (CLI) or a data: URL; "
        "fetching audio URLs is not supported yet"
    )


class StoryLoop:
    """Claims due stories and steps each; run by every worker beside its job loop."""

    def __init__(
        self, gw: Gateway, owner: str, *, only: str | None = None, tick_s: float = 0.3
    ) -> None:
        self.gw = gw
        self.owner = owner
        self.only = only
        self.tick_s = tick_s
        self.driver = StoryDriver(gw)
        self.errors: dict[str, int] = {}

    async def run_once(self) -> int:
        claims = await asyncio.to_thread(self.driver.stories.claim, self.owner, story_id=self.only)
        for claim in claims:
            try:
                await self.driver.step(claim)
            except StaleLease:
                log.warning("lost the lease on story %s", claim.doc.id)
            except asyncio.CancelledError:
                raise
            except BudgetExceeded as e:
                await self._fail(claim, {"code": e.code, "message": str(e)})
            except Exception as e:
                log.exception("stepping story %s failed", claim.doc.id)
                n = self.errors[claim.doc.id] = self.errors.get(claim.doc.id, 0) + 1
                if n >= 3:
                    await self._fail(claim, {"code": "driver_error", "message": str(e)[:2000]})
                elif claim.owner:
                    # try again soon from the stored story, not after the lease runs out
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self.driver.stories.hand_back, claim)
        return len(claims)

    async def _fail(self, claim: StoryClaim, error: dict[str, Any]) -> None:
        stories = self.driver.stories
        if claim.owner:
            # the step that raised still holds the lease: start again from what is stored
            await asyncio.to_thread(stories.hand_back, claim, retry_in_s=0.0)
        fresh = await asyncio.to_thread(stories.claim, self.owner, story_id=claim.doc.id)
        if not fresh:
            return
        c = fresh[0]
        # shots still running would go on billing for a film that will not be made
        jobs: dict[str, Job] = {}
        for key, jid in c.doc.children.items():
            with contextlib.suppress(VidgateError):
                job = jobs[key] = await asyncio.to_thread(self.gw.store.get, jid)
                if not job.state.terminal:
                    await asyncio.to_thread(self.gw.store.request_cancel, jid)
        c.doc.error = error
        c.doc.state = StoryState.FAILED
        c.doc.finished_at = _now()
        c.doc.record = self.driver._record(c.doc, jobs)
        with contextlib.suppress(StaleLease):
            await asyncio.to_thread(self.driver.stories.save, c)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("story loop round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.tick_s)


async def run_story(
    gw: Gateway,
    story_id: str,
    *,
    on_progress: Any = None,
    timeout_s: float | None = None,
) -> StoryDoc:
    """Drive one story here and now: a worker for its child jobs and a story loop for it,
    until the story ends. A worker elsewhere may share the work; leases keep it single."""
    from vidgate.jobs.worker import WorkerConfig

    # this function steps the story itself (only this one): the worker drives its jobs
    worker = gw.worker(WorkerConfig(concurrency=64, deliver_webhooks=False, drive_stories=False))
    stop = asyncio.Event()
    loop = StoryLoop(gw, owner=worker.id, only=story_id)
    wtask = asyncio.create_task(worker.run())
    stask = asyncio.create_task(loop.run(stop))
    stories = story_store(gw)
    until = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
    try:
        while True:
            doc = await asyncio.to_thread(stories.get, story_id)
            if on_progress is not None:
                jobs = {
                    k: await asyncio.to_thread(gw.store.get, jid) for k, jid in doc.children.items()
                }
                on_progress(doc, jobs)
            if doc.state.terminal:
                return doc
            if until is not None and asyncio.get_running_loop().time() > until:
                return doc
            await asyncio.sleep(0.25)
    finally:
        stop.set()
        worker.stop()
        await asyncio.gather(wtask, stask, return_exceptions=True)


def due_in(seconds: float) -> datetime:
    return _now() + timedelta(seconds=seconds)


class NoRoom(VidgateError):
    """A child's price is above what the story's budget leaves for it."""

    code = "story_budget_exceeded"

    def __init__(self, cost: float, offering_id: str) -> None:
        super().__init__(f"${cost:.2f} on {offering_id}")
        self.cost = cost
        self.offering_id = offering_id


@dataclass(frozen=True)
class _Room:
    """The story's budget at the moment a child would start."""

    budget: float
    #: what the children made so far have spent, or may still spend (a live one: its cap)
    held: float
    #: the plan's price of the segments not started yet, other than this one
    rest: float
    rest_n: int

    @property
    def left(self) -> float:
        return max(0.0, round(self.budget - self.held - self.rest, 6))

    def explain(self, shot: ShotPlan, seg: SegmentPlan, e: NoRoom) -> str:
        need = math.ceil((self.held + self.rest + e.cost) * 100 - 1e-6) / 100
        return (
            f"the story's budget ${self.budget:.2f} cannot cover shot {shot.index + 1} segment "
            f"{seg.index + 1}: it needs ${e.cost:.2f} on {e.offering_id} and "
            f"${self.left:.2f} is left (${self.held:.2f} spent or held by the shots started, "
            f"${self.rest:.2f} kept for the {self.rest_n} segment(s) not started); the shots "
            f"made are kept; raise budget: to at least {need:.2f}"
        )


def _committed(job: Job) -> float:
    """What a child has spent, or may still spend: a finished one its cost (and what it
    still holds for a pending attempt), a live one the most it may cost — its cap, else
    its reservation."""
    if job.state.terminal:
        return max(job.cost_usd or 0.0, job.reserved_usd or 0.0)
    cap = job.request.constraints.max_cost_usd
    return max(cap or 0.0, job.reserved_usd or 0.0, job.cost_usd or 0.0)


def _capped(request: Any, room: float) -> Any:
    """The request with ``max_cost_usd`` at most ``room`` (the story's budget left for it)."""
    c: Constraints = request.constraints
    cap = room if c.max_cost_usd is None else min(c.max_cost_usd, room)
    # the request's own bounds: above 0, at most 10 000
    cap = min(max(cap, 1e-6), 10_000.0)
    return request.model_copy(update={"constraints": c.model_copy(update={"max_cost_usd": cap})})


def _expired(doc: StoryDoc, key: str, job: Job) -> dict[str, Any]:
    shot, seg = key.split(".")
    msg = (job.error or {}).get("message", "expired")
    return {
        "code": "deadline",
        "message": f"shot {int(shot) + 1} segment {int(seg) + 1} expired ({msg}) at the "
        "story's deadline; the shots made are kept",
        "job_id": job.id,
    }
