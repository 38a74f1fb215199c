"""Training CountWorld 2: what one step does, and how its counting is measured.

The first CountWorld learned its world but not numbers, with a frozen random text encoder and a fixed
set of clips. CountWorld 2 follows a probe that did learn to count: the text encoder learns together
with the transformer, every step draws new scenes (new layouts) rendered on the device and encoded by
the VAE on the fly, and training starts on single frames (images) before short videos. This module
holds those pieces so each is small and tested; `experiments/train_countworld2.py` runs them in
resumable pieces. The flow-matching arithmetic is `numina.countworld.training`'s.
May import torch, numpy, pandas, numina.countworld (world, world2, training), numina.evaluation
(counters, metrics) and numina.sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from numina.countworld import world2
from numina.countworld.training import (
    ema_update,
    flow_matching_pair,
    latent_object_mask,
    object_weights,
    reconstruction_count_agreement,
    shifted_sigmas,
    to_vae_input,
    vae_loss,
    weighted_flow_loss,
)
from numina.countworld.world import MAX_COUNT, Scene, palette_from_prompt
from numina.evaluation.accuracy import count_rows
from numina.evaluation.counters import ExactColourCounter

# The Wan pipelines pad every prompt's embedding to 512 positions with zeros; the model must learn
# with the same padding it meets when sampling (the cross-attention has no mask).
TEXT_POSITIONS = 512


def tokenize(tokenizer, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of `captions`, padded to the longest caption (as the pipeline
    tokenises, with the closing `</s>`)."""
    tokens = tokenizer(
        list(captions), padding="longest", truncation=True, max_length=TEXT_POSITIONS, return_tensors="pt"
    )
    return tokens.input_ids, tokens.attention_mask


