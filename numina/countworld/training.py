"""The arithmetic of training the CountWorld model: flow-matching pairs, noise levels, the VAE's
loss, EMA, the learning-rate schedule and latent statistics.

Kept apart from the loop in `experiments/train_countworld.py` so each piece is small and tested on
its own. Flow matching as Wan and diffusers' UniPC sampler use it: x_sigma = (1 - sigma) x0 + sigma
noise, and the transformer predicts the velocity noise - x0 at timestep 1000 sigma. Also the VAE's
gate: whether the exact counter still counts its reconstructions right. May import torch, numpy,
numina.compat, numina.countworld.world and numina.evaluation.counters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from numina.compat import lerp_all_
from numina.countworld.world import Scene, palette_from_prompt
from numina.evaluation.counters import ExactColourCounter


def stream_generators(
    seed: int, stream: int, index: int, device: str | torch.device
) -> tuple[np.random.Generator, torch.Generator]:
    """A numpy and a device generator for item `index` (a step, a data part) of one seed stream: each
    step draws from its own seeds, so a run split into pieces draws what one run draws."""
    value = (seed * 1_000_003 + stream) * 10_000_019 + index
    return np.random.default_rng(value), torch.Generator(device).manual_seed(value)


def shifted_sigmas(
    count: int, shift: float, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """`count` noise levels in (0, 1): uniform u moved towards high noise by the sampler's shift rule
    sigma = shift u / (1 + (shift - 1) u), so training sees the levels sampling spends its steps on."""
    u = torch.rand(count, generator=generator, device=generator.device if generator else device)
    u = u.clamp(1e-4, 1 - 1e-4)
    return (shift * u / (1 + (shift - 1) * u)).to(device)


def flow_matching_pair(
    clean: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The noisy input (1 - sigma) x0 + sigma noise and the velocity target noise - x0."""
    sigma = sigmas.view(-1, *([1] * (clean.dim() - 1)))
    return (1 - sigma) * clean + sigma * noise, noise - clean


