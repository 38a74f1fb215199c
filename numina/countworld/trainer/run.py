"""The first CountWorld's trainer: a work folder's state (recorded settings checked, resumption from a
portable copy), its budget, log and checkpoints, and the stages in order within the budget.

May import numpy, torch, diffusers, numina.countworld (trainer, training), numina.models.countworld,
numina.run_folder and numina.wandb_mirror.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from numina.countworld.trainer.export import loss_curves_figure, saved_weights
from numina.countworld.trainer.latents import encode_latents
from numina.countworld.trainer.transformer import train_transformer
from numina.countworld.trainer.vae import train_vae
from numina.countworld.training import (
    stream_generators,
)
from numina.models.countworld import SHARD_SIZE, untrained_pipeline
from numina.run_folder import atomic_write, write_json
from numina.wandb_mirror import Tracker

# Disjoint seed streams: VAE training clips, held-out evaluation clips, the latent data set, steps.
STREAMS = {"vae": 1, "eval": 2, "data": 3, "step": 4}
# The settings written into a work folder's state (those that shape its data are then fixed).
RECORDED_SETTINGS = (
    "seed", "frames", "size", "vae_steps", "vae_frames", "clips", "steps", "batch", "lr", "refresh_every",
)  # fmt: skip

logger = logging.getLogger(__name__)


class Trainer:
    """Holds the work folder's state and runs whichever stage comes next, within the budget."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(args.device)
        self.autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )
        self.started = time.monotonic()
        self.steps_this_piece = 0
        self._last_log: dict[str, tuple[float, int]] = {}
        self.portable = self.work / "portable"
        self.resume_from = None
        if args.resume_from is not None and not (self.work / "state.json").exists():
            if not (args.resume_from / "state.json").is_file():
                raise SystemExit(
                    f"--resume-from {args.resume_from} holds no state.json: not a portable checkpoint"
                )
            for name in ("state.json", "losses.jsonl"):
                if (args.resume_from / name).is_file():
                    shutil.copy(args.resume_from / name, self.work / name)
            self.resume_from = args.resume_from
            logger.info("resuming from %s (optimiser moments start again)", args.resume_from)
        self.state = self._load_state()
        if self.resume_from is not None:
            self.state["restarted_at"] = {"vae": self.state["vae_step"], "transformer": self.state["step"]}
        torch.manual_seed(args.seed)
        self.pipeline = untrained_pipeline(args.seed)
        self.pipeline.text_encoder.to(self.device)
        self._load_vae()

    def _load_vae(self) -> None:
        """The VAE's weights: the work folder's checkpoint, else the carried portable copy, which is
        then written to the work folder's checkpoint so that the next piece in this folder finds it
        (without that, a second piece on a still-warm machine once decoded with a random VAE). A
        folder whose VAE has trained steps but no weights is refused: a random VAE would silently
        spoil the latents and every sample."""
        vae, checkpoint = self.pipeline.vae, self.work / "vae.ckpt"
        if checkpoint.exists():
            vae.load_state_dict(torch.load(checkpoint, map_location="cpu")["vae"])
        elif self.resume_from is not None and (self.resume_from / "vae").is_dir():
            vae.load_state_dict(saved_weights(AutoencoderKLWan, self.resume_from / "vae"))
            with atomic_write(checkpoint) as temporary:
                torch.save({"vae": vae.state_dict()}, temporary)  # no optimiser moments: they restart
        elif self.state["vae_step"] > 0:
            raise SystemExit(
                f"{self.work} has trained its VAE for {self.state['vae_step']} steps but holds no vae.ckpt; "
                "carry the portable checkpoint in with --resume-from to a new --work folder."
            )
        vae.to(self.device)

    # ----- bookkeeping -----

    def _load_state(self) -> dict:
        path = self.work / "state.json"
        settings = {key: getattr(self.args, key) for key in RECORDED_SETTINGS}
        if not path.exists():
            return {"stage": "vae", "vae_step": 0, "step": 0, "settings": settings}
        state = json.loads(path.read_text())
        fixed = ("seed", "frames", "size", "vae_frames", "clips")
        changed = {
            k: (state["settings"][k], settings[k]) for k in fixed if state["settings"][k] != settings[k]
        }
        if changed:
            raise SystemExit(
                f"{self.work} was trained with other settings {changed} (old, new); "
                "resume with the same values or use a new --work folder."
            )
        if state["settings"]["batch"] != settings["batch"]:
            # Allowed (a small model may train faster at a larger batch), but the run is then no
            # longer the same as one uninterrupted run, so the change is recorded where it happened.
            change = {"step": state["step"], "batch": [state["settings"]["batch"], settings["batch"]]}
            state.setdefault("changes", []).append(change)
            logger.info("batch size %d -> %d from step %d", *change["batch"], change["step"])
        if state["stage"] == "done" and settings["steps"] > state["step"]:
            state["stage"] = "transformer"  # more steps asked for: go on training
        state["settings"] = settings
        return state

    def restarted_at(self, stage: str) -> int | None:
        """The step at which a portable resume restarted this stage's optimiser moments, if one did."""
        return self.state.get("restarted_at", {}).get(stage)

    def save_state(self) -> None:
        """The state, and the loss log, also in the portable copy once there is one (the time spent
        and the sample score are added after a stage's last checkpoint; a fresh machine must see them)."""
        write_json(self.work / "state.json", self.state)
        if self.portable.is_dir():
            write_json(self.portable / "state.json", self.state)
            if (self.work / "losses.jsonl").is_file():
                shutil.copy(self.work / "losses.jsonl", self.portable / "losses.jsonl")

    def out_of_budget(self) -> bool:
        if self.args.piece_steps is not None and self.steps_this_piece >= self.args.piece_steps:
            return True
        return time.monotonic() - self.started > self.args.budget_minutes * 60

    def log(self, tracker: Tracker, stage: str, step: int, values: dict) -> None:
        """One line of the loss log (with the steps per second since the last line), mirrored to W&B."""
        now = time.monotonic()
        last_time, last_step = self._last_log.get(stage, (self.started, step))
        if step > last_step:
            values = values | {"steps_per_s": (step - last_step) / (now - last_time)}
        self._last_log[stage] = (now, step)
        record = {"stage": stage, "step": step, **values}
        with open(self.work / "losses.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        logger.info("%s %d: %s", stage, step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        offset = 0 if stage == "vae" else self.args.vae_steps
        tracker.log_scalars({f"{stage}/{key}": value for key, value in values.items()}, step=offset + step)

    def save_checkpoint(self, name: str, payload: dict, portable: dict[str, torch.nn.Module]) -> None:
        """The full checkpoint (with optimiser moments), the state, and the portable copy of `portable`."""
        with atomic_write(self.work / name) as temporary:
            torch.save(payload, temporary)
        for folder, model in portable.items():
            model.save_pretrained(self.portable / folder, max_shard_size=SHARD_SIZE)
        self.save_state()  # also the portable copy, now that the folder exists

    def generator(self, stream: str, index: int) -> tuple[np.random.Generator, torch.Generator]:
        """A numpy and a device generator for one step of one seed stream (`STREAMS`)."""
        return stream_generators(self.args.seed, STREAMS[stream], index, self.device)

    def run(self) -> str:
        config = vars(self.args) | {"work": str(self.work), "export": str(self.args.export)}
        with Tracker(
            self.work, name=self.work.name, config=config, mode=self.args.wandb, job_type="train"
        ) as tracker:
            stages = {
                "vae": lambda tracker: train_vae(self, tracker),
                "latents": lambda _: encode_latents(self),
                "transformer": lambda tracker: train_transformer(self, tracker),
            }
            while self.state["stage"] != "done" and not self.out_of_budget():
                stage = self.state["stage"]
                began = time.monotonic()
                stages[stage](tracker)
                seconds = self.state.setdefault("seconds", {})
                seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - began
                self.save_state()
            figure = self.work / "loss_curves.png"
            loss_curves_figure(self.work / "losses.jsonl").savefig(figure)
            tracker.log_image("loss_curves", figure)
        return self.state["stage"]
