"""Every family: a tiny pipeline saved, loaded by from_pretrained, run, exported, decoded."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest

from tests.local import tiny
from tests.local.conftest import ModelPath
from tests.local.video import decode
from vidgate.local.families import NO_PIPELINE, WAN_26_DISABLED_REASON, by_name
from vidgate.local.loader import LoadError, inspect_dir
from vidgate.local.protocol import JobSpec
from vidgate.local.runner import Runner

HAS_FTFY = importlib.util.find_spec("ftfy") is not None


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    tiny.png_image(width, height).save(buf, "PNG")
    return buf.getvalue()


def spec(width: int, height: int, frames: int = 9, fps: float = 16.0, **kw: object) -> JobSpec:
    return JobSpec(
        prompt="a red fox running through snow",
        negative_prompt="blurry",
        width=width,
        height=height,
        num_frames=frames,
        fps=fps,
        seed=7,
        guidance_scale=kw.pop("guidance_scale", 5.0),
        steps=2,
        **kw,
    )


CASES = [
    # name, family, catalog model, mode, side, image
    ("wan21-t2v", "wan", "wan-2.1", "text_to_video", 32, False),
    ("wan22-t2v-a14b", "wan22", "wan-2.2", "text_to_video", 32, False),
    ("ltx2-t2v", "ltx2", "ltx-2", "text_to_video", 32, False),
    ("cogvideox-t2v", "cogvideox", "cogvideox-2b", "text_to_video", 16, False),
    ("cogvideox-i2v", "cogvideox", "cogvideox-5b", "image_to_video", 16, True),
    ("hunyuan15-t2v", "hunyuanvideo15", "hunyuanvideo", "text_to_video", 16, False),
    ("hunyuan15-i2v", "hunyuanvideo15", "hunyuanvideo", "image_to_video", 16, True),
]


@pytest.mark.parametrize(("name", "family", "catalog", "mode", "side", "image"), CASES)
def test_family_makes_a_decodable_mp4(
    tiny_model: ModelPath,
    name: str,
    family: str,
    catalog: str,
    mode: str,
    side: int,
    image: bool,
) -> None:
    model = inspect_dir(tiny_model(name))
    assert model.family.name == family
    runner = Runner(model, steps=2)
    info = runner.describe()
    assert (info["catalog_model"], info["modes"]) == (catalog, [mode])
    steps_seen: list[tuple[int, int]] = []
    job = spec(side, side, image_png=png(side, side) if image else None)
    result = runner.run(job, lambda d, t: steps_seen.append((d, t)), lambda: False)
    assert steps_seen == [(1, 2), (2, 2)]
    video = decode(result.mp4)
    assert (video.frames, video.width, video.height, video.codec) == (9, side, side, "h264")
    if family == "ltx2":  # LTX-2 makes its soundtrack in the same pass
        assert result.audio
        assert video.audio_codec == "aac"
        assert video.audio_frames > 0
    else:
        assert not result.audio
        assert video.audio_codec is None
    assert result.compute_seconds > 0


def test_wan22_two_experts_both_denoise(tiny_model: ModelPath) -> None:
    runner = Runner(inspect_dir(tiny_model("wan22-t2v-a14b")), steps=2)
    calls = {"transformer": 0, "transformer_2": 0}
    for attr in calls:
        module = getattr(runner.pipe, attr)

        def count(_m: object, _a: object, attr: str = attr) -> None:
            calls[attr] += 1

        module.register_forward_pre_hook(count)
    runner.run(spec(32, 32), lambda d, t: None, lambda: False)
    # high-noise steps on the first expert, the rest on the second (×2: CFG)
    assert calls["transformer"] > 0
    assert calls["transformer_2"] > 0


def test_tiny_constraints_are_read_from_the_components(tiny_model: ModelPath) -> None:
    wan = Runner(inspect_dir(tiny_model("wan21-t2v")), steps=2).constraints
    assert (wan.frame_step, wan.side_multiple, wan.fps, wan.max_frames) == (4, 16, 16.0, 81)
    ltx = Runner(inspect_dir(tiny_model("ltx2-t2v")), steps=2)
    vae = ltx.pipe.vae_spatial_compression_ratio * ltx.pipe.transformer_spatial_patch_size
    assert ltx.constraints.side_multiple == vae
    assert ltx.constraints.frame_step == ltx.pipe.vae_temporal_compression_ratio
    assert ltx.constraints.fps_free


def test_cogvideox_frames_are_its_sample_frames(tiny_model: ModelPath) -> None:
    runner = Runner(inspect_dir(tiny_model("cogvideox-t2v")), steps=2)
    assert runner.constraints.fixed_frames == runner.pipe.transformer.config.sample_frames == 9
    assert runner.constraints.fps == 8.0


@pytest.mark.parametrize("name", ["wan21-i2v", "wan22-i2v-a14b"])
def test_wan_image_to_video(tiny_model: ModelPath, name: str) -> None:
    folder = tiny_model(name)
    if not HAS_FTFY:
        # diffusers' Wan I2V calls ftfy unconditionally but does not install it: the
        # server says so when it checks the folder, not as a NameError at the first job.
        with pytest.raises(LoadError, match=r"needs the ftfy package.*pip install ftfy"):
            inspect_dir(folder)
        return
    runner = Runner(inspect_dir(folder), steps=2)
    assert runner.mode == "image_to_video"
    result = runner.run(spec(32, 32, image_png=png(32, 32)), lambda d, t: None, lambda: False)
    assert decode(result.mp4).frames == 9


def test_hunyuan_guidance_goes_to_its_guider_and_is_restored(tiny_model: ModelPath) -> None:
    runner = Runner(inspect_dir(tiny_model("hunyuan15-t2v")), steps=2)
    seen: list[float] = []
    guider = runner.pipe.guider
    before = guider.guidance_scale

    def progress(done: int, total: int) -> None:
        seen.append(guider.guidance_scale)

    runner.run(spec(16, 16, guidance_scale=2.5), progress, lambda: False)
    assert seen == [2.5, 2.5]
    assert guider.guidance_scale == before


def test_wan_26_has_no_pipeline_and_says_so() -> None:
    assert "no Wan 2.6 pipeline" in WAN_26_DISABLED_REASON
    assert set(NO_PIPELINE) == {"wan-2.6"}
    assert by_name("wan").catalog_model(None) == "wan-2.1"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "no such folder"),
        (lambda p: p.mkdir(), "model_index.json is missing"),
    ],
)
def test_a_wrong_folder_names_the_files_expected(
    tmp_path: Path, setup: object, message: str
) -> None:
    folder = tmp_path / "weights"
    setup(folder)  # type: ignore[operator]
    with pytest.raises(LoadError) as e:
        inspect_dir(folder)
    for part in (message, str(folder), "model_index.json", "transformer/"):
        assert part in str(e.value)


def test_a_missing_component_folder_is_named(tiny_model: ModelPath, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "partial"
    shutil.copytree(tiny_model("wan21-t2v"), copy)
    shutil.rmtree(copy / "vae")
    with pytest.raises(LoadError, match=r"component folder\(s\) vae/ missing"):
        inspect_dir(copy)


def test_an_unserved_pipeline_class_lists_the_served_ones(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    with pytest.raises(LoadError, match=r"FluxPipeline is not served; supported: .*WanPipeline"):
        inspect_dir(tmp_path)
