"""The real Wan 2.1 1.3B architecture, random weights, 480p×81: plain vs cache + compile.

``python -m benchmarks.local_models_gpu [--steps N] [--threshold T] [--quick]``

Builds the transformer and VAE from the published Wan2.1-T2V-1.3B-Diffusers configs with
random initialisation (nothing is downloaded; the UMT5 text encoder is replaced by random
prompt embeddings of its real shape, 512×4096, so its 5.7B parameters are not built), then,
with the same seed and embeddings:

1. plain diffusers (eager, no cache);
2. the model server's ``--cache first-block`` (vidgate.local.speed.apply);
3. ``--cache first-block --compile`` (inductor; a short warm-up run compiles first).

Prints seconds per step, end-to-end seconds, seconds of compute per second of video, the
speed-up over plain, block calls the cache skipped, and the PSNR of each run's frames against
the plain run's. The aim on a GPU: ≥ 2x with PSNR ≥ 30 dB. ``--quick`` runs tiny shapes and
a tiny config on CPU, to prove the script runs; never run the full size on CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

#: Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
WAN21_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)
TINY = dict(
    WAN21_1_3B, num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=2, text_dim=32
)


def build(quick: bool, device: str, dtype: Any) -> tuple[Any, int]:
    import diffusers
    import torch

    lib: Any = diffusers  # untyped constructors
    torch.manual_seed(0)
    cfg = TINY if quick else WAN21_1_3B
    transformer = lib.WanTransformer3DModel(**cfg).eval()
    vae = (
        lib.AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        if quick
        else lib.AutoencoderKLWan()  # the defaults are Wan 2.1's VAE
    ).eval()
    scheduler = lib.UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        num_train_timesteps=1000,
    )
    pipe = lib.WanPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer
    )
    pipe.transformer.to(dtype)
    pipe.vae.to(torch.float32)  # Wan's VAE runs in float32, as in diffusers' examples
    pipe.set_progress_bar_config(disable=True)
    return pipe, int(cfg["text_dim"])  # type: ignore[call-overload]


def psnr(a: Any, b: Any) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.local_models_gpu")
    ap.add_argument("--quick", action="store_true", help="tiny config and shapes on CPU")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (20; quick 6)")
    ap.add_argument("--threshold", type=float, default=0.1, help="First Block Cache threshold")
    args = ap.parse_args(argv)

    import torch

    from vidgate.local.speed import SpeedOptions, apply

    quick = args.quick
    device = "cpu" if quick or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not quick:
        ap.error("the full-size run needs a CUDA GPU; use --quick on CPU")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    steps = args.steps or (6 if quick else 20)
    height, width, frames, fps = (32, 32, 9, 16.0) if quick else (480, 832, 81, 16.0)
    pipe, text_dim = build(quick, device, dtype)
    gen = torch.Generator().manual_seed(1)
    embeds = torch.randn(1, 512, text_dim, generator=gen).to(device, dtype)
    negative = torch.randn(1, 512, text_dim, generator=gen).to(device, dtype)

    def call(n_steps: int) -> tuple[Any, float, float]:
        marks: list[float] = []

        def on_step(_p: Any, _i: int, _t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            marks.append(time.perf_counter())
            return kw

        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = pipe(
            prompt_embeds=embeds,
            negative_prompt_embeds=negative,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=n_steps,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            callback_on_step_end=on_step,
        )
        if device == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
        per_step = (marks[-1] - marks[0]) / max(len(marks) - 1, 1)
        return out.frames[0], total, per_step

    video_s = frames / fps
    results: dict[str, dict[str, Any]] = {}
    counter = apply(pipe, SpeedOptions(), "wan", device)
    plain, total, step = call(steps)
    results["plain diffusers"] = {"e2e_s": total, "step_s": step, "skipped": 0, "psnr_db": None}

    counter = apply(
        pipe, SpeedOptions(cache="first-block", cache_threshold=args.threshold), "wan", device
    )
    assert counter is not None
    frames_c, total, step = call(steps)
    results["--cache first-block"] = {
        "e2e_s": total,
        "step_s": step,
        "skipped": counter.skipped,
        "psnr_db": psnr(frames_c, plain),
    }
    before = counter.skipped
    backend = "aot_eager" if quick else "inductor"
    pipe.transformer.compile(backend=backend)
    t0 = time.perf_counter()
    call(2)  # compile (shape-specific) outside the timed run
    compile_s = time.perf_counter() - t0
    before = counter.skipped
    pipe.transformer._reset_stateful_cache()
    frames_cc, total, step = call(steps)
    results[f"--cache first-block --compile ({backend})"] = {
        "e2e_s": total,
        "step_s": step,
        "skipped": counter.skipped - before,
        "psnr_db": psnr(frames_cc, plain),
        "compile_warmup_s": compile_s,
    }
    base = results["plain diffusers"]["e2e_s"]
    name = "tiny Wan (quick, CPU)" if quick else "Wan 2.1 1.3B architecture, random weights"
    print(f"{name}: {width}x{height}x{frames}, {steps} steps, CFG 5.0, {device} {dtype}")
    print(
        f"{'':45s} {'s/step':>8s} {'e2e s':>8s} {'s/video s':>10s} {'speed-up':>9s} "
        f"{'skipped':>8s} {'PSNR dB':>8s}"
    )
    for case, r in results.items():
        p = r["psnr_db"]
        print(
            f"{case:45s} {r['step_s']:8.3f} {r['e2e_s']:8.2f} {r['e2e_s'] / video_s:10.2f} "
            f"{base / r['e2e_s']:8.2f}x {r['skipped']:8d} "
            f"{'-' if p is None else f'{p:.1f}':>8s}"
        )
    print(
        json.dumps(
            {
                "device": device,
                "steps": steps,
                "shape": [width, height, frames],
                "results": results,
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