def flow_training_step(
    model: torch.nn.Module,
    average: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    object_weight: float,
    decay: float,
    autocast: torch.autocast,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step of the transformer on a `batch` of normalised latents ("clean"), their
    "noise", "sigmas", "text" embeddings and latent "objects" mask: the object-weighted flow loss
    under `autocast`, gradients clipped to norm 1, the optimiser's step, then the EMA `average`.
    Returns the loss and the gradient norm as device tensors (reading them is a host sync)."""
    noisy, target = flow_matching_pair(batch["clean"], batch["noise"], batch["sigmas"])
    with autocast:
        prediction = model(noisy, batch["sigmas"] * 1000, batch["text"], return_dict=False)[0]
    loss = weighted_flow_loss(prediction, target, batch["objects"], object_weight)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()
    ema_update(average, model, decay)
    return loss.detach(), grad_norm


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean KL divergence of N(mean, exp(logvar)) from N(0, 1), per latent element."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()


def object_weights(instances: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, F, H, W): `object_weight` on objects and their one-pixel rim, 1
    on the background. Objects cover a few percent of a frame; unweighted, an autoencoder first
    learns the plain background and leaves the objects out (seen in the first training run)."""
    mask = (instances > 0).float().flatten(0, 1).unsqueeze(1)  # (B F, 1, H, W)
    rim = torch.nn.functional.max_pool2d(mask, kernel_size=3, stride=1, padding=1)
    weights = 1 + (object_weight - 1) * rim
    return weights.view(*instances.shape).unsqueeze(1)


def latent_object_mask(
    instances: torch.Tensor, temporal_stride: int = 4, spatial_stride: int = 4
) -> torch.Tensor:
    """(B, F, H, W) instance labels -> (B, F', H', W') bool: the latent positions an object touches, on
    the grid of a causal VAE with these strides (latent frame 0 is video frame 0, latent frame k
    covers video frames 4k-3 .. 4k), grown by one latent position for the object's rim."""
    frames = instances.shape[1]
    if (frames - 1) % temporal_stride:
        raise ValueError(f"{frames} frames do not fit a causal VAE of temporal stride {temporal_stride}")
    touched = (instances > 0).float()
    first, rest = touched[:, :1], touched[:, 1:]
    rest = rest.unflatten(1, (-1, temporal_stride)).amax(dim=2)
    per_latent_frame = torch.cat([first, rest], dim=1).flatten(0, 1).unsqueeze(1)
    pooled = torch.nn.functional.max_pool2d(per_latent_frame, spatial_stride)
    grown = torch.nn.functional.max_pool2d(pooled, kernel_size=3, stride=1, padding=1)
    return grown.squeeze(1).unflatten(0, (instances.shape[0], -1)).bool()


def weighted_flow_loss(
    prediction: torch.Tensor, target: torch.Tensor, objects: torch.Tensor, object_weight: float
) -> torch.Tensor:
    """Mean squared velocity error over (B, C, F, H, W) latents, positions under an object (the
    (B, F, H, W) `objects` mask) weighted by `object_weight`. Objects cover a few percent of the
    latent grid; unweighted, the first CountWorld model learned the background and drew faint or no
    objects from noise."""
    weights = 1 + (object_weight - 1) * objects.unsqueeze(1).float()
    error = (prediction.float() - target.float()).pow(2)
    return (error * weights).sum() / (weights.sum() * error.shape[1])


def vae_loss(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    kl_weight: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted L1 + squared error reconstruction plus a small KL term (the latent only has to stay
    well scaled for diffusion). The squared error pulls towards the mean, so small objects are not
    lost to the background as under L1 alone. The parts come back as detached tensors: reading them
    is a host sync, left to the steps that log."""
    error = reconstruction.float() - target.float()
    weights = torch.ones_like(error[:, :1]) if weights is None else weights
    l1 = (error.abs() * weights).sum() / (weights.sum() * error.shape[1])
    l2 = (error.pow(2) * weights).sum() / (weights.sum() * error.shape[1])
    kl = gaussian_kl(mean.float(), logvar.float())
    return l1 + l2 + kl_weight * kl, {"l1": l1.detach(), "l2": l2.detach(), "kl": kl.detach()}


@torch.no_grad()
def ema_update(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay average + (1 - decay) model, parameter by parameter."""
    kept, new = list(average.parameters()), [p.detach() for p in model.parameters()]
    lerp_all_(kept, new, 1 - decay)


def ema_decay(step: int, decay: float) -> float:
    """The EMA's decay at `step`: warmed up as (1 + step) / (10 + step) so early weights fade quickly."""
    return min(decay, (1 + step) / (10 + step))


def learning_rate(
    step: int, total: int, peak: float, warmup: int, floor: float = 0.1, restarted_at: int | None = None
) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then a cosine down to `floor` x peak at `total`.
    After a resume that restarted the optimiser's moments at step `restarted_at`, the rate warms up
    again over `warmup` steps from there (fresh Adam moments make the first updates too large)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    rate = peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    if restarted_at is not None and step - restarted_at < warmup:
        rate *= (step - restarted_at + 1) / warmup
    return rate


def latent_statistics(latents: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of (clips, channels, frames, H, W) latents, in float64,
    for the VAE config's `latents_mean` / `latents_std` (the pipeline un-normalises with them)."""
    channels = latents.shape[1]
    flat = latents.transpose(0, 1).reshape(channels, -1).double()
    return flat.mean(dim=1).tolist(), flat.std(dim=1).tolist()


def to_vae_input(videos: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W, 3) in [0, 1] -> the VAE's (B, 3, F, H, W) in [-1, 1]."""
    return videos.permute(0, 4, 1, 2, 3) * 2 - 1


def from_vae_output(videos: torch.Tensor) -> torch.Tensor:
    """The VAE's (B, 3, F, H, W) in [-1, 1] -> (B, F, H, W, 3) in [0, 1]."""
    return ((videos.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of videos in [0, 1]."""
    mse = (reconstruction.float() - target.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


@torch.no_grad()
def reconstruction_count_agreement(
    vae: torch.nn.Module,
    videos: torch.Tensor,
    scenes: Sequence[Scene],
    autocast: torch.autocast,
    chunk: int = 16,
) -> dict[str, float]:
    """PSNR of the VAE's reconstructions of rendered `videos` (B, F, H, W, 3) of `scenes`, and the share
    of (clip, frame, noun) whose exact count on the reconstruction equals the caption's (on the renders
    themselves it is 1): the counts a model draws can only be read through its VAE."""
    scores, hits, total = [], 0, 0
    for start in range(0, len(scenes), chunk):
        target = videos[start : start + chunk]
        with autocast:
            latent = vae.encode(to_vae_input(target)).latent_dist.mode()
            decoded = from_vae_output(vae.decode(latent).sample)
        scores.append(psnr(decoded, target))
        for scene, video in zip(scenes[start : start + chunk], decoded.cpu().numpy(), strict=True):
            counter = ExactColourCounter(palette_from_prompt(scene.caption, scene.targets))
            for noun, count in scene.targets.items():
                counts = counter.count(video, noun)
                hits += int((counts == count).sum())
                total += counts.size
    return {"psnr_db": float(np.mean(scores)), "count_agreement": hits / total}
