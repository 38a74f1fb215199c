"""The CountWorld 2 model's shape, how it starts training, and where its trained weights live.

CountWorld 2 is the second built-in model organism: a small Wan text-to-video pipeline whose objects
are tens of tokens wide, so that self-attention heads can separate instances as they do at Wan2.1's
480p grid (the first CountWorld's objects covered 2-4 tokens). Frames of 128x128 pass a VAE of
stride 4 and a transformer patch of 1x1x1: 32x32 tokens per latent frame, one token per 4 pixels.
Unlike the first CountWorld, the text encoder (a small UMT5) is trained together with the transformer,
so numerals mean something to the model. The VAE starts from the first CountWorld's trained VAE.
May import torch, diffusers, transformers, numina.models.countworld/tiny/variants and
numina.countworld.world.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from numina.models import countworld
from numina.models.tiny import SCHEDULER
from numina.models.variants import WAN21_TRANSFORMER

NAME = "countworld2"
FOLDER = Path(__file__).resolve().parents[2] / "models" / NAME
VIDEO = {"frames": 17, "height": 128, "width": 128}
# Width 256 (8 heads of 32), 10 blocks, patch 1: about 11M parameters, 22 MB in float16.
TRANSFORMER = dict(
    WAN21_TRANSFORMER,
    patch_size=(1, 1, 1),
    num_attention_heads=8,
    attention_head_dim=32,
    text_dim=128,
    ffn_dim=1024,
    num_layers=10,
)
# The first CountWorld's VAE (stride 4 in time, height and width), so its trained weights fit.
VAE = countworld.VAE
# About 0.5M parameters; no dropout, since it learns with the transformer from the flow loss alone.
TEXT_ENCODER = dict(d_model=128, d_kv=32, d_ff=256, num_layers=3, num_heads=4, dropout_rate=0.0)
# How the folder is run unless told otherwise: the release's sampler (50 steps, CFG 5, shift 5).
RUN_DEFAULTS = {**VIDEO, "steps": 50, "counter": "exact", "prompt_set": NAME}


def untrained_pipeline(seed: int = 0, vae_from: Path | None = countworld.FOLDER) -> WanPipeline:
    """CountWorld 2 before training: seeded random transformer and text encoder (trainable, float32),
    and the VAE of the pipeline folder `vae_from` (the first CountWorld's; None: random too)."""
    torch.manual_seed(seed)
    tokenizer = countworld.countworld_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TEXT_ENCODER))
    z_dim = VAE["z_dim"]
    if vae_from is None:
        vae = AutoencoderKLWan(**VAE, latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    else:
        vae = AutoencoderKLWan.from_pretrained(vae_from, subfolder="vae", dtype=torch.float32)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**SCHEDULER),
        transformer=WanTransformer3DModel(**TRANSFORMER),
    )


def save_countworld2(pipeline: WanPipeline, folder: str | Path) -> Path:
    """Write `pipeline` as CountWorld 2's diffusers folder (float16, files of at most 15 MB)."""
    return countworld.save_countworld(pipeline, folder, RUN_DEFAULTS)


def missing_weights_message(folder: Path = FOLDER) -> str:
    """What to do when CountWorld 2's folder is absent (e.g. before its weights are committed)."""
    return (
        f"CountWorld 2's weights are not at {folder}. Train them with experiments/train_countworld2.py "
        "(on a GPU; benchmarks/train_countworld_piece.sh runs one piece) and pass --model with the folder "
        "it writes (<work>/portable), or run from a clone that has them committed."
    )
