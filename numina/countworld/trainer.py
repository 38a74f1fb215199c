"""The first CountWorld's trainer: a work folder trained in resumable pieces, stage by stage.

`Trainer(settings).run()` runs whichever stage comes next until the budget ends (the settings are
`experiments/train_countworld.py`'s options, which document each):

1. vae: the AutoencoderKLWan learns to reconstruct clips rendered on the fly, then is scored on
   held-out clips (PSNR, and whether the exact counter counts the reconstructions right);
2. latents: a data set of clips rendered and encoded in parts (optionally refreshed part by part),
   with their captions and object positions; per-channel statistics go into the VAE config;
3. transformer: flow matching with caption dropout, object positions weighted up, AdamW, warm-up and
   cosine learning rate, gradient clipping, bf16 autocast on GPU, an EMA of the weights; the EMA
   pipeline is exported after every piece and its samples are counted.

Every checkpoint also writes the portable copy (state, loss log, weights as diffusers folders in
files under 15 MB, no optimiser moments), from which a fresh machine resumes. Every step draws its
clips, noise and noise levels from generators seeded by (seed, step), so a run split into pieces
ends with the same weights as one run. May import numpy, pandas, torch, diffusers, matplotlib, tqdm,
numina.countworld, numina.evaluation, numina.models.countworld, numina.run_folder, numina.sampling
and numina.wandb_mirror.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from matplotlib.figure import Figure
from tqdm import tqdm

from numina.countworld.training import (
    ema_decay,
    flow_training_step,
    latent_object_mask,
    latent_statistics,
    learning_rate,
    object_weights,
    reconstruction_count_agreement,
    shifted_sigmas,
    stream_generators,
    to_vae_input,
    vae_loss,
)
from numina.countworld.world import benchmark_scenes, palette_from_prompt, render_scenes, sample_scene
from numina.evaluation.accuracy import count_rows, video_scores
from numina.evaluation.counters import ExactColourCounter
from numina.models.countworld import SHARD_SIZE, save_countworld, untrained_pipeline
from numina.run_folder import atomic_write, write_json
from numina.sampling import GenerationSettings
from numina.wandb_mirror import Tracker

STAGES = ("vae", "latents", "transformer", "done")
PART_SIZE = 4096
VERSION_STRIDE = 100_000  # a refreshed part's seed index: part + version * VERSION_STRIDE
# The settings written into a work folder's state (those that shape its data are then fixed).
RECORDED_SETTINGS = (
    "seed", "frames", "size", "vae_steps", "vae_frames", "clips", "steps", "batch", "lr", "refresh_every",
)  # fmt: skip
# Disjoint seed streams: VAE training clips, held-out evaluation clips, the latent data set, steps.
VAE_STREAM, EVAL_STREAM, DATA_STREAM, STEP_STREAM = 1, 2, 3, 4
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
            vae.load_state_dict(_weights(AutoencoderKLWan, self.resume_from / "vae"))
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

    def _save_state(self) -> None:
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
        self._save_state()  # also the portable copy, now that the folder exists

    def generator(self, stream: int, index: int) -> tuple[np.random.Generator, torch.Generator]:
        """A numpy and a device generator for one step of one seed stream."""
        return stream_generators(self.args.seed, stream, index, self.device)

    # ----- stage 1: the VAE -----
    def train_vae(self, tracker: Tracker) -> None:
        args, vae = self.args, self.pipeline.vae
        vae.train()
        optimiser = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        saved = torch.load(self.work / "vae.ckpt", map_location="cpu") if self.state["vae_step"] else {}
        if "optimiser" in saved:  # absent after a portable resume: the moments restart
            optimiser.load_state_dict(saved["optimiser"])
        progress = tqdm(total=args.vae_steps, initial=self.state["vae_step"], desc="vae", unit="step")
        while self.state["vae_step"] < args.vae_steps and not self.out_of_budget():
            step = self.state["vae_step"]
            rng, device_generator = self.generator(VAE_STREAM, step)
            scenes = [sample_scene(rng) for _ in range(args.vae_batch)]
            clips = render_scenes(scenes, int(rng.integers(2**31)), args.vae_frames, args.size, self.device)
            target = to_vae_input(clips.videos)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(
                    step, args.vae_steps, args.vae_lr, 100, restarted_at=self.restarted_at("vae")
                )
            with self.autocast:
                posterior = vae.encode(target).latent_dist
                latent = posterior.mean + posterior.std * torch.randn(
                    posterior.mean.shape, generator=device_generator, device=self.device
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
            self.state["vae_step"] = step + 1
            self.steps_this_piece += 1
            progress.update()
            if (step + 1) % args.log_every == 0 or step + 1 == args.vae_steps:
                self.log(
                    tracker, "vae", step + 1, {"loss": loss.item()} | {k: v.item() for k, v in parts.items()}
                )
            if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.vae_steps or self.out_of_budget():
                self.save_checkpoint(
                    "vae.ckpt", {"vae": vae.state_dict(), "optimiser": optimiser.state_dict()}, {"vae": vae}
                )
        progress.close()
        vae.eval()
        if self.state["vae_step"] >= args.vae_steps:
            self.state["vae_eval"] = self.evaluate_vae()
            logger.info("VAE on held-out clips: %s", self.state["vae_eval"])
            tracker.log_scalars({f"vae_eval/{k}": v for k, v in self.state["vae_eval"].items()})
            self.state["stage"] = "latents"
            self._save_state()

    @torch.no_grad()
    def evaluate_vae(self) -> dict[str, float]:
        """PSNR of held-out full-length clips, and the share of (clip, frame, noun) whose exact count
        on the reconstruction equals the truth (the counter's accuracy on real renders is 1)."""
        args = self.args
        rng, _ = self.generator(EVAL_STREAM, 0)
        scenes = [sample_scene(rng) for _ in range(args.eval_clips)]
        clips = render_scenes(scenes, int(rng.integers(2**31)), args.frames, args.size, self.device)
        return reconstruction_count_agreement(self.pipeline.vae, clips.videos, scenes, self.autocast)

    # ----- stage 2: the latent data set -----
    @property
    def parts(self) -> int:
        return -(-self.args.clips // PART_SIZE)

    def part_version(self, part: int) -> int:
        """How often `part` of the latent set has been replaced by new clips at the current step: with
        --refresh-every N, the r-th refresh (at step r N) replaces part (r - 1) mod parts."""
        if not self.args.refresh_every:
            return 0
        refreshes = self.state["step"] // self.args.refresh_every
        return (refreshes - part + self.parts - 1) // self.parts if refreshes > part else 0

    def part_path(self, part: int, version: int) -> Path:
        suffix = f"_v{version:03d}" if version else ""  # version 0 keeps the name of the first data set
        return self.work / "latents" / f"part_{part:04d}{suffix}.pt"

    @torch.no_grad()
    def encode_part(self, part: int, version: int) -> dict:
        """Render and encode one part of the latent set (its clips drawn from the part's and version's
        own seed) and write it, replacing the part's older version."""
        args, vae = self.args, self.pipeline.vae.eval()
        size = min(PART_SIZE, args.clips - part * PART_SIZE)
        rng, _ = self.generator(DATA_STREAM, part + version * VERSION_STRIDE)
        scenes = [sample_scene(rng) for _ in range(size)]
        latents, objects = [], []
        for start in range(0, size, 64):
            batch = scenes[start : start + 64]
            clips = render_scenes(batch, int(rng.integers(2**31)), args.frames, args.size, self.device)
            with self.autocast:
                latent = vae.encode(to_vae_input(clips.videos)).latent_dist.mode()
            latents.append(latent.to(torch.float16).cpu())
            objects.append(latent_object_mask(clips.instances).cpu())
        captions = [scene.caption for scene in scenes]
        data = {"latents": torch.cat(latents), "objects": torch.cat(objects), "captions": captions}
        path = self.part_path(part, version)
        path.parent.mkdir(exist_ok=True)
        with atomic_write(path) as temporary:
            torch.save(data, temporary)
        for older in path.parent.glob(f"part_{part:04d}*.pt"):
            if older != path:
                older.unlink()
        return data

    def encode_latents(self) -> None:
        """Every part of the latent set that is missing at the version the current step calls for."""
        progress = tqdm(total=self.parts, desc="latents", unit="part")
        for part in range(self.parts):
            progress.update()
            if self.part_path(part, self.part_version(part)).exists():
                continue
            if self.out_of_budget():
                return
            self.encode_part(part, self.part_version(part))
        progress.close()
        if "latents_mean" not in self.state:  # kept when a fresh machine encodes the same clips again
            latents, _, _ = self.load_latents()
            self.state["latents_mean"], self.state["latents_std"] = latent_statistics(latents)
        if self.state["stage"] == "latents":
            self.state["stage"] = "transformer"
        self._save_state()

    def load_latents(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The latent data set: latents, the object masks on the latent grid, and the captions."""
        loaded = [torch.load(self.part_path(part, self.part_version(part))) for part in range(self.parts)]
        if any("objects" not in part for part in loaded):
            raise SystemExit(
                f"{self.work / 'latents'} was encoded by an older version without object masks; "
                "delete that folder and run again to encode the same clips with them."
            )
        return (
            torch.cat([p["latents"] for p in loaded]),
            torch.cat([p["objects"] for p in loaded]),
            [c for p in loaded for c in p["captions"]],
        )

    # ----- stage 3: the transformer -----
    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            embeddings, _ = self.pipeline.encode_prompt(
                captions, do_classifier_free_guidance=False, max_sequence_length=512, device=self.device
            )
        return embeddings

    def caption_bank(self, captions: list[str]) -> torch.Tensor:
        """Every clip's text embedding, encoded once (the text encoder is frozen): (clips, 512, width),
        in bfloat16 under autocast (what the transformer's layers read anyway), else float32. Saves
        the tokenizer and the text encoder in every step."""
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        chunks = [self.encode_captions(captions[i : i + 512]).to(dtype) for i in range(0, len(captions), 512)]
        return torch.cat(chunks)

    def train_transformer(self, tracker: Tracker) -> None:
        args = self.args
        transformer = self.pipeline.transformer.to(self.device).train()
        average = copy.deepcopy(transformer).eval().requires_grad_(False)
        if args.compile:
            transformer.compile_repeated_blocks(fullgraph=True)
        optimiser = torch.optim.AdamW(
            transformer.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0
        )
        checkpoint = self.work / "transformer.ckpt"
        if checkpoint.exists():
            saved = torch.load(checkpoint, map_location="cpu")
            transformer.load_state_dict(saved["model"])
            average.load_state_dict(saved["ema"])
            optimiser.load_state_dict(saved["optimiser"])
        elif self.resume_from is not None and (self.resume_from / "transformer").is_dir():
            transformer.load_state_dict(_weights(WanTransformer3DModel, self.resume_from / "transformer"))
            average.load_state_dict(_weights(WanTransformer3DModel, self.resume_from / "ema"))
        self.encode_latents()  # on a fresh machine the same clips again; else nothing to do
        latents, objects, captions = self.load_latents()
        latents, objects = latents.to(self.device), objects.to(self.device)
        bank, no_caption = self.caption_bank(captions), self.encode_captions([""])
        mean = torch.tensor(self.state["latents_mean"], device=self.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.state["latents_std"], device=self.device).view(1, -1, 1, 1, 1)
        progress = tqdm(total=args.steps, initial=self.state["step"], desc="transformer", unit="step")
        window: list[torch.Tensor] = []
        while self.state["step"] < args.steps and not self.out_of_budget():
            step = self.state["step"]
            rng, device_generator = self.generator(STEP_STREAM, step)
            index = rng.integers(len(captions), size=args.batch)
            dropped = rng.random(args.batch) < args.caption_dropout
            dropped_rows = torch.from_numpy(dropped).to(self.device).view(-1, 1, 1)
            chosen = torch.from_numpy(index).to(self.device)
            text = torch.where(dropped_rows, no_caption, bank[chosen].float())
            clean = (latents[chosen].float() - mean) / std
            noise = torch.randn(clean.shape, generator=device_generator, device=self.device)
            sigmas = shifted_sigmas(args.batch, args.shift, device_generator, self.device)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(
                    step, args.steps, args.lr, args.warmup, restarted_at=self.restarted_at("transformer")
                )
            loss, grad_norm = flow_training_step(
                transformer,
                average,
                optimiser,
                {"clean": clean, "noise": noise, "sigmas": sigmas, "text": text, "objects": objects[chosen]},
                args.flow_object_weight,
                ema_decay(step, args.ema),
                self.autocast,
            )
            self.state["step"] = step + 1
            self.steps_this_piece += 1
            window.append(loss)  # no host sync per step
            if args.refresh_every and (step + 1) % args.refresh_every == 0:
                part = ((step + 1) // args.refresh_every - 1) % self.parts
                fresh = self.encode_part(part, self.part_version(part))
                rows = slice(part * PART_SIZE, part * PART_SIZE + len(fresh["captions"]))
                latents[rows] = fresh["latents"].to(self.device)
                objects[rows] = fresh["objects"].to(self.device)
                bank[rows] = self.caption_bank(fresh["captions"])
            progress.update()
            if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
                values = {"loss": torch.stack(window).mean().item(), "lr": optimiser.param_groups[0]["lr"]}
                self.log(tracker, "transformer", step + 1, values | {"grad_norm": grad_norm.item()})
                window = []
            if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps or self.out_of_budget():
                self.save_checkpoint(
                    "transformer.ckpt",
                    {
                        "model": transformer.state_dict(),
                        "ema": average.state_dict(),
                        "optimiser": optimiser.state_dict(),
                    },
                    {"transformer": transformer, "ema": average, "vae": self.pipeline.vae},
                )
        progress.close()
        self.export(average, tracker)
        if self.state["step"] >= args.steps:
            self.state["stage"] = "done"
        self._save_state()

    def export(self, average: torch.nn.Module, tracker: Tracker) -> None:
        """Write the EMA pipeline (with the latent statistics in the VAE config) to <work>/pipeline,
        after scoring its own samples."""
        pipeline = self.pipeline
        pipeline.vae.register_to_config(
            latents_mean=self.state["latents_mean"], latents_std=self.state["latents_std"]
        )
        pipeline.transformer = average
        if self.args.sample_prompts:
            self.state["sample_eval"] = {"step": self.state["step"], **self.evaluate_samples()}
            self.log(tracker, "samples", self.state["step"], self.state["sample_eval"])
        folder = save_countworld(pipeline, self.work / "pipeline")
        (folder / "training.json").write_text(
            json.dumps(
                {k: self.state[k] for k in ("step", "settings") if k in self.state} | self.summary(), indent=2
            )
        )
        if self.args.export is not None:
            shutil.copytree(folder, self.args.export, dirs_exist_ok=True)

    @torch.no_grad()
    def evaluate_samples(self) -> dict[str, float]:
        """Counting accuracy of the pipeline's own videos, the number that says whether the model
        counts: the first `--sample-prompts` prompts of CountWorld's benchmark (first-kind counts 1-8 in
        turn), one video each at the run defaults, scored as CountBench scores (exact counter, mean over
        videos of the fraction of nouns counted exactly per frame)."""
        args, pipeline = self.args, self.pipeline
        scenes = benchmark_scenes(args.sample_prompts, seed=args.seed)
        pipeline.set_progress_bar_config(disable=True)
        rows = []
        for start in range(0, len(scenes), 16):
            batch = scenes[start : start + 16]
            with self.autocast:
                videos = pipeline(
                    [scene.caption for scene in batch],
                    num_frames=args.frames,
                    height=args.size,
                    width=args.size,
                    num_inference_steps=args.sample_steps,
                    guidance_scale=GenerationSettings.guidance,
                    generator=torch.Generator().manual_seed(args.seed),  # CPU noise: same on any device
                    output_type="np",
                ).frames
            for offset, (scene, video) in enumerate(zip(batch, videos, strict=True)):
                counter = ExactColourCounter(palette_from_prompt(scene.caption, scene.targets))
                counts = {noun: counter.count(video, noun) for noun in scene.targets}
                rows += count_rows(start + offset, args.seed, "baseline", scene.targets, counts)
        scores = video_scores(pd.DataFrame(rows))
        return {
            "accuracy": float(scores["accuracy"].mean()),
            "all_frames_exact": float(scores["all_frames_exact"].mean()),
            "mean_abs_error": float(scores["mean_abs_error"].mean()),
        }

    def summary(self) -> dict:
        """Training time and final losses, from the log."""
        records = [json.loads(line) for line in (self.work / "losses.jsonl").read_text().splitlines()]
        last = {stage: [r for r in records if r["stage"] == stage][-20:] for stage in ("vae", "transformer")}
        return {
            "vae_eval": self.state.get("vae_eval"),
            "sample_eval": self.state.get("sample_eval"),
            "final_loss": {
                stage: float(np.mean([r["loss"] for r in rows])) for stage, rows in last.items() if rows
            },
            "seconds": self.state.get("seconds", {}),
        }

    def run(self) -> str:
        config = vars(self.args) | {"work": str(self.work), "export": str(self.args.export)}
        with Tracker(
            self.work, name=self.work.name, config=config, mode=self.args.wandb, job_type="train"
        ) as tracker:
            stages = {
                "vae": self.train_vae,
                "latents": lambda _: self.encode_latents(),
                "transformer": self.train_transformer,
            }
            while self.state["stage"] != "done" and not self.out_of_budget():
                stage = self.state["stage"]
                began = time.monotonic()
                stages[stage](tracker)
                seconds = self.state.setdefault("seconds", {})
                seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - began
                self._save_state()
            figure = self.work / "loss_curves.png"
            loss_curves_figure(self.work / "losses.jsonl").savefig(figure)
            tracker.log_image("loss_curves", figure)
        return self.state["stage"]


def _weights(model_class: type, folder: Path) -> dict[str, torch.Tensor]:
    """The float32 state dict of a model saved with `save_pretrained` in `folder`."""
    return model_class.from_pretrained(folder, dtype=torch.float32).state_dict()


def loss_curves_figure(log: Path) -> Figure:
    """The VAE's and the transformer's training loss against step (raw and smoothed)."""
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    figure = Figure(figsize=(10, 3.5), constrained_layout=True)
    for axis, stage in zip(figure.subplots(1, 2), ("vae", "transformer"), strict=True):
        rows = [r for r in records if r["stage"] == stage]
        axis.set_title(f"{stage} loss")
        axis.set_xlabel("step")
        if rows:
            steps = np.array([r["step"] for r in rows])
            losses = np.array([r["loss"] for r in rows])
            axis.plot(steps, losses, alpha=0.35, linewidth=0.8)
            if len(losses) >= 5:
                kernel = np.ones(5) / 5
                axis.plot(steps[2:-2], np.convolve(losses, kernel, mode="valid"), linewidth=1.5)
            axis.set_yscale("log")
    return figure
