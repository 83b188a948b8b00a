"""The model server's HTTP API (docs/model-server-protocol.md) as a FastAPI app.

The app is the same whether one local worker thread runs the jobs or Ray Serve replicas do:
:class:`ServerState` is given a description of the model and a function that runs one job.
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from vidgate.local.board import Board, Job, RunFn
from vidgate.local.protocol import ApiError, Constraints, CreateVideo, JobSpec
from vidgate.local.shapes import fit

MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


class ServerState:
    """What the routes read: set up at once, filled in when the pipeline has loaded."""

    def __init__(
        self,
        model_id: str,
        *,
        usd_per_hour: float = 0.0,
        max_queue: int = 16,
        default_steps: int = 30,
    ) -> None:
        self.model_id = model_id
        self.usd_per_hour = usd_per_hour
        self.max_queue = max_queue
        self.default_steps = default_steps
        self.info: dict[str, Any] | None = None
        self.constraints: Constraints | None = None
        self.board: Board | None = None
        self.error: str | None = None
        self.loaded = threading.Event()

    def attach(self, info: dict[str, Any], run: RunFn, workers: int = 1) -> None:
        self.constraints = Constraints(**_constraints_args(info["constraints_obj"]))
        self.info = {k: v for k, v in info.items() if k != "constraints_obj"}
        self.default_steps = int(info.get("steps", self.default_steps))
        self.board = Board(
            run, workers=workers, max_depth=self.max_queue, usd_per_hour=self.usd_per_hour
        )
        self.loaded.set()

    def fail(self, reason: str) -> None:
        self.error = reason

    def ready(self) -> tuple[Board, Constraints, dict[str, Any]]:
        if self.board is None or self.constraints is None or self.info is None:
            why = f"the model failed to load: {self.error}" if self.error else "still loading"
            raise ApiError(503, "not_ready", f"the model server is not ready ({why})")
        return self.board, self.constraints, self.info


def _constraints_args(raw: dict[str, Any]) -> dict[str, Any]:
    # Through Ray the tuples arrive as lists.
    out = dict(raw)
    for key in ("default_size", "fixed_size"):
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    return out


def decode_image(ref: str) -> bytes:
    """A ``data:`` URL image → PNG bytes. The server fetches nothing: no URLs."""
    head, sep, data = ref.partition(",")
    if not (sep and head.startswith("data:") and head.endswith(";base64")):
        raise ApiError(
            400,
            "invalid_request",
            "input_reference must be a data: URL (data:image/png;base64,…); the model "
            "server fetches no URLs",
            param="input_reference",
        )
    mime = head[5:-7]
    if mime not in IMAGE_TYPES:
        raise ApiError(
            400,
            "invalid_request",
            f"input_reference is {mime or 'untyped'}; send one of {', '.join(IMAGE_TYPES)}",
            param="input_reference",
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, "invalid_request", "input_reference is not valid base64", "input_reference"
        ) from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise ApiError(
            400,
            "invalid_request",
            f"input_reference is {len(raw)} bytes; the limit is {MAX_IMAGE_BYTES}",
            param="input_reference",
        )
    import PIL.Image

    try:
        with PIL.Image.open(io.BytesIO(raw)) as img:
            img.load()
            buf = io.BytesIO()
            img.convert("RGB").save(buf, "PNG")
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        raise ApiError(
            400, "invalid_request", f"input_reference is not a readable {mime}", "input_reference"
        ) from None
    return buf.getvalue()


def video_object(job: Job, board: Board) -> dict[str, Any]:
    shape = job.shape
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": job.status,
        "progress": job.progress,
        "queue_position": board.position(job),
        "created_at": job.created_at,
        "completed_at": job.completed_at,
        "seconds": f"{shape.seconds:.2f}",
        "size": f"{shape.width}x{shape.height}",
        "num_frames": shape.num_frames,
        "fps": shape.fps,
        "steps": job.spec.steps,
        "seed": job.spec.seed,
        "adjustments": shape.wire_adjustments(),
        "compute_seconds": job.compute_seconds,
        "cost_usd": job.cost_usd,
        "error": job.error,
    }


def create_job(state: ServerState, req: CreateVideo) -> Job:
    board, constraints, info = state.ready()
    if req.model != state.model_id:
        raise ApiError(
            404,
            "model_not_loaded",
            f"model {req.model!r} is not loaded here; this server serves {state.model_id!r}",
            param="model",
        )
    i2v = "image_to_video" in info["modes"]
    if i2v and req.input_reference is None:
        raise ApiError(
            400,
            "invalid_request",
            f"{state.model_id} is image-to-video: send the first frame as input_reference",
            param="input_reference",
        )
    if not i2v and req.input_reference is not None:
        raise ApiError(
            400,
            "invalid_request",
            f"{state.model_id} is text-to-video and takes no input_reference; "
            "serve an image-to-video model for a first frame",
            param="input_reference",
        )
    shape = fit(req, constraints)
    image = decode_image(req.input_reference) if req.input_reference is not None else None
    spec = JobSpec(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=shape.width,
        height=shape.height,
        num_frames=shape.num_frames,
        fps=shape.fps,
        seed=req.seed if req.seed is not None else secrets.randbelow(2**31),
        guidance_scale=req.guidance_scale,
        steps=req.steps or state.default_steps,
        image_png=image,
    )
    return board.submit(state.model_id, spec, shape)


def models_body(state: ServerState) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": state.model_id, "object": "model", "loaded": False}
    if state.info is not None and state.board is not None:
        entry.update(state.info)
        entry.update(
            loaded=True,
            usd_per_hour=state.usd_per_hour,
            stats=state.board.stats.wire(),
            queue=state.board.queue(),
        )
    elif state.error:
        entry["error"] = state.error
    return {"object": "list", "data": [entry]}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = f"unknown field; the fields are {', '.join(CreateVideo.model_fields)}"
    return (f"{field}: {msg}" if field else msg), field


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="vidgate model server", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 429 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return JSONResponse(ApiError(400, "invalid_request", message, field).body(), 400)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ok = state.board is not None
        body: dict[str, Any] = {"ok": ok, "loaded": ok}
        if state.error:
            body["error"] = state.error
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return models_body(state)

    @app.post("/v1/videos")
    def create(req: CreateVideo) -> dict[str, Any]:
        job = create_job(state, req)
        board, _, _ = state.ready()
        return video_object(job, board)

    @app.get("/v1/videos/{video_id}")
    def retrieve(video_id: str) -> dict[str, Any]:
        board, _, _ = state.ready()
        return video_object(board.get(video_id), board)

    @app.get("/v1/videos/{video_id}/content")
    def content(video_id: str) -> Response:
        board, _, _ = state.ready()
        job = board.get(video_id)
        if job.status != "completed" or job.content is None:
            raise ApiError(
                404,
                "not_ready",
                f"video {video_id} is {job.status}; content is there once it completed",
            )
        return Response(job.content, media_type="video/mp4")

    @app.post("/v1/videos/{video_id}/cancel")
    def cancel(video_id: str) -> dict[str, Any]:
        board, _, _ = state.ready()
        return video_object(board.cancel(video_id), board)

    return app
