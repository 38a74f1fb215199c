"""The CountWorld model's shape and where its trained weights live.

CountWorld is a small Wan text-to-video pipeline trained on the procedural world of counted coloured
shapes (`numina.countworld.world`): the built-in default model, whose weights are committed,
because random weights cannot count. This module fixes its architecture (a
`WanTransformer3DModel`, an `AutoencoderKLWan` of stride 4x4x4, a frozen random two-layer UMT5
encoder, a tokenizer over the world's words, the release's flow-matching UniPC sampler), builds it
untrained for `experiments/train_countworld.py`, and saves it as a diffusers folder in float16,
every file under the repository's 16 MB limit.
May import torch, diffusers, transformers, numina.models.tokenizer/tiny/variants and
numina.countworld.world.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from numina.countworld.world import vocabulary
from numina.models.tiny import SCHEDULER
from numina.models.tokenizer import build_tiny_tokenizer
from numina.models.variants import WAN21_TRANSFORMER

NAME = "countworld"
# The committed weights (trained on an H200 with experiments/train_countworld.py).
FOLDER = Path(__file__).resolve().parents[2] / "models" / NAME
# 17 frames at 128x128 -> latent 5 x 32 x 32 -> 5 x 16 x 16 tokens after the 1x2x2 patch: eight
# objects of radius 6-9 px are two to three tokens wide and stay separable in the token grid.
VIDEO = {"frames": 17, "height": 128, "width": 128}
# The Wan2.1 transformer, narrowed: 8 blocks of 6 heads of 32, text width 128 (5.2M parameters).
TRANSFORMER = dict(
    WAN21_TRANSFORMER, num_attention_heads=6, attention_head_dim=32, text_dim=128, ffn_dim=768, num_layers=8
)
# Two down-sampling levels, both also in time: stride 4 in time, height and width.
VAE = dict(
    base_dim=16,
    z_dim=16,
    dim_mult=[1, 2, 4],
    num_res_blocks=1,
    temperal_downsample=[True, True],
    scale_factor_spatial=4,
    scale_factor_temporal=4,
)
TEXT_ENCODER = dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4)
SHARD_SIZE = "15MB"
# How the folder is run unless told otherwise (read by numina.models.model_defaults from numina.json).
RUN_DEFAULTS = {**VIDEO, "steps": 20, "counter": "exact", "prompt_set": NAME}


def countworld_tokenizer() -> PreTrainedTokenizerFast:
    """The T5-style tokenizer that keeps every word of the world's captions as one piece."""
    return build_tiny_tokenizer(tuple(vocabulary()))


def untrained_pipeline(seed: int = 0) -> WanPipeline:
    """The CountWorld pipeline with seeded random weights: the starting point of training."""
    torch.manual_seed(seed)
    tokenizer = countworld_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TEXT_ENCODER)).eval()
    text_encoder.requires_grad_(False)
    z_dim = VAE["z_dim"]
    vae = AutoencoderKLWan(**VAE, latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**SCHEDULER),
        transformer=WanTransformer3DModel(**TRANSFORMER),
    )


def save_countworld(pipeline: WanPipeline, folder: str | Path, run_defaults: dict | None = None) -> Path:
    """Write `pipeline` as a diffusers folder with float16 weights in files of at most 15 MB, and
    `run_defaults` (this model's by default) as its `numina.json`.

    The pipeline itself is left in its own dtype (a copy of each model is cast), so training can go on.
    """
    folder = Path(folder)
    copies = {name: _float16_copy(getattr(pipeline, name)) for name in ("transformer", "vae", "text_encoder")}
    WanPipeline(tokenizer=pipeline.tokenizer, scheduler=pipeline.scheduler, **copies).save_pretrained(
        folder, safe_serialization=True, max_shard_size=SHARD_SIZE
    )
    run_defaults = RUN_DEFAULTS if run_defaults is None else run_defaults
    (folder / "numina.json").write_text(json.dumps(run_defaults, indent=2) + "\n")
    return folder


def _float16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float16 copy, except the modules diffusers keeps in float32 (norms, time embedding, RoPE)."""
    duplicate = copy.deepcopy(model)
    keep = getattr(duplicate, "_keep_in_fp32_modules", None) or []
    for name, parameter in duplicate.named_parameters():
        if not any(part in keep for part in name.split(".")):
            parameter.data = parameter.data.to(torch.float16)
    return duplicate


def missing_weights_message(folder: Path = FOLDER) -> str:
    """What to do when the committed CountWorld folder is absent (e.g. a non-editable install)."""
    return (
        f"The CountWorld weights are not at {folder}. They are committed with the repository: run from a "
        "clone (pip install -e .), pass --model with a pipeline folder, or retrain them with "
        "experiments/train_countworld.py."
    )
