"""The semantic stage's own costs beside a plain full decode of the same clip.

For 5 s and 30 s sandbox clips (H.264, 24 fps, a keyframe every second) at 720p and 1080p:
the median time to decode every video frame with PyAV (the baseline), to sample the 8 frames
CLIP scores (seeking to the keyframe before each, the default, and decoding straight through),
and to score them with a CLIP of ViT-B/32's shape (random weights built from the default
CLIPConfig, saved and loaded through the stage's real loading path: the weights' values do
not change the arithmetic). The judge's figures are per clip: the bytes sent inline and the
worst-case cost estimated before the call. ``--quick``: 2 s clips, a tiny CLIP.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from benchmarks.common import Options, fmt, heading, say, table
from vidgate.sandbox.render import render_mp4
from vidgate.stages import _judge
from vidgate.stages._clip import scorer
from vidgate.stages._frames import sample_frames

NAME = "semantic"
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
FRAMES = 8


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _decode_all(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _save_clip(folder: Path, tiny: bool) -> Path:
    """A CLIP (ViT-B/32 shape, or tiny) with random weights and a file-less byte-level
    tokenizer, written with save_pretrained."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        PreTrainedTokenizerFast,
    )

    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tk,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=77,
    )
    if tiny:
        cfg = CLIPConfig(
            text_config={
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
            },
            vision_config={
                "image_size": 32,
                "patch_size": 8,
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
            },
            projection_dim=16,
        )
        images = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    else:
        cfg = CLIPConfig()  # ViT-B/32: 12 + 12 layers, 512/768 wide, 224 px, patch 32
        images = CLIPImageProcessor()
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=images, tokenizer=tok)  # type: ignore[no-untyped-call]
    processor.save_pretrained(folder)
    return folder


def run(options: Options) -> dict[str, Any]:
    heading("semantic: CLIP sampling and scoring, the judge's request, vs a full PyAV decode")
    shapes = (
        [("360p", 2.0), ("720p", 2.0)]
        if options.quick
        else [("720p", 5.0), ("720p", 30.0), ("1080p", 5.0), ("1080p", 30.0)]
    )
    repeat = 3 if options.quick else 5
    prompt = "a red fox running through fresh snow at dawn, cinematic"
    rows: list[list[object]] = []
    figures: dict[str, Any] = {"clips": {}, "frames_sampled": FRAMES}
    with tempfile.TemporaryDirectory(prefix="vidgate-bench-semantic-") as tmp:
        root = Path(tmp)
        say("  building the CLIP model...")
        t0 = time.perf_counter()
        model = scorer(str(_save_clip(root / "clip", tiny=options.quick)))
        figures["clip_load_s"] = round(time.perf_counter() - t0, 2)
        figures["clip_shape"] = "tiny" if options.quick else "ViT-B/32"
        for res, seconds in shapes:
            w, h = SIZES[res]
            label = f"{res} {seconds:g}s"
            say(f"  rendering {label}...")
            clip = render_mp4(
                root / f"{res}_{seconds:g}.mp4",
                width=w,
                height=h,
                fps=24,
                duration_s=seconds,
                audio=True,
            )
            frames = sample_frames(clip, count=FRAMES)
            model.score(prompt, frames)  # warm
            decode_s = _median(lambda c=clip: _decode_all(c), repeat)  # type: ignore[misc]
            seek_s = _median(lambda c=clip: sample_frames(c, count=FRAMES), repeat)  # type: ignore[misc]
            through_s = _median(
                lambda c=clip: sample_frames(c, count=FRAMES, seek_gap_s=None),  # type: ignore[misc]
                repeat,
            )
            score_s = _median(lambda f=frames: model.score(prompt, f), repeat)  # type: ignore[misc]
            size = clip.stat().st_size
            estimate = _judge.estimate_cost("gemini-2.5-flash", seconds, prompt, 1024)
            figures["clips"][label] = {
                "decode_s": round(decode_s, 4),
                "sample_seek_s": round(seek_s, 4),
                "sample_through_s": round(through_s, 4),
                "clip_score_s": round(score_s, 4),
                "clip_total_vs_decode": round((seek_s + score_s) / decode_s, 4),
                "judge_inline_bytes": size * 4 // 3,
                "judge_estimate_usd": estimate,
            }
            rows.append(
                [
                    label,
                    fmt(decode_s * 1e3, 0),
                    fmt(seek_s * 1e3, 1),
                    fmt(through_s * 1e3, 1),
                    fmt(score_s * 1e3, 1),
                    f"{(seek_s + score_s) / decode_s:.1%}",
                    f"{size * 4 / 3 / 2**20:.2f}",
                    f"${estimate:.4f}",
                ]
            )
    say()
    say(
        table(
            [
                "clip",
                "full decode ms",
                f"{FRAMES} frames (seek) ms",
                f"{FRAMES} frames (through) ms",
                "CLIP score ms",
                "CLIP total/decode",
                "judge MiB sent",
                "judge max $",
            ],
            rows,
        )
    )
    say(
        f"\n  medians of {repeat}; CLIP = {figures['clip_shape']} (random weights, same "
        f"arithmetic), loaded in {figures['clip_load_s']:g} s; judge max $ = the estimate "
        "reserved before the call (gemini-2.5-flash, 1024 output tokens)."
    )
    return figures
