"""`vidgate model serve` on one device: check the folder, start HTTP, load in the background.

The folder is checked before anything starts (a wrong path exits 2 at once); the pipeline
itself loads after the server listens, so ``/healthz`` says 503 while a large model loads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from vidgate.local.loader import LoadError, ModelDir, inspect_dir, offline, resolve
from vidgate.local.server import ServerState, create_app
from vidgate.local.speed import SpeedOptions

log = logging.getLogger("vidgate.local")


@dataclass(frozen=True)
class ServeConfig:
    source: str  # a folder or a Hub id in the local cache
    host: str = "127.0.0.1"
    port: int = 8766
    device: str = "cpu"
    dtype: str = "float32"
    steps: int = 30
    model_id: str | None = None
    usd_per_hour: float = 0.0
    max_queue: int = 16
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    fault: str | None = None  # test-only (runner.FAULTS)


def prepare(config: ServeConfig) -> tuple[ModelDir, str]:
    """The checked folder and the served model id; LoadError says what is wrong."""
    offline()
    model = inspect_dir(resolve(config.source))
    default_id = Path(config.source.rstrip("/")).name.lower() or model.path.name
    return model, config.model_id or default_id


def load_into(state: ServerState, model: ModelDir, config: ServeConfig) -> None:
    from vidgate.local.runner import Runner

    try:
        runner = Runner(
            model,
            device=config.device,
            dtype=config.dtype,
            steps=config.steps,
            speed=config.speed,
            fault=config.fault,
        )
    except Exception as e:  # the server keeps answering, with the reason, instead of dying
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        log.error("model %s failed to load: %s", model.path, reason)
        state.fail(reason)
        return
    state.attach(runner.describe(), runner.run)
    log.info("model %s loaded from %s", state.model_id, model.path)


def serve(config: ServeConfig) -> None:
    import uvicorn

    model, model_id = prepare(config)
    state = ServerState(
        model_id,
        usd_per_hour=config.usd_per_hour,
        max_queue=config.max_queue,
        default_steps=config.steps,
    )
    threading.Thread(target=load_into, args=(state, model, config), daemon=True).start()
    uvicorn.run(create_app(state), host=config.host, port=config.port, log_level="warning")


__all__ = ["LoadError", "ServeConfig", "prepare", "serve"]
