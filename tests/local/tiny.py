"""Tiny random-weight pipelines of every family, built from config in code.

No weights can be downloaded here, so each builder makes every component from a config
(tokenizers included) with random weights. Tests save them with ``save_pretrained`` and the
server loads them back through ``from_pretrained`` — the path real weights take. Sizes follow
diffusers' own dummy components; each saved pipeline is a few hundred KB (HunyuanVideo 1.5:
~18 MB, its glyph MLP is a fixed 2048 wide).
"""

# diffusers' and transformers' constructors are untyped or typed narrower than they take.
# mypy: disable-error-code="no-untyped-call, attr-defined, call-arg, no-any-return"
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
    LTX2Pipeline,
    LTX2VideoTransformer3DModel,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    ByT5Tokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLTextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

try:  # transformers 5: the PIL processors need no torchvision
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    from transformers import SiglipImageProcessorPil as SiglipImageProcessor
except ImportError:  # pragma: no cover - transformers 4
    from transformers import CLIPImageProcessor, SiglipImageProcessor  # type: ignore[assignment]


def tokenizer(extra_specials: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges, no files. The alphabet is sorted: its order changes
    per process, and a saved tokenizer must mean the same ids when loaded elsewhere."""
    specials = ["<pad>", "</s>", "<unk>", *extra_specials]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(extra_specials) or None,
    )


def t5(vocab_size: int, umt5: bool = False) -> torch.nn.Module:
    cfg: dict[str, Any] = dict(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    # Modules built from config start in train mode (dropout on): eval() for determinism.
    model = UMT5EncoderModel(UMT5Config(**cfg)) if umt5 else T5EncoderModel(T5Config(**cfg))
    return model.eval()


def wan_transformer(in_channels: int = 16, **kw: Any) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        **kw,
    ).eval()


def wan_vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def _wan_parts() -> dict[str, Any]:
    """What every Wan pipeline shares: UMT5 text encoder, the Wan VAE, flow-matching steps.
    Seeded first, so each builder's random weights are the same on every call."""
    torch.manual_seed(0)
    tok = tokenizer()
    return dict(
        tokenizer=tok,
        text_encoder=t5(len(tok), umt5=True),
        vae=wan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
    )


def wan21_t2v() -> WanPipeline:
    return WanPipeline(
        **_wan_parts(),
        transformer=wan_transformer(),
    )


def wan21_i2v() -> WanImageToVideoPipeline:
    """Wan 2.1 I2V style: a CLIP vision encoder feeds the transformer's image projection."""
    parts = _wan_parts()
    encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
            projection_dim=8,
        )
    ).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return WanImageToVideoPipeline(
        **parts,
        transformer=wan_transformer(in_channels=36, image_dim=8, added_kv_proj_dim=24),
        image_encoder=encoder,
        image_processor=processor,
    )


def wan22_t2v_a14b() -> WanPipeline:
    """Wan 2.2 A14B style: two experts; ``transformer`` takes the high-noise steps (t above
    boundary_ratio × 1000), ``transformer_2`` the low-noise ones."""
    return WanPipeline(
        **_wan_parts(),
        transformer=wan_transformer(),
        transformer_2=wan_transformer(),
        boundary_ratio=0.875,
    )


def wan22_i2v_a14b() -> WanImageToVideoPipeline:
    """Wan 2.2 I2V style: no image encoder (stored as null), the image enters as latents."""
    return WanImageToVideoPipeline(
        **_wan_parts(),
        transformer=wan_transformer(in_channels=36),
        transformer_2=wan_transformer(in_channels=36),
        boundary_ratio=0.9,
    )


LTX_TEXT_HIDDEN, LTX_TEXT_LAYERS = 32, 2  # connectors: heads × head_dim must equal this


def ltx2_t2v() -> LTX2Pipeline:
    torch.manual_seed(0)
    tok = tokenizer()
    vocab = len(tok)
    text_encoder = Gemma3ForConditionalGeneration(
        Gemma3Config(
            text_config=Gemma3TextConfig(
                vocab_size=vocab,
                hidden_size=LTX_TEXT_HIDDEN,
                intermediate_size=32,
                num_hidden_layers=LTX_TEXT_LAYERS,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=8,
                max_position_embeddings=64,
                sliding_window=16,
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
            ),
            vision_config=SiglipVisionConfig(
                hidden_size=8,
                intermediate_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=16,
                patch_size=8,
            ),
            mm_tokens_per_image=4,
            image_token_index=vocab - 1,
            boi_token_index=vocab - 2,
            eoi_token_index=vocab - 3,
        )
    ).eval()
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=LTX_TEXT_HIDDEN,
        rope_double_precision=False,
        rope_type="split",
    ).eval()
    connectors = LTX2TextConnectors(
        caption_channels=LTX_TEXT_HIDDEN,
        text_proj_in_factor=LTX_TEXT_LAYERS + 1,
        video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_theta=10000.0,
        rope_double_precision=False,
        causal_temporal_positioning=False,
        rope_type="split",
    ).eval()
    vae = AutoencoderKLLTX2Video(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8,),
        decoder_block_out_channels=(8,),
        layers_per_block=(1,),
        decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False),
        downsample_type=("spatial",),
        upsample_residual=(False,),
        upsample_factor=(1,),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        ch_mult=(1,),
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=32,
        latent_channels=2,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=8,
    ).eval()
    vocoder = LTX2Vocoder(
        in_channels=2 * 8,
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    ).eval()
    return LTX2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )


