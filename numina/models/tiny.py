"""Tiny Wan text-to-video pipelines built and saved locally, loadable like the real models.

No weights can be downloaded where this project is built and tested, so tests and the README's main
job use a small pipeline of the same classes (WanTransformer3DModel, AutoencoderKLWan, UMT5 encoder,
a `tokenizers` tokenizer, the flow-matching UniPC scheduler), written with `save_pretrained` and read
back with `WanPipeline.from_pretrained(folder)`: the same path as a real checkpoint. Weights are random
but seeded, so a folder built twice is identical. May import torch, diffusers,
transformers and numina.models.variants/tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from numina.models.tokenizer import build_tiny_tokenizer
from numina.models.variants import get_variant

TINY_TEXT_ENCODER = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
# Full-size pipelines keep the text encoder small: only its width must match the transformer's text_dim.
SMALL_WIDE_TEXT_ENCODER = dict(d_kv=64, d_ff=256, num_layers=1, num_heads=4)
SIZES = ("tiny", "full")
# The release's sampler: flow-matching UniPC with shift 5.0 (METHOD.md, "Setting").
SCHEDULER = dict(
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    num_train_timesteps=1000,
    flow_shift=5.0,
    solver_order=2,
)
_MARKER = "numina_tiny.json"


def build_tiny_pipeline(
    folder: str | Path,
    variant: str = "wan2.1-1.3b",
    seed: int = 0,
    size: str = "tiny",
    transformer_dtype: torch.dtype = torch.float32,
    init_device: str = "cpu",
) -> Path:
    """Write a complete random-weight pipeline of `variant` into `folder` and return the folder.

    `size="tiny"` is the small offline model; `size="full"` has the real transformer and VAE shapes
    (for GPU benchmarks of the real models' cost without their weights) with a one-layer text
    encoder of the real width. `transformer_dtype` is the dtype the transformer is saved in:
    bfloat16 halves the folder (the 14B shape: 28 GB instead of 56), and a pipeline loaded in
    bfloat16 gets the same weights either way. `init_device` is where the transformer's random
    weights are drawn: "cuda" takes seconds where the CPU takes minutes at the 14B shape (PyTorch's
    CPU generator is sequential), and gives other (equally seeded) weights. The folder is a diffusers
    `WanPipeline` checkpoint; it is reused when it was already built for the same variant, seed,
    size, dtype and device (a marker file records them).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    folder = Path(folder)
    spec = get_variant(variant)
    marker = folder / _MARKER
    wanted = {"variant": variant, "seed": seed} | ({"size": size} if size != "tiny" else {})
    if transformer_dtype != torch.float32:
        wanted["transformer_dtype"] = str(transformer_dtype).removeprefix("torch.")
    if init_device != "cpu":
        wanted["init_device"] = init_device
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return folder

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    transformer_config, vae_config = (
        (spec.tiny_transformer, spec.tiny_vae) if size == "tiny" else (spec.transformer, spec.vae)
    )
    encoder_config = (
        TINY_TEXT_ENCODER
        if size == "tiny"
        else dict(SMALL_WIDE_TEXT_ENCODER, d_model=transformer_config["text_dim"])
    )
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **encoder_config)).eval()
    with torch.device(init_device):
        transformer = WanTransformer3DModel(**transformer_config)
    transformer = _cast_as_loading_does(transformer, transformer_dtype).to("cpu")
    z_dim = vae_config["z_dim"]
    vae = AutoencoderKLWan(**vae_config, latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    pipeline = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**SCHEDULER),
        transformer=transformer,
        expand_timesteps=spec.expand_timesteps,
    )
    pipeline.save_pretrained(folder)
    marker.write_text(json.dumps(wanted))
    return folder


def _cast_as_loading_does(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast the parameters to `dtype` except in the modules diffusers keeps in float32 when it loads
    a model in a lower precision (`_keep_in_fp32_modules`), so loading gives the same weights."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, parameter in model.named_parameters():
        if not keep.intersection(name.split(".")):
            parameter.data = parameter.data.to(dtype)
    return model


def default_tiny_folder(variant: str = "wan2.1-1.3b") -> Path:
    """Where the built-in tiny pipeline of `variant` is kept between runs (under the user's cache)."""
    return Path.home() / ".cache" / "numina" / "tiny" / variant
