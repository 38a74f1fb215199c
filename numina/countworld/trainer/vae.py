"""The first CountWorld's stage 1: the VAE learns to reconstruct clips rendered on the fly (L1 and
squared error, object pixels weighted up, a small KL), then is scored on held-out clips (PSNR, and
whether the exact counter counts the reconstructions right).

May import torch, tqdm, numina.countworld (trainer, training, world) and numina.wandb_mirror.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from numina.countworld.training import (
    learning_rate,
    object_weights,
    reconstruction_count_agreement,
    to_vae_input,
    vae_loss,
)
from numina.countworld.world import render_scenes, sample_scene
from numina.wandb_mirror import Tracker

if TYPE_CHECKING:
    from numina.countworld.trainer.run import Trainer


logger = logging.getLogger(__name__)


def train_vae(trainer: Trainer, tracker: Tracker) -> None:
    args, vae = trainer.args, trainer.pipeline.vae
    vae.train()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    saved = torch.load(trainer.work / "vae.ckpt", map_location="cpu") if trainer.state["vae_step"] else {}
    if "optimiser" in saved:  # absent after a portable resume: the moments restart
        optimiser.load_state_dict(saved["optimiser"])
    progress = tqdm(total=args.vae_steps, initial=trainer.state["vae_step"], desc="vae", unit="step")
    while trainer.state["vae_step"] < args.vae_steps and not trainer.out_of_budget():
        step = trainer.state["vae_step"]
        rng, device_generator = trainer.generator("vae", step)
        scenes = [sample_scene(rng) for _ in range(args.vae_batch)]
        clips = render_scenes(scenes, int(rng.integers(2**31)), args.vae_frames, args.size, trainer.device)
        target = to_vae_input(clips.videos)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(
                step, args.vae_steps, args.vae_lr, 100, restarted_at=trainer.restarted_at("vae")
            )
        with trainer.autocast:
            posterior = vae.encode(target).latent_dist
            latent = posterior.mean + posterior.std * torch.randn(
                posterior.mean.shape, generator=device_generator, device=trainer.device
            )
            reconstruction = vae.decode(latent).sample
        weights = object_weights(clips.instances, args.object_weight)
        loss, parts = vae_loss(
            reconstruction, target, posterior.mean, posterior.logvar, args.kl_weight, weights
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimiser.step()
        trainer.state["vae_step"] = step + 1
        trainer.steps_this_piece += 1
        progress.update()
        if (step + 1) % args.log_every == 0 or step + 1 == args.vae_steps:
            trainer.log(
                tracker, "vae", step + 1, {"loss": loss.item()} | {k: v.item() for k, v in parts.items()}
            )
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.vae_steps or trainer.out_of_budget():
            trainer.save_checkpoint(
                "vae.ckpt", {"vae": vae.state_dict(), "optimiser": optimiser.state_dict()}, {"vae": vae}
            )
    progress.close()
    vae.eval()
    if trainer.state["vae_step"] >= args.vae_steps:
        trainer.state["vae_eval"] = evaluate_vae(trainer)
        logger.info("VAE on held-out clips: %s", trainer.state["vae_eval"])
        tracker.log_scalars({f"vae_eval/{k}": v for k, v in trainer.state["vae_eval"].items()})
        trainer.state["stage"] = "latents"
        trainer.save_state()


@torch.no_grad()
def evaluate_vae(trainer: Trainer) -> dict[str, float]:
    """PSNR of held-out full-length clips, and the share of (clip, frame, noun) whose exact count
    on the reconstruction equals the truth (the counter's accuracy on real renders is 1)."""
    args = trainer.args
    rng, _ = trainer.generator("eval", 0)
    scenes = [sample_scene(rng) for _ in range(args.eval_clips)]
    clips = render_scenes(scenes, int(rng.integers(2**31)), args.frames, args.size, trainer.device)
    return reconstruction_count_agreement(trainer.pipeline.vae, clips.videos, scenes, trainer.autocast)
