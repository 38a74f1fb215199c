"""Loading a diffusers Wan text-to-video pipeline: a hub id, a local folder, or the built-in tiny model.

`load_pipeline` is the one entry point every experiment uses, so the real checkpoints
(Wan2.1-T2V-1.3B/14B, Wan2.2-TI2V-5B) and the tiny offline copies go through the same
`WanPipeline.from_pretrained` path. It also recognises which Wan family a pipeline is, sets the
sampler's flow shift and the attention backend. May import numina.models.*.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import AutoTokenizer

from numina.models.geometry import Geometry
from numina.models.tiny import build_tiny_pipeline, default_tiny_folder
from numina.models.variants import VARIANTS, WanVariant, get_variant, variant_names

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny"


def is_tiny_model(model: str | None) -> bool:
    """`None`, "tiny" and "tiny:<variant>" name the built-in tiny pipelines."""
    return model is None or model == TINY_PREFIX or model.startswith(TINY_PREFIX + ":")


def resolve_model(model: str | None) -> str:
    """The folder or hub id that `model` refers to; builds the tiny pipeline when it is asked for."""
    if is_tiny_model(model):
        variant = "wan2.1-1.3b" if model in (None, TINY_PREFIX) else model.split(":", 1)[1]
        get_variant(variant)
        return str(build_tiny_pipeline(default_tiny_folder(variant), variant))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise FileNotFoundError(
                f"{path} exists but is not a diffusers pipeline folder (no model_index.json). "
                "Point --model at a folder written by WanPipeline.save_pretrained or at a hub id."
            )
        return str(path)
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"Model {model!r} is neither an existing folder nor a hub id of the form 'owner/name'. "
            f"Known hub ids: {[v.hub_id for v in VARIANTS.values()]}; or use 'tiny' / 'tiny:<variant>' "
            f"with a variant in {variant_names()}."
        )
    return model


def load_pipeline(
    model: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    flow_shift: float | None = None,
    attention_backend: str | None = None,
) -> WanPipeline:
    """Load a Wan text-to-video pipeline from a hub id, a local folder or the built-in tiny model.

    The VAE is kept in float32 (as diffusers recommends for Wan); the transformer and text encoder
    use `dtype`. `flow_shift` replaces the UniPC sampler's shift (the release uses 5.0);
    `attention_backend` names a diffusers attention-dispatcher backend ("native", "flash",
    "xformers", ...), left at diffusers' default when None.
    """
    source = resolve_model(model)
    try:
        vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", dtype=torch.float32)
        pipeline = WanPipeline.from_pretrained(source, vae=vae, dtype=dtype)
    except OSError as error:
        raise OSError(
            f"Could not load the Wan pipeline {source!r}: {error}. Without network access, download the "
            "checkpoint elsewhere and pass its local folder, or use the built-in 'tiny' model."
        ) from error
    if flow_shift is not None:
        pipeline.scheduler = UniPCMultistepScheduler.from_config(
            pipeline.scheduler.config, flow_shift=flow_shift
        )
    if attention_backend is not None:
        set_attention_backend(pipeline, attention_backend)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def set_attention_backend(pipeline: WanPipeline, backend: str) -> None:
    """Route the transformer's attention through a diffusers dispatcher backend.

    xformers is one choice among the dispatcher's backends, never a requirement: it gives no attention
    weights and has no CPU kernels, so capture computes its maps on the side in any case.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName

    valid = [name.value for name in AttentionBackendName]
    if backend not in valid:
        raise ValueError(f"Unknown attention backend {backend!r}; diffusers offers {valid}.")
    pipeline.transformer.set_attention_backend(backend)


def identify_variant(pipeline: WanPipeline) -> WanVariant | None:
    """The Wan family whose real shape `pipeline` has (heads, layers, channels), or None (e.g. tiny)."""
    config = pipeline.transformer.config
    for variant in VARIANTS.values():
        shape = variant.transformer
        if (
            config.num_attention_heads == shape["num_attention_heads"]
            and config.num_layers == shape["num_layers"]
            and config.in_channels == shape["in_channels"]
        ):
            return variant
    return None


def load_tokenizer(source: str) -> Any:
    """Only the pipeline's tokenizer (cheap): prompts can be checked before any weights are loaded."""
    return AutoTokenizer.from_pretrained(source, subfolder="tokenizer")


def geometry_of(source: str, num_frames: int, height: int, width: int) -> Geometry:
    """The geometry of a generation from the pipeline's config files alone (no weights loaded), so
    impossible sizes fail before any model work."""
    transformer = SimpleNamespace(**WanTransformer3DModel.load_config(source, subfolder="transformer"))
    vae = AutoencoderKLWan.load_config(source, subfolder="vae")
    return Geometry.from_configs(
        transformer, vae["scale_factor_temporal"], vae["scale_factor_spatial"], num_frames, height, width
    )
