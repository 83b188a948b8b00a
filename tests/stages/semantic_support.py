"""Shared by the semantic-stage tests: a tiny random CLIP saved the way real weights are, and
sandbox-rendered clips (one tagged with the sandbox's ``off_prompt`` defect)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from vidgate.sandbox.render import render_mp4
from vidgate.stages.base import StageContext
from vidgate.types import Asset, Job, JobState, QualityGate, VideoRequest


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random-weight CLIP (2 layers, width 32, 32×32 images) and its processor, written
    with save_pretrained: the folder VIDGATE_CLIP_MODEL points at."""
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
    # sorted: ByteLevel.alphabet()'s order changes per process (local-models.md §2)
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=32,
    )
    cfg = CLIPConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
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
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(folder)
    return folder


def clip_file(
    path: Path, *, defect: str | None = None, variant: int = 0, seconds: float = 2.0
) -> Path:
    """A sandbox render (64×48, 8 fps), with the sandbox's own ``defect`` when given (an
    ``off_prompt`` clip is a normal picture carrying the defect tag in its metadata)."""
    return render_mp4(
        path,
        width=64,
        height=48,
        fps=8,
        duration_s=seconds,
        audio=False,
        variant=variant,
        defect=defect,
    )


def job_for(prompt: str, gate: QualityGate, **request: object) -> Job:
    now = datetime.now(UTC)
    return Job(
        id="job_semantic",
        state=JobState.POST_PROCESSING,
        request=VideoRequest(prompt=prompt, quality_gate=gate, **request),  # type: ignore[arg-type]
        created_at=now,
        updated_at=now,
    )


def context(
    job: Job, path: Path, workdir: Path, *, sandbox_url: str | None = None, client: object = None
) -> StageContext:
    asset = Asset(
        id="asset_1",
        uri=str(path),
        sha256="0" * 64,
        bytes=path.stat().st_size,
        duration_s=2.0,
        width=64,
        height=48,
    )
    return StageContext(
        job=job,
        asset=asset,
        path=path,
        workdir=workdir,
        settings=None,
        client=client,
        sandbox_url=sandbox_url,
    )
