"""CountWorld 2's trainer: a work folder trained in resumable pieces, stage by stage, within a budget.

`Trainer(settings).run()` runs whichever stage comes next until the budget ends (the settings are
`experiments/train_countworld2.py`'s options, which document each):

1. vae: the first CountWorld's VAE fine-tuned on CountWorld 2's scenes, then gate G0 (the exact
   counter on held-out reconstructions);
2. stats: the latents' per-channel mean and standard deviation;
3. transformer: the text encoder and the transformer learn together by flow matching on scenes drawn
   and rendered fresh every step; after every piece the EMA pipeline is scored (the learning curve)
   and gate G1's text probe is measured.

Checkpoints: full ones in the work folder (optimiser moments included), and the portable copy, the
EMA pipeline in float16 with `training.json`, the log and the learning curve beside it, from which a
new work folder resumes on a machine that kept nothing. Steps draw their scenes and noise from
generators seeded by (seed, step). May import torch, diffusers, transformers, pandas, matplotlib,
tqdm, numina.countworld, numina.models.countworld2 and numina.run_folder.
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

import pandas as pd
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from matplotlib.figure import Figure
from tqdm import tqdm
from transformers import UMT5EncoderModel

from numina.countworld import world2
from numina.countworld.gates import count_probe
from numina.countworld.joint_training import (
    counting_rows,
    counting_summary,
    joint_flow_step,
    latent_statistics_of,
    render_batch,
    single_kind_scenes,
    vae_count_agreement,
    vae_step,
)
from numina.countworld.training import ema_decay, learning_rate, stream_generators
from numina.models.countworld2 import save_countworld2, untrained_pipeline
from numina.run_folder import atomic_write, write_json

# Settings that shape a work folder's data and model; a resumed folder refuses others.
FIXED_SETTINGS = ("seed", "frames", "size", "vae_steps", "image_batch")
# The portable copy's state, beside the pipeline's own files.
STATE_FILE = "training.json"
# Disjoint seed streams: VAE steps, held-out clips, latent statistics, transformer steps.
VAE_STREAM, EVAL_STREAM, STATS_STREAM, STEP_STREAM = 1, 2, 3, 4
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
            self._load_portable(args.resume_from)
            if (args.resume_from / "losses.jsonl").is_file():
                shutil.copy(args.resume_from / "losses.jsonl", self.work / "losses.jsonl")
            # The folder holds its own VAE from here (a later piece in it loads vae.ckpt, not the portable).
            with atomic_write(self.work / "vae.ckpt") as temporary:
                torch.save({"vae": self.pipeline.vae.state_dict(), "optimiser": None}, temporary)
            self._save_state()
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

    def _load_portable(self, folder: Path) -> None:
        """Weights of a portable copy: the VAE, and the EMA text encoder and transformer, which the raw
        weights restart from (moments restart: the learning rate warms up again from here)."""
        self.pipeline.vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)
        if self.state["step"] > 0:
            self.pipeline.text_encoder = UMT5EncoderModel.from_pretrained(
                folder, subfolder="text_encoder", dtype=torch.float32
            )
            self.pipeline.transformer = WanTransformer3DModel.from_pretrained(
                folder, subfolder="transformer", dtype=torch.float32
            )
        self.state["restarted_at"] = {"vae": self.state["vae_step"], "transformer": self.state["step"]}
        logger.info("resuming from %s at step %d (optimiser moments start again)", folder, self.state["step"])

    def _save_state(self) -> None:
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

    # ----- stage 1: the VAE -----
    def train_vae(self) -> None:
        args, vae = self.args, self.pipeline.vae.train()
        optimiser = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        checkpoint = self.work / "vae.ckpt"
        saved = torch.load(checkpoint, map_location="cpu") if checkpoint.exists() else {}
        if saved.get("optimiser") is not None:  # the weights are loaded already; a resume has no moments
            optimiser.load_state_dict(saved["optimiser"])
        settings = {"object_weight": 10.0, "kl_weight": 1e-6}
        progress = tqdm(total=args.vae_steps, initial=self.state["vae_step"], desc="vae", unit="step")
        parts: dict[str, torch.Tensor] = {}
        while self.state["vae_step"] < args.vae_steps and not self.out_of_budget():
            step = self.state["vae_step"]
            rng, generator = stream_generators(args.seed, VAE_STREAM, step, self.device)
            # Half images, half clips: the transformer sees both.
            frames = 1 if step % 2 == 0 else args.frames
            scenes = world2.sample_scenes(rng, args.vae_batch * (4 if frames == 1 else 1))
            for group in optimiser.param_groups:
                group["lr"] = self.rate("vae", step, args.vae_steps, args.vae_lr, 50)
            parts = vae_step(
                vae, optimiser, scenes, int(rng.integers(2**31)), frames, args.size, generator, settings,
                self.autocast,
            )  # fmt: skip
            self.state["vae_step"] = step + 1
            self.steps_this_piece += 1
            progress.update()
            if (step + 1) % args.log_every == 0 or step + 1 == args.vae_steps:
                values = {k: v.item() for k, v in parts.items()}
                self.log("vae", step + 1, values)
                self.refuse_non_finite(step + 1, values)
        progress.close()
        if parts:  # the last step's loss, also when the budget ended between two log lines
            self.refuse_non_finite(self.state["vae_step"], {k: v.item() for k, v in parts.items()})
        with atomic_write(checkpoint) as temporary:
            torch.save({"vae": vae.state_dict(), "optimiser": optimiser.state_dict()}, temporary)
        vae.eval()
        if self.state["vae_step"] >= args.vae_steps:
            rng, _ = stream_generators(args.seed, EVAL_STREAM, 0, self.device)
            scenes = world2.sample_scenes(rng, args.vae_eval_clips)
            self.state["vae_eval"] = vae_count_agreement(
                vae, scenes, int(rng.integers(2**31)), args.frames, args.size, self.autocast
            )
            logger.info("G0, VAE on %d held-out clips: %s", len(scenes), self.state["vae_eval"])
            self.state["stage"] = "stats"
        self._save_state()

    # ----- stage 2: latent statistics -----
    def latent_statistics(self) -> None:
        args = self.args
        rng, _ = stream_generators(args.seed, STATS_STREAM, 0, self.device)
        scenes = world2.sample_scenes(rng, 512)
        mean, std = latent_statistics_of(
            self.pipeline.vae, scenes, int(rng.integers(2**31)), 1, args.size, self.autocast
        )
        self.state.update(latents_mean=mean, latents_std=std, stage="transformer")
        self.pipeline.vae.register_to_config(latents_mean=mean, latents_std=std)
        self._save_state()

    # ----- stage 3: text encoder and transformer -----
    def scene_batches(self, step: int) -> list[tuple[list, int, int]]:
        """(scenes, render seed, frames) of each batch of this step: images, and videos from --video-from."""
        args = self.args
        rng, _ = stream_generators(args.seed, STEP_STREAM, step, self.device)
        kinds = 1 if step < args.multi_kind_from else 3
        batches = [(world2.sample_scenes(rng, args.image_batch, kinds), int(rng.integers(2**31)), 1)]
        if step >= args.video_from:
            batches.append(
                (world2.sample_scenes(rng, args.video_batch, kinds), int(rng.integers(2**31)), args.frames)
            )
        return batches

    def train_transformer(self) -> None:
        args = self.args
        for model in self.models:
            model.train()
        parameters = [p for model in self.models for p in model.parameters()]
        optimiser = torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        checkpoint = self.work / "transformer.ckpt"
        if checkpoint.exists():
            saved = torch.load(checkpoint, map_location="cpu")
            for model, average, weights, ema in zip(
                self.models, self.averages, saved["models"], saved["ema"], strict=True
            ):
                model.load_state_dict(weights)
                average.load_state_dict(ema)
            optimiser.load_state_dict(saved["optimiser"])
        if args.compile:
            self.pipeline.transformer.compile_repeated_blocks(fullgraph=True)
        mean = torch.tensor(self.state["latents_mean"], device=self.device)
        std = torch.tensor(self.state["latents_std"], device=self.device)
        progress = tqdm(total=args.steps, initial=self.state["step"], desc="transformer", unit="step")
        window: list[torch.Tensor] = []
        while self.state["step"] < args.steps and not self.out_of_budget():
            step = self.state["step"]
            batches = [
                render_batch(self.pipeline.vae, scenes, seed, frames, args.size, mean, std, self.autocast)
                for scenes, seed, frames in self.scene_batches(step)
            ]
            for group in optimiser.param_groups:
                group["lr"] = self.rate("transformer", step, args.steps, args.lr, args.warmup)
            settings = {
                "caption_dropout": args.caption_dropout,
                "shift": args.shift,
                "object_weight": args.object_weight,
                "decay": ema_decay(step, args.ema),
            }
            _, generator = stream_generators(args.seed, STEP_STREAM, step, self.device)
            loss, grad_norm = joint_flow_step(
                self.models, self.averages, optimiser, self.pipeline.tokenizer, batches, generator, settings,
                self.autocast,
            )  # fmt: skip
            window.append(loss)
            self.state["step"] = step + 1
            self.steps_this_piece += 1
            progress.update()
            if (step + 1) % args.log_every == 0:
                images = args.image_batch + (args.video_batch if step >= args.video_from else 0)
                elapsed = time.monotonic() - self.started
                values = {"loss": torch.stack(window).mean().item(), "grad_norm": grad_norm.item()}
                self.log(
                    "transformer",
                    step + 1,
                    values | {"lr": optimiser.param_groups[0]["lr"], "batch": images, "elapsed": elapsed},
                )
                window = []
                self.refuse_non_finite(step + 1, values)
            if (step + 1) % args.checkpoint_every == 0:
                self.checkpoint(optimiser, window, grad_norm)
        progress.close()
        self.checkpoint(optimiser, window, grad_norm)
        self.evaluate()

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

    def checkpoint(
        self, optimiser: torch.optim.Optimizer, window: list[torch.Tensor], grad_norm: torch.Tensor
    ) -> None:
        """The full checkpoint in the work folder, and the portable copy (the EMA pipeline in float16),
        once the losses since the last log line (`window`) and the last gradient norm are finite."""
        if window:
            values = {"loss": torch.stack(window).mean().item(), "grad_norm": grad_norm.item()}
            self.refuse_non_finite(self.state["step"], values)
        payload = {
            "models": [m.state_dict() for m in self.models],
            "ema": [a.state_dict() for a in self.averages],
            "optimiser": optimiser.state_dict(),
        }
        with atomic_write(self.work / "transformer.ckpt") as temporary:
            torch.save(payload, temporary)
        self.state["saved_step"] = self.state["step"]
        self._save_state()
        self.write_portable()
        self.checkpointed = True

    def ema_pipeline(self):
        """The pipeline with the EMA text encoder and transformer (the model to sample and to ship)."""
        pipeline = copy.copy(self.pipeline)
        pipeline.text_encoder, pipeline.transformer = self.averages
        return pipeline

    def write_portable(self, weights: bool = True) -> None:
        """The EMA pipeline (float16; `weights=False`: as last written) with the state, the log and the
        learning curve beside it."""
        if weights or not (self.portable / "model_index.json").is_file():
            save_countworld2(self.ema_pipeline(), self.portable)
        write_json(self.portable / STATE_FILE, self.state)
        if (self.work / "losses.jsonl").is_file():
            shutil.copy(self.work / "losses.jsonl", self.portable / "losses.jsonl")
            learning_curve_figure(self.work / "losses.jsonl").savefig(self.portable / "learning_curve.png")

    @torch.no_grad()
    def evaluate(self) -> None:
        """The learning curve: counting of the EMA pipeline with G2's sampler (50 steps, CFG 5, shift 5)
        on single-kind images, and once videos are trained on CountWorld 2's benchmark clips (1-3 kinds);
        and gate G1, the count probe of the text encoder."""
        args = self.args
        if not args.eval_prompts:
            return
        pipeline, step = self.ema_pipeline(), self.state["step"]
        suites = [("eval", single_kind_scenes(args.eval_prompts, seed=args.seed), 1)]
        if step > args.video_from:
            clips = world2.benchmark_scenes(max(1, args.eval_prompts // 2), seed=args.seed)
            suites.append(("eval_videos", clips, args.frames))
        for stage, scenes, frames in suites:
            began = time.monotonic()
            rows = counting_rows(
                pipeline, scenes, frames, args.size, args.eval_steps, 5.0, args.seed, self.autocast
            )
            summary = counting_summary(rows) | {"seconds": time.monotonic() - began}
            self.state["evals"].append({"step": step, "frames": frames, **summary})
            self.log(stage, step, summary)
        probe = count_probe(pipeline, args.probe_captions, args.seed)
        self.state.setdefault("text_probes", []).append({"step": step, **probe})
        self.log("eval_text", step, probe)
        self._save_state()  # run() writes the portable copy next

    def run(self) -> str:
        stages = {
            "vae": self.train_vae,
            "stats": self.latent_statistics,
            "transformer": self.train_transformer,
        }
        while not self.out_of_budget() and self.state["step"] < self.args.steps:
            stage = self.state["stage"]
            began = time.monotonic()
            stages[stage]()
            seconds = self.state.setdefault("seconds", {})
            seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - began
            self._save_state()
            if stage == "transformer":
                break
        self.write_portable(weights=not self.checkpointed)  # else as the last checkpoint wrote them
        return self.state["stage"] if self.state["step"] < self.args.steps else "done"


def learning_curve_figure(log: Path) -> Figure:
    """The transformer's loss, and the counting accuracy of its samples (images of one kind; clips of 1-3
    kinds once videos are trained) and gate G1's noun probe against the training step."""
    records = (
        pd.DataFrame([json.loads(line) for line in log.read_text().splitlines()]) if log.exists() else None
    )
    figure = Figure(figsize=(10, 3.5), constrained_layout=True)
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    loss_axis.set(title="flow loss", xlabel="step", yscale="log")
    accuracy_axis.set(title="counting (CFG 5, 50 steps)", xlabel="step", ylim=(0, 1))
    if records is None:
        return figure
    losses = records[records["stage"] == "transformer"]
    loss_axis.plot(losses["step"], losses["loss"])
    curves = [
        ("eval", "accuracy", "images, all counts"),
        ("eval", "accuracy_1", "images, count 1"),
        ("eval", "accuracy_8", "images, count 8"),
        ("eval_videos", "accuracy", "clips, 1-3 kinds"),
        ("eval_text", "noun_probe", "G1: count from the noun's state"),
    ]
    for stage, column, label in curves:
        rows = records[records["stage"] == stage]
        if len(rows) and column in rows:
            accuracy_axis.plot(rows["step"], rows[column], marker=".", label=label)
    if accuracy_axis.lines:
        accuracy_axis.legend(fontsize="small")
    return figure
