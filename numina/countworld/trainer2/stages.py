"""CountWorld 2's training stages, each run by a `Trainer` within its budget: the VAE (then gate G0),
the latents' statistics, and the text encoder with the transformer (flow matching on scenes drawn and
rendered fresh every step, checkpointed, then evaluated).

May import torch, tqdm, numina.countworld (joint_training, trainer2, training, world2) and
numina.run_folder.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from numina.countworld import world2
from numina.countworld.joint_training import (
    joint_flow_step,
    latent_statistics_of,
    render_batch,
    vae_count_agreement,
    vae_step,
)
from numina.countworld.trainer2.export import checkpoint, evaluate
from numina.countworld.training import ema_decay, stream_generators
from numina.run_folder import atomic_write

if TYPE_CHECKING:
    from numina.countworld.trainer2.run import Trainer

# Disjoint seed streams: VAE steps, held-out clips, latent statistics, transformer steps.
VAE_STREAM, EVAL_STREAM, STATS_STREAM, STEP_STREAM = 1, 2, 3, 4
logger = logging.getLogger(__name__)


# ----- stage 1: the VAE -----
def train_vae(trainer: Trainer) -> None:
    args, vae = trainer.args, trainer.pipeline.vae.train()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    saved_path = trainer.work / "vae.ckpt"
    saved = torch.load(saved_path, map_location="cpu") if saved_path.exists() else {}
    if saved.get("optimiser") is not None:  # the weights are loaded already; a resume has no moments
        optimiser.load_state_dict(saved["optimiser"])
    settings = {"object_weight": 10.0, "kl_weight": 1e-6}
    progress = tqdm(total=args.vae_steps, initial=trainer.state["vae_step"], desc="vae", unit="step")
    parts: dict[str, torch.Tensor] = {}
    while trainer.state["vae_step"] < args.vae_steps and not trainer.out_of_budget():
        step = trainer.state["vae_step"]
        rng, generator = stream_generators(args.seed, VAE_STREAM, step, trainer.device)
        # Half images, half clips: the transformer sees both.
        frames = 1 if step % 2 == 0 else args.frames
        scenes = world2.sample_scenes(rng, args.vae_batch * (4 if frames == 1 else 1))
        for group in optimiser.param_groups:
            group["lr"] = trainer.rate("vae", step, args.vae_steps, args.vae_lr, 50)
        parts = vae_step(
            vae, optimiser, scenes, int(rng.integers(2**31)), frames, args.size, generator, settings,
            trainer.autocast,
        )  # fmt: skip
        trainer.state["vae_step"] = step + 1
        trainer.steps_this_piece += 1
        progress.update()
        if (step + 1) % args.log_every == 0 or step + 1 == args.vae_steps:
            values = {k: v.item() for k, v in parts.items()}
            trainer.log("vae", step + 1, values)
            trainer.refuse_non_finite(step + 1, values)
    progress.close()
    if parts:  # the last step's loss, also when the budget ended between two log lines
        trainer.refuse_non_finite(trainer.state["vae_step"], {k: v.item() for k, v in parts.items()})
    with atomic_write(saved_path) as temporary:
        torch.save({"vae": vae.state_dict(), "optimiser": optimiser.state_dict()}, temporary)
    vae.eval()
    if trainer.state["vae_step"] >= args.vae_steps:
        rng, _ = stream_generators(args.seed, EVAL_STREAM, 0, trainer.device)
        scenes = world2.sample_scenes(rng, args.vae_eval_clips)
        trainer.state["vae_eval"] = vae_count_agreement(
            vae, scenes, int(rng.integers(2**31)), args.frames, args.size, trainer.autocast
        )
        logger.info("G0, VAE on %d held-out clips: %s", len(scenes), trainer.state["vae_eval"])
        trainer.state["stage"] = "stats"
    trainer.save_state()


# ----- stage 2: latent statistics -----


def latent_statistics(trainer: Trainer) -> None:
    args = trainer.args
    rng, _ = stream_generators(args.seed, STATS_STREAM, 0, trainer.device)
    scenes = world2.sample_scenes(rng, 512)
    mean, std = latent_statistics_of(
        trainer.pipeline.vae, scenes, int(rng.integers(2**31)), 1, args.size, trainer.autocast
    )
    trainer.state.update(latents_mean=mean, latents_std=std, stage="transformer")
    trainer.pipeline.vae.register_to_config(latents_mean=mean, latents_std=std)
    trainer.save_state()


# ----- stage 3: text encoder and transformer -----


def scene_batches(trainer: Trainer, step: int) -> list[tuple[list, int, int]]:
    """(scenes, render seed, frames) of each batch of this step: images, and videos from --video-from."""
    args = trainer.args
    rng, _ = stream_generators(args.seed, STEP_STREAM, step, trainer.device)
    kinds = 1 if step < args.multi_kind_from else 3
    batches = [(world2.sample_scenes(rng, args.image_batch, kinds), int(rng.integers(2**31)), 1)]
    if step >= args.video_from:
        batches.append(
            (world2.sample_scenes(rng, args.video_batch, kinds), int(rng.integers(2**31)), args.frames)
        )
    return batches


def train_transformer(trainer: Trainer) -> None:
    args = trainer.args
    for model in trainer.models:
        model.train()
    parameters = [p for model in trainer.models for p in model.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    saved_path = trainer.work / "transformer.ckpt"
    if saved_path.exists():
        saved = torch.load(saved_path, map_location="cpu")
        for model, average, weights, ema in zip(
            trainer.models, trainer.averages, saved["models"], saved["ema"], strict=True
        ):
            model.load_state_dict(weights)
            average.load_state_dict(ema)
        optimiser.load_state_dict(saved["optimiser"])
    if args.compile:
        trainer.pipeline.transformer.compile_repeated_blocks(fullgraph=True)
    mean = torch.tensor(trainer.state["latents_mean"], device=trainer.device)
    std = torch.tensor(trainer.state["latents_std"], device=trainer.device)
    progress = tqdm(total=args.steps, initial=trainer.state["step"], desc="transformer", unit="step")
    window: list[torch.Tensor] = []
    while trainer.state["step"] < args.steps and not trainer.out_of_budget():
        step = trainer.state["step"]
        batches = [
            render_batch(trainer.pipeline.vae, scenes, seed, frames, args.size, mean, std, trainer.autocast)
            for scenes, seed, frames in scene_batches(trainer, step)
        ]
        for group in optimiser.param_groups:
            group["lr"] = trainer.rate("transformer", step, args.steps, args.lr, args.warmup)
        settings = {
            "caption_dropout": args.caption_dropout,
            "shift": args.shift,
            "object_weight": args.object_weight,
            "decay": ema_decay(step, args.ema),
        }
        _, generator = stream_generators(args.seed, STEP_STREAM, step, trainer.device)
        loss, grad_norm = joint_flow_step(
            trainer.models, trainer.averages, optimiser, trainer.pipeline.tokenizer, batches, generator,
            settings, trainer.autocast,
        )  # fmt: skip
        window.append(loss)
        trainer.state["step"] = step + 1
        trainer.steps_this_piece += 1
        progress.update()
        if (step + 1) % args.log_every == 0:
            images = args.image_batch + (args.video_batch if step >= args.video_from else 0)
            elapsed = time.monotonic() - trainer.started
            values = {"loss": torch.stack(window).mean().item(), "grad_norm": grad_norm.item()}
            trainer.log(
                "transformer",
                step + 1,
                values | {"lr": optimiser.param_groups[0]["lr"], "batch": images, "elapsed": elapsed},
            )
            window = []
            trainer.refuse_non_finite(step + 1, values)
        if (step + 1) % args.checkpoint_every == 0:
            checkpoint(trainer, optimiser, window, grad_norm)
    progress.close()
    checkpoint(trainer, optimiser, window, grad_norm)
    evaluate(trainer)
