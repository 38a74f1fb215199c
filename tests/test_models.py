"""numina.models: tiny pipelines load like real checkpoints; geometry and loading errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

from numina.models import (
    VARIANTS,
    Geometry,
    build_tiny_pipeline,
    build_tiny_tokenizer,
    identify_variant,
    load_pipeline,
    set_attention_backend,
)


def _config(variant: str) -> SimpleNamespace:
    return SimpleNamespace(**VARIANTS[variant].transformer)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tiny_pipeline_loads_and_generates(variant: str, tmp_path: Path) -> None:
    folder = build_tiny_pipeline(tmp_path / variant, variant)
    pipeline = WanPipeline.from_pretrained(folder)
    assert isinstance(pipeline.transformer, WanTransformer3DModel)
    assert isinstance(pipeline.vae, AutoencoderKLWan)
    assert isinstance(pipeline.scheduler, UniPCMultistepScheduler)
    assert pipeline.scheduler.config.flow_shift == 5.0
    spec = VARIANTS[variant]
    assert pipeline.config.expand_timesteps == spec.expand_timesteps
    assert pipeline.vae_scale_factor_spatial == spec.tiny_vae.get("scale_factor_spatial", 8)

    geometry = Geometry.from_pipeline(pipeline, 9, 64, 64)
    pipeline.set_progress_bar_config(disable=True)
    latents = pipeline(
        "two red cats", num_frames=9, height=64, width=64, num_inference_steps=2, output_type="latent"
    ).frames
    channels = spec.tiny_transformer["in_channels"]
    assert latents.shape == (1, channels, geometry.frames, geometry.height * 2, geometry.width * 2)
    video = pipeline("two red cats", num_frames=9, height=64, width=64, num_inference_steps=1).frames
    assert video.shape == (1, 9, 64, 64, 3)


def test_tiny_build_is_reused_and_deterministic(tmp_path: Path) -> None:
    first = build_tiny_pipeline(tmp_path / "a")
    weights = first / "transformer" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_pipeline(tmp_path / "a") == first
    assert weights.stat().st_mtime_ns == stamp  # not rewritten
    second = build_tiny_pipeline(tmp_path / "b")
    assert weights.read_bytes() == (second / "transformer" / weights.name).read_bytes()


def test_load_pipeline_from_folder_sets_shift_dtype_and_backend(tiny_folder: Path) -> None:
    pipeline = load_pipeline(
        str(tiny_folder), dtype=torch.bfloat16, flow_shift=3.0, attention_backend="native"
    )
    assert pipeline.transformer.dtype == torch.bfloat16
    assert pipeline.vae.dtype == torch.float32
    assert pipeline.scheduler.config.flow_shift == 3.0
    assert identify_variant(pipeline) is None  # the tiny shape is no real model


def test_load_pipeline_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a hub id"):
        load_pipeline("./no/such/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="Unknown Wan variant"):
        load_pipeline("tiny:wan9")


def test_unknown_attention_backend_lists_choices(tiny_pipe) -> None:
    with pytest.raises(ValueError, match="xformers"):
        set_attention_backend(tiny_pipe, "fastest")


@pytest.mark.parametrize(
    ("variant", "heads", "layers", "channels"),
    [("wan2.1-1.3b", 12, 30, 16), ("wan2.1-14b", 40, 40, 16), ("wan2.2-5b", 24, 30, 48)],
)
def test_identify_variant_by_shape(variant: str, heads: int, layers: int, channels: int) -> None:
    config = SimpleNamespace(num_attention_heads=heads, num_layers=layers, in_channels=channels)
    pipeline = SimpleNamespace(transformer=SimpleNamespace(config=config))
    assert identify_variant(pipeline).name == variant


def test_geometry_of_the_release_setting() -> None:
    geometry = Geometry.from_configs(_config("wan2.1-1.3b"), 4, 8, 81, 480, 832)
    assert (geometry.frames, geometry.height, geometry.width) == (21, 30, 52)
    assert geometry.tokens_per_frame == 1560 and geometry.tokens == 32760
    assert (geometry.layers, geometry.heads, geometry.head_dim, geometry.text_length) == (30, 12, 128, 512)
    big = Geometry.from_configs(_config("wan2.1-14b"), 4, 8, 81, 480, 832)
    assert (big.layers, big.heads) == (40, 40)
    ti2v = Geometry.from_configs(_config("wan2.2-5b"), 4, 16, 121, 704, 1280)
    assert (ti2v.frames, ti2v.height, ti2v.width, ti2v.heads) == (31, 22, 40, 24)
    assert Geometry.from_dict(geometry.to_dict()) == geometry
    # latent frame f stands for video frames 4f-3..4f (frame 0 for itself): 81 frames, none left over
    covered = [list(geometry.video_frames(f)) for f in range(geometry.frames)]
    assert covered[0] == [0] and covered[1] == [1, 2, 3, 4] and covered[20] == [77, 78, 79, 80]
    assert sum(covered, []) == list(range(81))


def test_geometry_rejects_sizes_with_nearest_valid_values() -> None:
    config = _config("wan2.1-1.3b")
    with pytest.raises(ValueError, match=r"4k\+1 frames.*77 or 81"):
        Geometry.from_configs(config, 4, 8, 80, 480, 832)
    with pytest.raises(ValueError, match=r"height=470.*multiple of 16.*464 or 480"):
        Geometry.from_configs(config, 4, 8, 81, 470, 832)
    with pytest.raises(ValueError, match=r"width=840.*multiple of 32.*832 or 864"):
        Geometry.from_configs(_config("wan2.2-5b"), 4, 16, 81, 704, 840)


def test_tiny_tokenizer_splits_rare_words_and_pads_like_t5() -> None:
    tokenizer = build_tiny_tokenizer()
    encoded = tokenizer("three cats near an astronaut", padding="max_length", max_length=16)
    pieces = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert pieces[:2] == ["▁three", "▁cat"]  # common words are whole pieces ("cats" = "cat" + "s")
    assert sum(1 for piece in pieces if piece not in ("<pad>", "</s>")) > 8  # "astronaut" splits
    assert pieces.count("</s>") == 1 and pieces[-1] == "<pad>"
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1


def test_tiny_build_in_bfloat16_holds_the_float32_weights_rounded(tmp_path: Path) -> None:
    full = build_tiny_pipeline(tmp_path / "f32")
    half = build_tiny_pipeline(tmp_path / "bf16", transformer_dtype=torch.bfloat16)
    name = "diffusion_pytorch_model.safetensors"
    assert (half / "transformer" / name).stat().st_size < 0.6 * (full / "transformer" / name).stat().st_size
    loaded = {
        folder: load_pipeline(str(folder), torch.bfloat16).transformer.state_dict() for folder in (full, half)
    }
    assert all(torch.equal(loaded[full][key], loaded[half][key]) for key in loaded[full])
    # a folder built in float32 is not taken for a bfloat16 request: it is built again
    stamp = (full / "transformer" / name).stat().st_mtime_ns
    build_tiny_pipeline(tmp_path / "f32", transformer_dtype=torch.bfloat16)
    assert (full / "transformer" / name).stat().st_mtime_ns != stamp


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_build_drawn_on_the_gpu_loads_and_is_recorded(tmp_path: Path) -> None:
    folder = build_tiny_pipeline(tmp_path / "gpu", init_device="cuda", transformer_dtype=torch.bfloat16)
    marker = json.loads((folder / "numina_tiny.json").read_text())
    assert marker["init_device"] == "cuda" and marker["transformer_dtype"] == "bfloat16"
    weights = load_pipeline(str(folder), torch.bfloat16).transformer.state_dict()
    assert all(
        tensor.device.type == "cpu" and torch.isfinite(tensor.float()).all() for tensor in weights.values()
    )
