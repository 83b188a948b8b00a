"""One loaded pipeline and how a job runs on it: kwargs, progress, cancel, OOM, export.

Runs on the device worker's thread only: one job on the device at a time.
"""

from __future__ import annotations

import inspect
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidgate.local.export import encode_mp4
from vidgate.local.loader import ModelDir, load_pipeline
from vidgate.local.protocol import Constraints, JobSpec
from vidgate.local.speed import SpeedOptions, apply, transformers_of

#: test-only fault kinds (`vidgate model serve --fault`, hidden): "oom" makes the transformer
#: ask the allocator for 2**62 bytes before its first block — a genuine allocation failure
#: from torch (DefaultCPUAllocator on CPU, torch.OutOfMemoryError on CUDA), at no cost.
FAULTS = ("oom",)

Progress = Callable[[int, int], None]  # (steps done, steps in all)


class Cancelled(Exception):
    """Raised from the step callback when the job was cancelled."""


class OutOfMemory(Exception):
    """The device ran out of memory: a retryable capacity failure for the gateway."""


class PipelineFailed(Exception):
    """The model raised; the message is its one-line reason."""


@dataclass(frozen=True)
class RunResult:
    mp4: bytes
    compute_seconds: float  # the pipeline call: denoising and decoding, on the device
    skipped_calls: int  # cached module calls this job saved
    audio: bool


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError | MemoryError) and any(
        s in msg for s in ("out of memory", "can't allocate memory", "not enough memory")
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class Runner:
    def __init__(
        self,
        model: ModelDir,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        steps: int = 30,
        speed: SpeedOptions | None = None,
        fault: str | None = None,
    ) -> None:
        self.model = model
        self.family = model.family
        self.device = device
        self.dtype = dtype
        self.steps = steps
        self.speed = speed or SpeedOptions()
        self.pipe = load_pipeline(model, dtype)
        self.counter = apply(self.pipe, self.speed, self.family.name, device)
        self.constraints: Constraints = self.family.constraints(self.pipe)
        self.catalog_model = self.family.catalog_model(self.pipe)
        self.mode = self.family.mode(model.pipeline_class)
        params = inspect.signature(self.pipe.__call__).parameters
        self._has_callback = "callback_on_step_end" in params
        self._takes_guidance = "guidance_scale" in params
        self._wrapped_scheduler: Any = None
        if fault == "oom":
            self._inject_oom()

    def describe(self) -> dict[str, Any]:
        """The per-model part of ``/v1/models`` (plain data: it travels from Ray replicas)."""
        return {
            "family": self.family.name,
            "catalog_model": self.catalog_model,
            "pipeline": self.model.pipeline_class,
            "modes": [self.mode],
            "constraints": self.constraints.wire(),
            "constraints_obj": self.constraints.__dict__,
            "device": self.device,
            "dtype": self.dtype,
            "steps": self.steps,
            "audio": self.family.makes_audio,
            "speed": self.speed.wire(),
        }

    def kwargs(self, job: JobSpec) -> dict[str, Any]:
        import PIL.Image
        import torch

        kw: dict[str, Any] = {
            "prompt": job.prompt,
            "num_frames": job.num_frames,
            "num_inference_steps": job.steps,
            "generator": torch.Generator(device="cpu").manual_seed(job.seed),
            "output_type": "np",
        }
        if job.negative_prompt is not None:
            kw["negative_prompt"] = job.negative_prompt
        if self.model.pipeline_class not in self.family.sized_by_image:
            kw.update(height=job.height, width=job.width)
        if job.guidance_scale is not None and self._takes_guidance:
            kw["guidance_scale"] = job.guidance_scale
        if job.image_png is not None:
            image = PIL.Image.open(io.BytesIO(job.image_png)).convert("RGB")
            kw["image"] = image.resize((job.width, job.height))
        kw.update(self.family.call_kwargs(self.pipe, job))
        return kw

    def run(self, job: JobSpec, progress: Progress, cancelled: Callable[[], bool]) -> RunResult:
        kw = self.kwargs(job)
        total = job.steps
        self._watch_steps(kw, total, progress, cancelled)
        default_guidance: float | None = None
        if self.family.set_guidance is not None and job.guidance_scale is not None:
            default_guidance = float(self.pipe.guider.guidance_scale)
            self.family.set_guidance(self.pipe, job.guidance_scale)
        for transformer in transformers_of(self.pipe):
            # A cancelled or failed job leaves a cache's state mid-run; start each job clean.
            reset = getattr(transformer, "_reset_stateful_cache", None)
            if reset is not None and self.speed.cache != "none":
                reset()
        skipped_before = self.counter.skipped if self.counter else 0
        started = time.perf_counter()
        try:
            out = self.pipe(**kw)
        except Cancelled:
            raise
        except Exception as e:
            if is_oom(e):
                self._free()
                raise OutOfMemory(first_line(e)) from e
            raise PipelineFailed(first_line(e)) from e
        finally:
            if default_guidance is not None and self.family.set_guidance is not None:
                self.family.set_guidance(self.pipe, default_guidance)
            self._unwatch_steps()
        compute = time.perf_counter() - started
        frames = out.frames[0]
        audio, rate = None, None
        if self.family.makes_audio and getattr(out, "audio", None) is not None:
            audio = out.audio[0].float().cpu().numpy()
            rate = int(self.pipe.vocoder.config.output_sampling_rate)
        mp4 = encode_mp4(frames, job.fps, audio=audio, sample_rate=rate)
        skipped = (self.counter.skipped if self.counter else 0) - skipped_before
        return RunResult(
            mp4=mp4, compute_seconds=compute, skipped_calls=skipped, audio=audio is not None
        )

    # -- progress and cancel between denoising steps --------------------------------------

    def _watch_steps(
        self, kw: dict[str, Any], total: int, progress: Progress, cancelled: Callable[[], bool]
    ) -> None:
        def step_done(step: int) -> None:
            progress(step + 1, total)
            if cancelled():
                raise Cancelled()

        if self._has_callback:

            def on_step_end(
                _pipe: Any, step: int, _t: Any, callback_kwargs: dict[str, Any]
            ) -> dict[str, Any]:
                step_done(step)
                return callback_kwargs

            kw["callback_on_step_end"] = on_step_end
            return
        # HunyuanVideo 1.5 takes no step callback: each denoising step calls the
        # scheduler's step() exactly once, so count (and cancel) there instead.
        scheduler = self.pipe.scheduler
        original = scheduler.step
        count = [0]

        def step(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            step_done(count[0])
            count[0] += 1
            return result

        scheduler.step = step
        self._wrapped_scheduler = scheduler

    def _unwatch_steps(self) -> None:
        scheduler, self._wrapped_scheduler = self._wrapped_scheduler, None
        if scheduler is not None:
            del scheduler.step  # the class's own step() shows through again

    def _free(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _inject_oom(self) -> None:
        import torch

        device = self.device

        def allocate(_m: Any, _args: Any) -> None:
            torch.empty(1 << 62, dtype=torch.uint8, device=device)

        self.pipe.transformer.register_forward_pre_hook(allocate)
