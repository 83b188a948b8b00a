"""`vidgate model serve`: a model server for one diffusers pipeline (the ``local`` extra)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from vidgate.cli.common import err_console
from vidgate.errors import ConfigError

app = typer.Typer(help="Self-hosted open models: serve a diffusers pipeline.", no_args_is_help=True)

CACHE_HELP = "Cache hook on the transformer: first-block, taylorseer or none."
OFFLOAD_HELP = "Keep weights off the device between uses: model, group (block level) or none."


@app.command("serve")
def serve(
    source: Annotated[
        str,
        typer.Argument(
            metavar="PATH_OR_REPO_ID",
            help="A diffusers pipeline folder, or a Hub id already in the local cache.",
        ),
    ],
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8766,
    host: Annotated[str, typer.Option("--host", help="Interface (loopback by default).")] = (
        "127.0.0.1"
    ),
    device: Annotated[
        str, typer.Option("--device", help="cuda, cuda:N, cpu, mps, or auto.")
    ] = "auto",
    dtype: Annotated[
        str, typer.Option("--dtype", help="bfloat16, float16, float32, or auto.")
    ] = "auto",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Default denoising steps.")] = 30,
    model_id: Annotated[
        str | None, typer.Option("--model-id", help="Served model id (default: folder name).")
    ] = None,
    usd_per_hour: Annotated[
        float, typer.Option("--usd-per-hour", min=0.0, help="The device's hourly price.")
    ] = 0.0,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=0, help="Jobs that may wait for the device.")
    ] = 16,
    compile_: Annotated[
        bool, typer.Option("--compile", help="torch.compile the transformer.")
    ] = False,
    compile_backend: Annotated[
        str, typer.Option("--compile-backend", help="torch.compile backend.")
    ] = "inductor",
    cache: Annotated[str, typer.Option("--cache", help=CACHE_HELP)] = "none",
    cache_threshold: Annotated[
        float, typer.Option("--cache-threshold", min=0.0, help="First Block Cache threshold.")
    ] = 0.05,
    attention: Annotated[
        str | None, typer.Option("--attention", help="Attention backend (e.g. native, flex).")
    ] = None,
    offload: Annotated[str, typer.Option("--offload", help=OFFLOAD_HELP)] = "none",
    vae_tiling: Annotated[
        bool, typer.Option("--vae-tiling", help="Decode the video in tiles (less memory).")
    ] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Serve as a Ray Serve deployment.")] = False,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Ray Serve replicas (one per GPU).")
    ] = 1,
    max_replicas: Annotated[
        int | None,
        typer.Option(
            "--max-replicas", min=1, help="Ray: autoscale on queue length up to this many."
        ),
    ] = None,
    fault: Annotated[str | None, typer.Option("--fault", hidden=True)] = None,
) -> None:
    """Load PATH_OR_REPO_ID and serve it over the model server protocol until interrupted."""
    from vidgate.extras import require

    require("local")
    if ray:
        require("ray")
    from vidgate.local.loader import LoadError
    from vidgate.local.runner import FAULTS
    from vidgate.local.serve import ServeConfig, prepare
    from vidgate.local.speed import CACHES, OFFLOADS, SpeedOptions

    if cache not in CACHES:
        raise ConfigError(f"--cache {cache}: choose one of {', '.join(CACHES)}")
    if offload not in OFFLOADS:
        raise ConfigError(f"--offload {offload}: choose one of {', '.join(OFFLOADS)}")
    if fault is not None and fault not in FAULTS:
        raise ConfigError(f"--fault {fault}: choose one of {', '.join(FAULTS)}")
    config = ServeConfig(
        source=source,
        host=host,
        port=port,
        device=device,
        dtype=dtype,
        steps=steps,
        model_id=model_id,
        usd_per_hour=usd_per_hour,
        max_queue=max_queue,
        speed=SpeedOptions(
            compile=compile_,
            compile_backend=compile_backend,
            cache=cache,  # type: ignore[arg-type]  # checked against CACHES above
            cache_threshold=cache_threshold,
            attention=attention,
            offload=offload,  # type: ignore[arg-type]  # checked against OFFLOADS above
            vae_tiling=vae_tiling,
        ),
        fault=fault,
    )
    try:
        # The folder first: a wrong path is told at once, before torch is imported.
        _, served_id = prepare(config)
    except LoadError as e:
        raise ConfigError(str(e)) from None
    dev, dt = _device_and_dtype(device, dtype)
    config = dataclasses.replace(config, device=dev, dtype=dt)
    where = f"Ray Serve, {replicas} replica(s)" if ray else dev
    err_console.print(
        f"model server for {served_id} on http://{host}:{port} ({where}, {dt}); "
        "loading the pipeline — /healthz says when it is ready"
    )
    if ray:
        from vidgate.local.ray_serve import serve_ray

        serve_ray(config, replicas=replicas, max_replicas=max_replicas)
    else:
        from vidgate.local.serve import serve as serve_local

        serve_local(config)


def _device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ConfigError(f"--dtype {dtype}: choose bfloat16, float16, float32 or auto")
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device}: choose cuda, cuda:N, cpu, mps or auto") from None
    return device, dtype
