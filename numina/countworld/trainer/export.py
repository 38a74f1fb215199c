"""What the first CountWorld's trainer hands over: the EMA pipeline after every transformer piece
(float16, files under 15 MB, optionally copied elsewhere), its samples counted, the run's summary,
and the loss curves; and the weights of a saved model, to resume from.

May import numpy, pandas, torch, matplotlib, numina.countworld (trainer, world), numina.evaluation,
numina.models.countworld, numina.sampling and numina.wandb_mirror.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from numina.countworld.world import benchmark_scenes, palette_from_prompt
from numina.evaluation.accuracy import count_rows, video_scores
from numina.evaluation.counters import ExactColourCounter
from numina.models.countworld import save_countworld
from numina.sampling import GenerationSettings
from numina.wandb_mirror import Tracker

if TYPE_CHECKING:
    from numina.countworld.trainer.run import Trainer


logger = logging.getLogger(__name__)


def export(trainer: Trainer, average: torch.nn.Module, tracker: Tracker) -> None:
    """Write the EMA pipeline (with the latent statistics in the VAE config) to <work>/pipeline,
    after scoring its own samples."""
    pipeline = trainer.pipeline
    pipeline.vae.register_to_config(
        latents_mean=trainer.state["latents_mean"], latents_std=trainer.state["latents_std"]
    )
    pipeline.transformer = average
    if trainer.args.sample_prompts:
        trainer.state["sample_eval"] = {"step": trainer.state["step"], **evaluate_samples(trainer)}
        trainer.log(tracker, "samples", trainer.state["step"], trainer.state["sample_eval"])
    folder = save_countworld(pipeline, trainer.work / "pipeline")
    (folder / "training.json").write_text(
        json.dumps(
            {k: trainer.state[k] for k in ("step", "settings") if k in trainer.state} | summary(trainer),
            indent=2,
        )
    )
    if trainer.args.export is not None:
        shutil.copytree(folder, trainer.args.export, dirs_exist_ok=True)


@torch.no_grad()
def evaluate_samples(trainer: Trainer) -> dict[str, float]:
    """Counting accuracy of the pipeline's own videos, the number that says whether the model
    counts: the first `--sample-prompts` prompts of CountWorld's benchmark (first-kind counts 1-8 in
    turn), one video each at the run defaults, scored as CountBench scores (exact counter, mean over
    videos of the fraction of nouns counted exactly per frame)."""
    args, pipeline = trainer.args, trainer.pipeline
    scenes = benchmark_scenes(args.sample_prompts, seed=args.seed)
    pipeline.set_progress_bar_config(disable=True)
    rows = []
    for start in range(0, len(scenes), 16):
        batch = scenes[start : start + 16]
        with trainer.autocast:
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


def summary(trainer: Trainer) -> dict:
    """Training time and final losses, from the log."""
    records = [json.loads(line) for line in (trainer.work / "losses.jsonl").read_text().splitlines()]
    last = {stage: [r for r in records if r["stage"] == stage][-20:] for stage in ("vae", "transformer")}
    return {
        "vae_eval": trainer.state.get("vae_eval"),
        "sample_eval": trainer.state.get("sample_eval"),
        "final_loss": {
            stage: float(np.mean([r["loss"] for r in rows])) for stage, rows in last.items() if rows
        },
        "seconds": trainer.state.get("seconds", {}),
    }


def saved_weights(model_class: type, folder: Path) -> dict[str, torch.Tensor]:
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
