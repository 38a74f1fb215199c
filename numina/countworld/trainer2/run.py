"""The trainer of CountWorld 2: a work folder's state (fixed settings checked, every piece recorded),
its budget, log and learning-rate restarts, the models and their EMA, and the stages in order.

May import torch, numina.countworld (trainer2, training), numina.models.countworld2 and
numina.run_folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch

from numina.countworld.trainer2.export import STATE_FILE, load_portable, write_portable
from numina.countworld.trainer2.stages import latent_statistics, train_transformer, train_vae
from numina.countworld.training import learning_rate
from numina.models.countworld2 import untrained_pipeline
from numina.run_folder import atomic_write, write_json

# Settings that shape a work folder's data and model; a resumed folder refuses others.
FIXED_SETTINGS = ("seed", "frames", "size", "vae_steps", "image_batch")
logger = logging.getLogger(__name__)


class Trainer:
    """The work folder's state, models and optimisers; runs whichever stage comes next in the budget."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.work = args, args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.portable = self.work / "portable"
        self.device = torch.device(args.device)
        # Every step has the same shapes: cuDNN may pick the VAE encoder's fastest 3-D convolutions once.
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        self.autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )
        self.started, self.steps_this_piece = time.monotonic(), 0
        self.checkpointed = False  # whether this piece wrote a transformer checkpoint
        resuming = args.resume_from is not None and not (self.work / "state.json").exists()
        # A portable copy's state is checked and its weights loaded before anything is written here, so a
        # refused or failed resume leaves the work folder as it was.
        self.state = self._load_state(args.resume_from / STATE_FILE if resuming else self.work / "state.json")
        self.pipeline = untrained_pipeline(args.seed)
        if resuming:
            load_portable(self, args.resume_from)
            if (args.resume_from / "losses.jsonl").is_file():
                shutil.copy(args.resume_from / "losses.jsonl", self.work / "losses.jsonl")
            # The folder holds its own VAE from here (a later piece in it loads vae.ckpt, not the portable).
            with atomic_write(self.work / "vae.ckpt") as temporary:
                torch.save({"vae": self.pipeline.vae.state_dict(), "optimiser": None}, temporary)
            self.save_state()
        else:
            self._check_checkpoints()
            if (self.work / "vae.ckpt").exists():
                vae = torch.load(self.work / "vae.ckpt", map_location="cpu")["vae"]
                self.pipeline.vae.load_state_dict(vae)
        if "latents_mean" in self.state:
            self.pipeline.vae.register_to_config(
                latents_mean=self.state["latents_mean"], latents_std=self.state["latents_std"]
            )
        self.pipeline.to(self.device)
        self.averages = [copy.deepcopy(m).eval().requires_grad_(False) for m in self.models]

    @property
    def models(self) -> list[torch.nn.Module]:
        return [self.pipeline.text_encoder, self.pipeline.transformer]

    def _check_checkpoints(self) -> None:
        """A state that has trained must have its checkpoints beside it: without them the piece would
        go on from random weights at the recorded step."""
        for stage, step, checkpoint in (
            ("vae", "vae_step", "vae.ckpt"),
            ("transformer", "step", "transformer.ckpt"),
        ):
            if self.state[step] > 0 and not (self.work / checkpoint).exists():
                raise SystemExit(
                    f"{self.work}/state.json is at {stage} step {self.state[step]} but {checkpoint} is "
                    "missing; resume from a portable copy in a new --work folder (--resume-from)"
                )

    def _load_state(self, path: Path) -> dict:
        """The state at `path` (this folder's, or a portable copy's), its fixed settings checked; a new
        one when there is none."""
        settings = {
            key: getattr(self.args, key) for key in vars(self.args) if key not in ("work", "resume_from")
        }
        settings["device"] = str(settings["device"])
        if not path.exists():
            state = {"stage": "vae", "vae_step": 0, "step": 0, "settings": settings, "evals": []}
            state["pieces"] = [{"vae_step": 0, "step": 0, "settings": settings}]
            return state
        state = json.loads(path.read_text())
        changed = {
            k: (state["settings"][k], settings[k])
            for k in FIXED_SETTINGS
            if state["settings"][k] != settings[k]
        }
        if changed:
            raise SystemExit(
                f"{self.work} was trained with other settings {changed} (old, new); "
                "resume with the same values or use a new --work folder."
            )
        state["settings"] = settings
        # Every piece's settings (the schedule, the learning rate, the phases may change between pieces).
        piece = {"vae_step": state["vae_step"], "step": state["step"], "settings": settings}
        state.setdefault("pieces", []).append(piece)
        return state

    def save_state(self) -> None:
        write_json(self.work / "state.json", self.state)

    def out_of_budget(self) -> bool:
        if self.args.piece_steps is not None and self.steps_this_piece >= self.args.piece_steps:
            return True
        return time.monotonic() - self.started > self.args.budget_minutes * 60

    def log(self, stage: str, step: int, values: dict[str, float]) -> None:
        record = {"stage": stage, "step": step, "time": time.monotonic() - self.started, **values}
        with open(self.work / "losses.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        logger.info("%s %d: %s", stage, step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def rate(self, stage: str, step: int, total: int, peak: float, warmup: int) -> float:
        restarted = self.state.get("restarted_at", {}).get(stage)
        return learning_rate(step, total, peak, warmup, restarted_at=restarted)

    def refuse_non_finite(self, step: int, values: dict[str, float]) -> None:
        """Stop before a NaN or inf loss is kept in a checkpoint or reaches the EMA model's scores."""
        if all(math.isfinite(value) for value in values.values()):
            return
        saved = self.state.get("saved_step")
        where = f"holds step {saved}" if saved is not None else "holds no checkpoint yet"
        raise SystemExit(
            f"the loss or the gradient norm is not finite at step {step} ({values}); nothing after the "
            f"last checkpoint is kept ({self.work} {where}): lower the learning rate, then run again"
        )

    def run(self) -> str:
        stages = {
            "vae": train_vae,
            "stats": latent_statistics,
            "transformer": train_transformer,
        }
        while not self.out_of_budget() and self.state["step"] < self.args.steps:
            stage = self.state["stage"]
            began = time.monotonic()
            stages[stage](self)
            seconds = self.state.setdefault("seconds", {})
            seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - began
            self.save_state()
            if stage == "transformer":
                break
        write_portable(self, weights=not self.checkpointed)  # else as the last checkpoint wrote them
        return self.state["stage"] if self.state["step"] < self.args.steps else "done"
