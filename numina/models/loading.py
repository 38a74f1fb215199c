"""Loading a diffusers Wan text-to-video pipeline: a hub id, a local folder, or a built-in model.

`load_pipeline` is the one entry point every experiment uses, so the real checkpoints
(Wan2.1-T2V-1.3B/14B, Wan2.2-TI2V-5B), the trained built-in CountWorld models and the tiny random
offline copies go through the same `WanPipeline.from_pretrained` path. It also recognises which Wan
family a pipeline is, sets the sampler's flow shift and the attention backend. May import torch, diffusers,
transformers, huggingface_hub, numina.models.* and numina.checks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import AutoTokenizer

from numina.checks import check_real
from numina.models import countworld, countworld2
from numina.models.geometry import Geometry
from numina.models.tiny import build_tiny_pipeline, default_tiny_folder
from numina.models.variants import VARIANTS, WanVariant, get_variant, variant_names

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny"
# The built-in trained models by name: each module has FOLDER (its committed weights), RUN_DEFAULTS
# and missing_weights_message.
BUILTIN = {countworld.NAME: countworld, countworld2.NAME: countworld2}
# What runs when no model is named: the trained CountWorld pipeline committed in models/countworld.
DEFAULT_MODEL = countworld.NAME
# A pipeline folder may say how it is meant to be run (video size, steps, counter) in this file.
DEFAULTS_FILE = "numina.json"
# The tiny random pipelines run like CountWorld, but on CountBench's prompts.
SMALL_DEFAULTS = countworld.RUN_DEFAULTS | {"prompt_set": "countbench"}
REAL_DEFAULTS = {
    "frames": 81,
    "height": 480,
    "width": 832,
    "steps": 50,
    "counter": "grounding-dino",
    "prompt_set": "countbench",
}


def is_tiny_model(model: str | None) -> bool:
    """ "tiny" and "tiny:<variant>" name the tiny random-weight pipelines built on the fly."""
    return model is not None and (model == TINY_PREFIX or model.startswith(TINY_PREFIX + ":"))


def model_defaults(model: str | None) -> dict:
    """How `model` is run unless told otherwise: frames, height, width, steps, counter and prompt set.

    The built-in models are small (17 frames at 128x128, 20 steps, the exact colour counter), and
    CountWorld is evaluated on its own prompts; a local folder may declare its own in `numina.json`
    (the CountWorld folder does); real models get the release's 81 frames at 832x480, 50 steps,
    GroundingDINO and CountBench.
    """
    model = model or DEFAULT_MODEL
    if model in BUILTIN:
        return dict(BUILTIN[model].RUN_DEFAULTS)
    if is_tiny_model(model):
        return dict(SMALL_DEFAULTS)
    declared = Path(model).expanduser() / DEFAULTS_FILE
    if declared.is_file():
        return REAL_DEFAULTS | json.loads(declared.read_text())
    return dict(REAL_DEFAULTS)


def resolve_model(model: str | None) -> str:
    """The folder or hub id that `model` refers to; builds a tiny pipeline when one is asked for."""
    model = model or DEFAULT_MODEL
    if model in BUILTIN:
        folder = BUILTIN[model].FOLDER
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(BUILTIN[model].missing_weights_message(folder))
        return str(folder)
    if is_tiny_model(model):
        variant = "wan2.1-1.3b" if model == TINY_PREFIX else model.split(":", 1)[1]
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
            f"Known hub ids: {[v.hub_id for v in VARIANTS.values()]}; or use a built-in model "
            f"{sorted(BUILTIN)}, or 'tiny' / 'tiny:<variant>' (random weights) with a variant in "
            f"{variant_names()}."
        )
    return _reachable_hub_id(model)


def _reachable_hub_id(model: str) -> str:
    """`model` when it is in the local hub cache or the hub answers for it; otherwise a
    FileNotFoundError that says the folder does not exist and why the id could not be used (one quick
    request, instead of the loaders' retries after the run has started)."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(huggingface_hub.try_to_load_from_cache(model, "model_index.json"), str):
        return model
    folder = f"There is no folder {str(Path(model).expanduser().absolute())!r}"
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        reason = "the hub is switched off (HF_HUB_OFFLINE) and the id is not in the local hub cache"
    else:
        try:
            huggingface_hub.model_info(model, timeout=10)
            return model
        except GatedRepoError:  # it exists; the loader says what access it needs
            return model
        except RepositoryNotFoundError:
            reason = "the hub has no model with that id (or it is private)"
        except Exception as error:  # no network, DNS, proxy, server error: all mean "not reachable"
            reason = f"the hub could not be reached ({type(error).__name__}: {error})"
    raise FileNotFoundError(
        f"{folder}, and the hub id {model!r} could not be used: {reason}. Pass an existing pipeline "
        f"folder, a reachable hub id such as {VARIANTS['wan2.1-1.3b'].hub_id!r}, or a built-in model "
        f"{sorted(BUILTIN)}."
    )


def load_pipeline(
    model: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    flow_shift: float | None = None,
    attention_backend: str | None = None,
) -> WanPipeline:
    """Load a Wan text-to-video pipeline from a hub id, a local folder or a built-in model.

    The VAE is kept in float32 (as diffusers recommends for Wan); the transformer and text encoder
    use `dtype`. `flow_shift` replaces the UniPC sampler's shift (the release uses 5.0);
    `attention_backend` names a diffusers attention-dispatcher backend ("native", "flash",
    "xformers", ...), left at diffusers' default when None.
    """
    if flow_shift is not None:
        check_real("flow_shift", flow_shift, 0, low_open=True)
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