def _cogvideox_parts() -> dict[str, Any]:
    torch.manual_seed(0)
    tok = tokenizer()
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8,) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()
    return dict(tokenizer=tok, text_encoder=t5(len(tok)), vae=vae)


def _cogvideox_transformer(**shape: Any) -> CogVideoXTransformer3DModel:
    """The tiny transformer both CogVideoX pipelines share; ``shape`` sets heads and inputs."""
    return CogVideoXTransformer3DModel(
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=2,
        sample_height=2,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
        **shape,
    ).eval()


def cogvideox_t2v() -> CogVideoXPipeline:
    """CogVideoX 2B style (sincos positions); 9 frames is this tiny model's sample_frames."""
    parts = _cogvideox_parts()
    transformer = _cogvideox_transformer(num_attention_heads=4, attention_head_dim=8, in_channels=4)
    return CogVideoXPipeline(transformer=transformer, scheduler=CogVideoXDDIMScheduler(), **parts)


def cogvideox_i2v() -> CogVideoXImageToVideoPipeline:
    """CogVideoX 5B-I2V style: rotary positions, image latents concatenated (2× channels)."""
    parts = _cogvideox_parts()
    # Rotary positions split the head dim 3:3:2 per axis (h, w, t), each even: 16 works, 8 not.
    transformer = _cogvideox_transformer(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=8,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    )
    return CogVideoXImageToVideoPipeline(
        transformer=transformer, scheduler=CogVideoXDDIMScheduler(), **parts
    )


HUNYUAN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _hunyuan15_transformer(task_type: str) -> HunyuanVideo15Transformer3DModel:
    return HunyuanVideo15Transformer3DModel(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=32,
        image_embed_dim=12,  # the I2V pipeline's SigLIP hidden size
        rope_axes_dim=(2, 2, 4),
        target_size=16,
        task_type=task_type,
    ).eval()


def hunyuan15_t2v() -> HunyuanVideo15Pipeline:
    torch.manual_seed(0)
    tok = tokenizer(extra_specials=("<|im_start|>", "<|im_end|>"))
    tok.chat_template = HUNYUAN_CHAT_TEMPLATE
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            rope_theta=1000000.0,
        )
    ).eval()
    tok2 = ByT5Tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tok2),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    transformer = _hunyuan15_transformer("t2v")
    vae = AutoencoderKLHunyuanVideo15(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16),
        layers_per_block=1,
        spatial_compression_ratio=4,
        temporal_compression_ratio=2,
        downsample_match_channel=False,
        upsample_match_channel=False,
    ).eval()
    return HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tok,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tok2,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )


def hunyuan15_i2v() -> HunyuanVideo15ImageToVideoPipeline:
    """The I2V pipeline sizes the video from the image; a tiny SigLIP encodes it."""
    components = dict(hunyuan15_t2v().components)
    torch.manual_seed(0)
    components["transformer"] = _hunyuan15_transformer("i2v")
    components["image_encoder"] = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=12,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        )
    ).eval()
    components["feature_extractor"] = SiglipImageProcessor(size={"height": 16, "width": 16})
    return HunyuanVideo15ImageToVideoPipeline(**components)


#: name -> builder; the saved folder is named after the key
BUILDERS: dict[str, Callable[[], Any]] = {
    "wan21-t2v": wan21_t2v,
    "wan21-i2v": wan21_i2v,
    "wan22-t2v-a14b": wan22_t2v_a14b,
    "wan22-i2v-a14b": wan22_i2v_a14b,
    "ltx2-t2v": ltx2_t2v,
    "cogvideox-t2v": cogvideox_t2v,
    "cogvideox-i2v": cogvideox_i2v,
    "hunyuan15-t2v": hunyuan15_t2v,
    "hunyuan15-i2v": hunyuan15_i2v,
}


def save(name: str, root: Path) -> Path:
    """Build ``name`` and save it under ``root/name`` as real weights are laid out."""
    target = root / name
    if not (target / "model_index.json").is_file():
        BUILDERS[name]().save_pretrained(target)
    return target


def png_image(width: int = 32, height: int = 32) -> PIL.Image.Image:
    rng = np.random.default_rng(0)
    return PIL.Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
