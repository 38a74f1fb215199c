"""The first CountWorld's stage 3: flow matching with caption dropout (for classifier-free guidance),
object positions weighted up in the loss, AdamW, warm-up and cosine learning rate, gradient clipping,
bf16 autocast on GPU and an EMA of the weights; checkpointed, then exported.

May import torch, diffusers, tqdm, numina.countworld (trainer, training) and numina.wandb_mirror.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
from diffusers import WanTransformer3DModel
from tqdm import tqdm

from numina.countworld.trainer import latents as latent_data  # PART_SIZE, read when used (tests set it)
from numina.countworld.trainer.export import export, saved_weights
from numina.countworld.trainer.latents import (
    caption_bank,
    encode_captions,
    encode_latents,
    encode_part,
    load_latents,
    part_version,
    parts,
)
from numina.countworld.training import (
    ema_decay,
    flow_training_step,
    learning_rate,
    shifted_sigmas,
)
from numina.wandb_mirror import Tracker

if TYPE_CHECKING:
    from numina.countworld.trainer.run import Trainer


logger = logging.getLogger(__name__)


def train_transformer(trainer: Trainer, tracker: Tracker) -> None:
    args = trainer.args
    transformer = trainer.pipeline.transformer.to(trainer.device).train()
    average = copy.deepcopy(transformer).eval().requires_grad_(False)
    if args.compile:
        transformer.compile_repeated_blocks(fullgraph=True)
    optimiser = torch.optim.AdamW(transformer.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    checkpoint = trainer.work / "transformer.ckpt"
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu")
        transformer.load_state_dict(saved["model"])
        average.load_state_dict(saved["ema"])
        optimiser.load_state_dict(saved["optimiser"])
    elif trainer.resume_from is not None and (trainer.resume_from / "transformer").is_dir():
        transformer.load_state_dict(saved_weights(WanTransformer3DModel, trainer.resume_from / "transformer"))
        average.load_state_dict(saved_weights(WanTransformer3DModel, trainer.resume_from / "ema"))
    encode_latents(trainer)  # on a fresh machine the same clips again; else nothing to do
    latents, objects, captions = load_latents(trainer)
    latents, objects = latents.to(trainer.device), objects.to(trainer.device)
    bank, no_caption = caption_bank(trainer, captions), encode_captions(trainer, [""])
    mean = torch.tensor(trainer.state["latents_mean"], device=trainer.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(trainer.state["latents_std"], device=trainer.device).view(1, -1, 1, 1, 1)
    progress = tqdm(total=args.steps, initial=trainer.state["step"], desc="transformer", unit="step")
    window: list[torch.Tensor] = []
    while trainer.state["step"] < args.steps and not trainer.out_of_budget():
        step = trainer.state["step"]
        rng, device_generator = trainer.generator("step", step)
        index = rng.integers(len(captions), size=args.batch)
        dropped = rng.random(args.batch) < args.caption_dropout
        dropped_rows = torch.from_numpy(dropped).to(trainer.device).view(-1, 1, 1)
        chosen = torch.from_numpy(index).to(trainer.device)
        text = torch.where(dropped_rows, no_caption, bank[chosen].float())
        clean = (latents[chosen].float() - mean) / std
        noise = torch.randn(clean.shape, generator=device_generator, device=trainer.device)
        sigmas = shifted_sigmas(args.batch, args.shift, device_generator, trainer.device)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(
                step, args.steps, args.lr, args.warmup, restarted_at=trainer.restarted_at("transformer")
            )
        loss, grad_norm = flow_training_step(
            transformer,
            average,
            optimiser,
            {"clean": clean, "noise": noise, "sigmas": sigmas, "text": text, "objects": objects[chosen]},
            args.flow_object_weight,
            ema_decay(step, args.ema),
            trainer.autocast,
        )
        trainer.state["step"] = step + 1
        trainer.steps_this_piece += 1
        window.append(loss)  # no host sync per step
        if args.refresh_every and (step + 1) % args.refresh_every == 0:
            part = ((step + 1) // args.refresh_every - 1) % parts(trainer)
            fresh = encode_part(trainer, part, part_version(trainer, part))
            rows = slice(part * latent_data.PART_SIZE, part * latent_data.PART_SIZE + len(fresh["captions"]))
            latents[rows] = fresh["latents"].to(trainer.device)
            objects[rows] = fresh["objects"].to(trainer.device)
            bank[rows] = caption_bank(trainer, fresh["captions"])
        progress.update()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            values = {"loss": torch.stack(window).mean().item(), "lr": optimiser.param_groups[0]["lr"]}
            trainer.log(tracker, "transformer", step + 1, values | {"grad_norm": grad_norm.item()})
            window = []
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps or trainer.out_of_budget():
            trainer.save_checkpoint(
                "transformer.ckpt",
                {
                    "model": transformer.state_dict(),
                    "ema": average.state_dict(),
                    "optimiser": optimiser.state_dict(),
                },
                {"transformer": transformer, "ema": average, "vae": trainer.pipeline.vae},
            )
    progress.close()
    export(trainer, average, tracker)
    if trainer.state["step"] >= args.steps:
        trainer.state["stage"] = "done"
    trainer.save_state()