def encode_text(text_encoder: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 512, width) prompt embeddings as `WanPipeline.encode_prompt` makes them: the encoder's
    states at the caption's tokens, zeros at every later position. The encoder runs on the padded
    batch only (not on 512 positions): with the mask, the states at real tokens are the same."""
    states = text_encoder(ids, attention_mask=mask).last_hidden_state
    states = states * mask.unsqueeze(-1).to(states.dtype)
    return torch.nn.functional.pad(states, (0, 0, 0, TEXT_POSITIONS - states.shape[1]))


@dataclass
class TrainingBatch:
    """Scenes rendered and encoded for one flow-matching step: normalised latents (B, C, F', H', W'),
    the latent positions objects cover (B, F', H', W'), and the captions."""

    clean: torch.Tensor
    objects: torch.Tensor
    captions: list[str]


@torch.no_grad()
def render_batch(
    vae: torch.nn.Module,
    scenes: Sequence[Scene],
    seed: int,
    frames: int,
    size: int,
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    autocast: torch.autocast,
) -> TrainingBatch:
    """Render `scenes` on the VAE's device, encode them (the posterior's mode) and normalise the
    latents by the per-channel `latent_mean` / `latent_std` (C,), as the pipeline un-normalises them."""
    device = next(vae.parameters()).device
    clips = world2.render_scenes(scenes, seed, frames, size, device)
    with autocast:
        latent = vae.encode(to_vae_input(clips.videos)).latent_dist.mode()
    shape = (1, -1, 1, 1, 1)
    clean = (latent.float() - latent_mean.view(shape)) / latent_std.view(shape)
    return TrainingBatch(clean, latent_object_mask(clips.instances), [scene.caption for scene in scenes])


def joint_flow_step(
    models: Sequence[torch.nn.Module],
    averages: Sequence[torch.nn.Module],
    optimiser: torch.optim.Optimizer,
    tokenizer,
    batches: Sequence[TrainingBatch],
    generator: torch.Generator,
    settings: dict,
    autocast: torch.autocast,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step of (text encoder, transformer) = `models` on the sum of the batches'
    flow losses (an image batch and a video batch have different shapes, so each is its own forward
    pass): captions dropped to "" with probability `settings["caption_dropout"]` (the unconditional
    prompt of classifier-free guidance), noise levels shifted by `settings["shift"]`, object positions
    weighted by `settings["object_weight"]`; gradients clipped to norm 1, then the EMAs `averages`
    move with decay `settings["decay"]`. Returns the loss and the gradient norm as device tensors."""
    text_encoder, transformer = models
    device = batches[0].clean.device
    total = torch.zeros((), device=device)
    for batch in batches:
        n = len(batch.captions)
        dropped = torch.rand(n, generator=generator, device=device) < settings["caption_dropout"]
        captions = [
            "" if drop else caption for drop, caption in zip(dropped.tolist(), batch.captions, strict=True)
        ]
        ids, mask = (tensor.to(device) for tensor in tokenize(tokenizer, captions))
        noise = torch.randn(batch.clean.shape, generator=generator, device=device)
        sigmas = shifted_sigmas(n, settings["shift"], generator, device)
        noisy, target = flow_matching_pair(batch.clean, noise, sigmas)
        with autocast:
            text = encode_text(text_encoder, ids, mask)
            prediction = transformer(noisy, sigmas * 1000, text, return_dict=False)[0]
        total = total + weighted_flow_loss(prediction, target, batch.objects, settings["object_weight"])
    optimiser.zero_grad(set_to_none=True)
    total.backward()
    parameters = [p for model in models for p in model.parameters()]
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimiser.step()
    for average, model in zip(averages, models, strict=True):
        ema_update(average, model, settings["decay"])
    return total.detach(), grad_norm


def vae_step(
    vae: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    scenes: Sequence[Scene],
    seed: int,
    frames: int,
    size: int,
    generator: torch.Generator,
    settings: dict,
    autocast: torch.autocast,
) -> dict[str, torch.Tensor]:
    """One step of the VAE on freshly rendered scenes: the first CountWorld's loss (weighted L1 + squared
    error, object pixels and rims weighted by `settings["object_weight"]`, KL by `settings["kl_weight"]`).
    Returns the loss and its parts as device tensors."""
    device = next(vae.parameters()).device
    clips = world2.render_scenes(scenes, seed, frames, size, device)
    target = to_vae_input(clips.videos)
    with autocast:
        posterior = vae.encode(target).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, device=device)
        reconstruction = vae.decode(posterior.mean + posterior.std * noise).sample
    weights = object_weights(clips.instances, settings["object_weight"])
    loss, parts = vae_loss(
        reconstruction, target, posterior.mean, posterior.logvar, settings["kl_weight"], weights
    )
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    optimiser.step()
    return {"loss": loss.detach(), **parts}


def vae_count_agreement(
    vae: torch.nn.Module,
    scenes: Sequence[Scene],
    seed: int,
    frames: int,
    size: int,
    autocast: torch.autocast,
) -> dict[str, float]:
    """Gate G0 on held-out `scenes` of CountWorld 2, rendered on the VAE's device: PSNR of the
    reconstructions and the share of (clip, frame, noun) the exact counter still counts right."""
    clips = world2.render_scenes(scenes, seed, frames, size, next(vae.parameters()).device)
    return reconstruction_count_agreement(vae, clips.videos, scenes, autocast)


@torch.no_grad()
def latent_statistics_of(
    vae: torch.nn.Module, scenes: Sequence[Scene], seed: int, frames: int, size: int, autocast: torch.autocast
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the VAE's latents of `scenes` (float64 sums)."""
    device = next(vae.parameters()).device
    clips = world2.render_scenes(scenes, seed, frames, size, device)
    with autocast:
        latent = vae.encode(to_vae_input(clips.videos)).latent_dist.mode().float()
    flat = latent.transpose(0, 1).reshape(latent.shape[1], -1).double()
    return flat.mean(dim=1).tolist(), flat.std(dim=1).tolist()


def single_kind_scenes(n: int, seed: int = 0) -> list[Scene]:
    """`n` scenes of one kind counting 1-8 in turn (scene i counts i % 8 + 1): the image phase's benchmark."""
    rng = np.random.default_rng(seed)
    return [world2.sample_scenes(rng, 1, counts=[i % MAX_COUNT + 1])[0] for i in range(n)]


@torch.no_grad()
def counting_rows(
    pipeline,
    scenes: Sequence[Scene],
    frames: int,
    size: int,
    steps: int,
    guidance: float,
    seed: int,
    autocast: torch.autocast,
    chunk: int = 32,
    on_videos: Callable[[int, np.ndarray], None] | None = None,
) -> pd.DataFrame:
    """The counts table (`numina.evaluation.accuracy` format) of the pipeline's own videos of `scenes`:
    one video per scene, the noise of each chunk drawn on the CPU from `seed` + the chunk's first index,
    counted per frame and noun by the exact colour counter. Method "baseline"; prompt_id = the scene's
    index. A video with NaN or inf pixels is an error: the counter would count it as empty.
    `on_videos(start, videos)` sees each chunk's videos (B, F, H, W, 3), e.g. to keep a contact sheet."""
    pipeline.set_progress_bar_config(disable=True)
    rows = []
    for start in range(0, len(scenes), chunk):
        batch = scenes[start : start + chunk]
        with autocast:
            videos = pipeline(
                [scene.caption for scene in batch],
                num_frames=frames,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(seed + start),
                output_type="np",
            ).frames
        if not np.isfinite(videos).all():
            raise ValueError(
                f"the pipeline drew NaN or inf pixels for prompts {start}..{start + len(batch) - 1} "
                f"(the first: {batch[0].caption!r}); its weights or sampler settings are broken"
            )
        if on_videos is not None:
            on_videos(start, videos)
        for offset, (scene, video) in enumerate(zip(batch, videos, strict=True)):
            counter = ExactColourCounter(palette_from_prompt(scene.caption, scene.targets))
            counts = {noun: counter.count(video, noun) for noun in scene.targets}
            rows += count_rows(start + offset, seed, "baseline", scene.targets, counts)
    return pd.DataFrame(rows)


def counting_summary(rows: pd.DataFrame) -> dict[str, float]:
    """What says whether a model counts: exact accuracy (share of (video, frame, noun) counted right),
    accuracy at each target, and the slope and correlation of the drawn count against the target."""
    exact = rows["count"] == rows["target"]
    summary = {"accuracy": float(exact.mean())}
    for target, hits in exact.groupby(rows["target"]):
        summary[f"accuracy_{int(target)}"] = float(hits.mean())
    drawn = rows.groupby(["prompt_id", "noun"])[["target", "count"]].mean()
    if drawn["target"].nunique() > 1:
        slope, _ = np.polyfit(drawn["target"], drawn["count"], 1)
        summary["slope"] = float(slope)
        # Undefined when every video drew the same number: left out rather than NaN.
        if drawn["count"].nunique() > 1:
            summary["correlation"] = float(np.corrcoef(drawn["target"], drawn["count"])[0, 1])
    return summary
