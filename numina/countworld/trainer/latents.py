"""The first CountWorld's stage 2: a data set of clips rendered and encoded in parts of `PART_SIZE`,
with their captions and the latent positions their objects cover; with a refresh interval one part
is replaced by new clips every so many transformer steps (which part holds which clips follows from
the step alone), and per-channel latent statistics go into the VAE config.

May import torch, tqdm, numina.countworld (trainer, training, world) and numina.run_folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from numina.countworld.training import (
    latent_object_mask,
    latent_statistics,
    to_vae_input,
)
from numina.countworld.world import render_scenes, sample_scene
from numina.run_folder import atomic_write

if TYPE_CHECKING:
    from numina.countworld.trainer.run import Trainer

PART_SIZE = 4096
VERSION_STRIDE = 100_000  # a refreshed part's seed index: part + version * VERSION_STRIDE

logger = logging.getLogger(__name__)


def parts(trainer: Trainer) -> int:
    return -(-trainer.args.clips // PART_SIZE)


def part_version(trainer: Trainer, part: int) -> int:
    """How often `part` of the latent set has been replaced by new clips at the current step: with
    --refresh-every N, the r-th refresh (at step r N) replaces part (r - 1) mod parts."""
    if not trainer.args.refresh_every:
        return 0
    refreshes = trainer.state["step"] // trainer.args.refresh_every
    return (refreshes - part + parts(trainer) - 1) // parts(trainer) if refreshes > part else 0


def part_path(trainer: Trainer, part: int, version: int) -> Path:
    suffix = f"_v{version:03d}" if version else ""  # version 0 keeps the name of the first data set
    return trainer.work / "latents" / f"part_{part:04d}{suffix}.pt"


@torch.no_grad()
def encode_part(trainer: Trainer, part: int, version: int) -> dict:
    """Render and encode one part of the latent set (its clips drawn from the part's and version's
    own seed) and write it, replacing the part's older version."""
    args, vae = trainer.args, trainer.pipeline.vae.eval()
    size = min(PART_SIZE, args.clips - part * PART_SIZE)
    rng, _ = trainer.generator("data", part + version * VERSION_STRIDE)
    scenes = [sample_scene(rng) for _ in range(size)]
    latents, objects = [], []
    for start in range(0, size, 64):
        batch = scenes[start : start + 64]
        clips = render_scenes(batch, int(rng.integers(2**31)), args.frames, args.size, trainer.device)
        with trainer.autocast:
            latent = vae.encode(to_vae_input(clips.videos)).latent_dist.mode()
        latents.append(latent.to(torch.float16).cpu())
        objects.append(latent_object_mask(clips.instances).cpu())
    captions = [scene.caption for scene in scenes]
    data = {"latents": torch.cat(latents), "objects": torch.cat(objects), "captions": captions}
    path = part_path(trainer, part, version)
    path.parent.mkdir(exist_ok=True)
    with atomic_write(path) as temporary:
        torch.save(data, temporary)
    for older in path.parent.glob(f"part_{part:04d}*.pt"):
        if older != path:
            older.unlink()
    return data


def encode_latents(trainer: Trainer) -> None:
    """Every part of the latent set that is missing at the version the current step calls for."""
    progress = tqdm(total=parts(trainer), desc="latents", unit="part")
    for part in range(parts(trainer)):
        progress.update()
        if part_path(trainer, part, part_version(trainer, part)).exists():
            continue
        if trainer.out_of_budget():
            return
        encode_part(trainer, part, part_version(trainer, part))
    progress.close()
    if "latents_mean" not in trainer.state:  # kept when a fresh machine encodes the same clips again
        latents, _, _ = load_latents(trainer)
        trainer.state["latents_mean"], trainer.state["latents_std"] = latent_statistics(latents)
    if trainer.state["stage"] == "latents":
        trainer.state["stage"] = "transformer"
    trainer.save_state()


def load_latents(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The latent data set: latents, the object masks on the latent grid, and the captions."""
    loaded = [
        torch.load(part_path(trainer, part, part_version(trainer, part))) for part in range(parts(trainer))
    ]
    if any("objects" not in part for part in loaded):
        raise SystemExit(
            f"{trainer.work / 'latents'} was encoded by an older version without object masks; "
            "delete that folder and run again to encode the same clips with them."
        )
    return (
        torch.cat([p["latents"] for p in loaded]),
        torch.cat([p["objects"] for p in loaded]),
        [c for p in loaded for c in p["captions"]],
    )


def encode_captions(trainer: Trainer, captions: list[str]) -> torch.Tensor:
    with torch.no_grad():
        embeddings, _ = trainer.pipeline.encode_prompt(
            captions, do_classifier_free_guidance=False, max_sequence_length=512, device=trainer.device
        )
    return embeddings


def caption_bank(trainer: Trainer, captions: list[str]) -> torch.Tensor:
    """Every clip's text embedding, encoded once (the text encoder is frozen): (clips, 512, width),
    in bfloat16 under autocast (what the transformer's layers read anyway), else float32. Saves
    the tokenizer and the text encoder in every step."""
    dtype = torch.bfloat16 if trainer.device.type == "cuda" else torch.float32
    chunks = [encode_captions(trainer, captions[i : i + 512]).to(dtype) for i in range(0, len(captions), 512)]
    return torch.cat(chunks)
