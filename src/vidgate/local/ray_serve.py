"""`vidgate model serve --ray --replicas N`: the same server, scaled out on Ray Serve.

Two deployments:

- ``ModelReplica`` (N replicas; ``num_gpus=1`` each on a GPU box, ``num_cpus=0.5`` on CPU)
  loads the pipeline once and runs one job at a time (``max_ongoing_requests=1``), streaming
  progress per denoising step back to its caller. Ray Serve queues jobs across replicas and,
  with ``autoscaling_config`` instead of a fixed count, adds replicas on queue length
  (``target_ongoing_requests=1``: one job per replica).
- ``Ingress`` (1 replica) serves the very same FastAPI app (``vidgate.local.server``): jobs,
  the bounded queue and ids live there; its board has one dispatcher per replica, each
  waiting on a streamed call to a replica.

Cancel: the ingress stops the stream and Ray cancels the call; the replica's async method
sees the cancellation and the pipeline stops at its next denoising step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from vidgate.local.board import RunFn
from vidgate.local.protocol import JobSpec
from vidgate.local.runner import Cancelled, OutOfMemory, PipelineFailed, RunResult
from vidgate.local.serve import ServeConfig, prepare
from vidgate.local.server import ServerState, create_app

log = logging.getLogger("vidgate.local")


class ModelReplica:
    """One pipeline on one device (wrapped by ``serve.deployment`` in :func:`build_app`)."""

    def __init__(self, config: ServeConfig, model_dir: str) -> None:
        from vidgate.local.loader import inspect_dir
        from vidgate.local.runner import Runner

        self.runner = Runner(
            inspect_dir(Path(model_dir)),
            device=config.device,
            dtype=config.dtype,
            steps=config.steps,
            speed=config.speed,
            fault=config.fault,
        )

    def describe(self) -> dict[str, Any]:
        return self.runner.describe()

    async def run(self, spec_json: str) -> AsyncIterator[dict[str, Any]]:
        spec = JobSpec.model_validate_json(spec_json)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def progress(done: int, total: int) -> None:
            loop.call_soon_threadsafe(events.put_nowait, {"progress": [done, total]})

        def work() -> None:
            try:
                r = self.runner.run(spec, progress, cancel.is_set)
                event: dict[str, Any] = {
                    "result": {
                        "mp4": r.mp4,
                        "compute_seconds": r.compute_seconds,
                        "skipped_calls": r.skipped_calls,
                        "audio": r.audio,
                    }
                }
            except Cancelled:
                event = {"error": ["cancelled", "cancelled"]}
            except OutOfMemory as e:
                event = {"error": ["out_of_memory", str(e)]}
            except Exception as e:
                event = {"error": ["pipeline_error", str(e)]}
            loop.call_soon_threadsafe(events.put_nowait, event)

        task = loop.run_in_executor(None, work)
        try:
            while True:
                event = await events.get()
                yield event
                if "progress" not in event:
                    break
        finally:
            cancel.set()  # the caller cancelled (or is done): stop at the next step
            await asyncio.shield(task)


def dispatch(handle: Any) -> RunFn:
    """A board run function that sends the job to a replica and follows its stream."""

    def run(
        spec: JobSpec, progress: Callable[[int, int], None], cancelled: Callable[[], bool]
    ) -> RunResult:
        stream = handle.options(stream=True).run.remote(spec.model_dump_json())
        for event in stream:
            if "progress" in event:
                progress(*event["progress"])
                if cancelled():
                    stream.cancel()
                    raise Cancelled()
            elif "result" in event:
                return RunResult(**event["result"])
            else:
                code, message = event["error"]
                if code == "cancelled":
                    raise Cancelled()
                if code == "out_of_memory":
                    raise OutOfMemory(message)
                raise PipelineFailed(message)
        raise PipelineFailed("the replica ended the job without a result")

    return run


class Ingress:
    """The protocol's HTTP app; jobs are run by the replicas (see the module docstring)."""

    def __init__(self, replica: Any, config: ServeConfig, model_id: str, replicas: int) -> None:
        self.state = ServerState(
            model_id,
            usd_per_hour=config.usd_per_hour,
            max_queue=config.max_queue,
            default_steps=config.steps,
        )

        def attach() -> None:
            try:
                info = replica.describe.remote().result()
            except Exception as e:
                self.state.fail(f"{type(e).__name__}: {e}".splitlines()[0])
                return
            self.state.attach(info, dispatch(replica), workers=replicas)

        threading.Thread(target=attach, daemon=True).start()

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.state)


def build_app(
    config: ServeConfig,
    replicas: int,
    *,
    max_replicas: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 0.5,
) -> Any:
    """The Ray Serve application (``serve.run`` it). GPUs: one per replica when present.

    With ``max_replicas`` above ``replicas``, Serve autoscales ModelReplica on queue length
    between the two: one job per replica is the target, so waiting jobs add replicas."""
    import ray.serve

    serve: Any = ray.serve  # its decorators are typed for decorator use only
    model, model_id = prepare(config)
    if num_gpus is None:
        num_gpus = 1.0 if config.device.startswith("cuda") else 0.0
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus:
        actor["num_gpus"] = num_gpus
    scaling: dict[str, Any] = {"num_replicas": replicas}
    if max_replicas is not None and max_replicas > replicas:
        scaling = {
            "autoscaling_config": {
                "min_replicas": replicas,
                "max_replicas": max_replicas,
                "target_ongoing_requests": 1,
            }
        }
    replica_cls = serve.deployment(
        ModelReplica,
        name="ModelReplica",
        max_ongoing_requests=1,
        ray_actor_options=actor,
        **scaling,
    )
    top = max(replicas, max_replicas or 0)
    ingress_cls = serve.deployment(
        serve.ingress()(Ingress),
        name="Ingress",
        num_replicas=1,
        max_ongoing_requests=max(100, top * 4),
        ray_actor_options={"num_cpus": 0},
    )
    replica = replica_cls.bind(config, str(model.path))
    # One dispatcher per replica the deployment may have: each keeps one job in flight.
    return ingress_cls.bind(replica, config, model_id, top)


def serve_ray(config: ServeConfig, replicas: int, max_replicas: int | None = None) -> None:
    """Start (or join) a Ray cluster, run the app on HOST:PORT, block until interrupted."""
    import time

    import ray
    import ray.serve

    serve: Any = ray.serve
    app = build_app(config, replicas, max_replicas=max_replicas)
    ray.init(address="auto" if _cluster_running() else None, include_dashboard=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(app, name="vidgate-model", route_prefix="/")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


def _cluster_running() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))
