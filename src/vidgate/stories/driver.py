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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidgate.errors import BudgetExceeded, VidgateError
from vidgate.jobs.store import StaleLease
from vidgate.providers.options import govern as govern_options
from vidgate.stories import chain
from vidgate.stories.plan import SegmentPlan, StoryPlan
from vidgate.stories.record import build_record
from vidgate.stories.spec import LoadedStory, Story
from vidgate.stories.store import StoryClaim, StoryDoc, StoryState, StoryStore
from vidgate.types import Job, JobState, Reference, ReferenceKind, ReferenceRole

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
        self, claim: StoryClaim, shot: int, seg: SegmentPlan, ref: Reference | None
    ) -> tuple[Job, float]:
        """Create (or find again, by its key) a segment's child job. Returns the job and
        what of the story's hold it takes."""
        doc, gw = claim.doc, self.gw
        request = seg.request
        if ref is not None:
            keep = [r for r in request.references if r.role is not ref.role]
            request = request.model_copy(update={"references": [ref, *keep]})
        plan = gw.route(request, pinned=seg.offerings)
        govern_options(
            request,
            [c.offering for c in plan.ranked],
            gw.catalog.offerings.values(),
            allow_hosts=gw.settings.allow_hosts(),
        )
        cost = plan.choice.cost_usd or 0.0
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
                job, idempotency_key=child_key(doc.id, shot, seg.index)
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
        bad = [k for k, j in jobs.items() if j.state.terminal and j.state is not JobState.SUCCEEDED]
        if bad:
            j = jobs[bad[0]]
            shot, seg = bad[0].split(".")
            msg = (j.error or {}).get("message", j.state.value)
            err = {
                "code": "shot_failed",
                "message": f"shot {int(shot) + 1} segment {int(seg) + 1} {j.state.value}: {msg}",
                "job_id": j.id,
            }
            return await self._wind_up(claim, jobs, StoryState.FAILED, err)
        created = await self._start_ready(claim, jobs)
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

    async def _start_ready(self, claim: StoryClaim, jobs: dict[str, Job]) -> bool:
        """Create every child that can start now; each is recorded (and takes its share of
        the hold) in its own fenced write, right after it is created."""
        doc = claim.doc
        created = False
        for shot in doc.plan.shots:
            for seg in shot.segments:
                key = f"{shot.index}.{seg.index}"
                if key in doc.children:
                    continue
                before = jobs.get(f"{shot.index}.{seg.index - 1}") if seg.index else None
                if seg.index and (before is None or before.state is not JobState.SUCCEEDED):
                    break  # waits for the segment it continues
                ref = (
                    await asyncio.to_thread(self._chain_ref, doc, seg, before)
                    if before is not None
                    else None
                )
                job, take = await asyncio.to_thread(self._create_child, claim, shot.index, seg, ref)
                doc.children[key] = job.id
                jobs[key] = job
                await asyncio.to_thread(
                    self.stories.save, claim, release=False, take_usd=take, next_run_s=0.3
                )
                created = True
                break
        return created

    async def _wind_up(
        self,
        claim: StoryClaim,
        jobs: dict[str, Job],
        state: StoryState,
        error: dict[str, Any] | None,
    ) -> StoryDoc:
        """Cancel what still runs; the story ends once every child has."""
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
        if state is StoryState.CANCELED and doc.error is None:
            doc.error = {"code": "canceled", "message": "the story was canceled"}
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
        base = asm.AssemblySpec(
            width=plan.width, height=plan.height, fps=plan.fps, loudness_lufs=story.loudness
        )
        clips: list[asm.ShotClip] = []
        joins: list[dict[str, Any]] = []
        shot_paths: dict[str, Path] = {}
        for shot in plan.shots:
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
            if (
                len(parts) == 1
                and not parts[0].trim_start_s
                and parts[0].trim_end_s < 0.5 / plan.fps
            ):
                shot_path = parts[0].path
            else:
                shot_path = work / f"shot-{shot.index + 1:02d}.mp4"
                asm.assemble(parts, base, shot_path)
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
        for jid in c.doc.children.values():
            with contextlib.suppress(VidgateError):
                job = await asyncio.to_thread(self.gw.store.get, jid)
                if not job.state.terminal:
                    await asyncio.to_thread(self.gw.store.request_cancel, jid)
        c.doc.error = error
        c.doc.state = StoryState.FAILED
        c.doc.finished_at = _now()
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
