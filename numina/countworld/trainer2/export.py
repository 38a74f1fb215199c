"""What a CountWorld 2 trainer keeps and shows: full checkpoints, the portable copy (the EMA pipeline
in float16 with the state, the log and the learning curve beside it, the folder committed as
models/countworld2), loading such a copy to resume, and the learning curve's evaluation and figure.

May import torch, diffusers, transformers, pandas, matplotlib, numina.countworld (gates,
joint_training, trainer2, world2), numina.models.countworld2 and numina.run_folder.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from matplotlib.figure import Figure
from transformers import UMT5EncoderModel

from numina.countworld import world2
from numina.countworld.gates import count_probe
from numina.countworld.joint_training import counting_rows, counting_summary, single_kind_scenes
from numina.models.countworld2 import save_countworld2
from numina.run_folder import atomic_write, write_json

if TYPE_CHECKING:
    from numina.countworld.trainer2.run import Trainer

STATE_FILE = "training.json"  # the portable copy's state, beside the pipeline's own files
logger = logging.getLogger(__name__)


def checkpoint(
    trainer: Trainer, optimiser: torch.optim.Optimizer, window: list[torch.Tensor], grad_norm: torch.Tensor
) -> None:
    """The full checkpoint in the work folder, and the portable copy (the EMA pipeline in float16),
    once the losses since the last log line (`window`) and the last gradient norm are finite."""
    if window:
        values = {"loss": torch.stack(window).mean().item(), "grad_norm": grad_norm.item()}
        trainer.refuse_non_finite(trainer.state["step"], values)
    payload = {
        "models": [m.state_dict() for m in trainer.models],
        "ema": [a.state_dict() for a in trainer.averages],
        "optimiser": optimiser.state_dict(),
    }
    with atomic_write(trainer.work / "transformer.ckpt") as temporary:
        torch.save(payload, temporary)
    trainer.state["saved_step"] = trainer.state["step"]
    trainer.save_state()
    write_portable(trainer)
    trainer.checkpointed = True


def ema_pipeline(trainer: Trainer):
    """The pipeline with the EMA text encoder and transformer (the model to sample and to ship)."""
    pipeline = copy.copy(trainer.pipeline)
    pipeline.text_encoder, pipeline.transformer = trainer.averages
    return pipeline


def write_portable(trainer: Trainer, weights: bool = True) -> None:
    """The EMA pipeline (float16; `weights=False`: as last written) with the state, the log and the
    learning curve beside it."""
    if weights or not (trainer.portable / "model_index.json").is_file():
        save_countworld2(ema_pipeline(trainer), trainer.portable)
    write_json(trainer.portable / STATE_FILE, trainer.state)
    if (trainer.work / "losses.jsonl").is_file():
        shutil.copy(trainer.work / "losses.jsonl", trainer.portable / "losses.jsonl")
        learning_curve_figure(trainer.work / "losses.jsonl").savefig(trainer.portable / "learning_curve.png")


def load_portable(trainer: Trainer, folder: Path) -> None:
    """Weights of a portable copy: the VAE, and the EMA text encoder and transformer, which the raw
    weights restart from (moments restart: the learning rate warms up again from here)."""
    trainer.pipeline.vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)
    if trainer.state["step"] > 0:
        trainer.pipeline.text_encoder = UMT5EncoderModel.from_pretrained(
            folder, subfolder="text_encoder", dtype=torch.float32
        )
        trainer.pipeline.transformer = WanTransformer3DModel.from_pretrained(
            folder, subfolder="transformer", dtype=torch.float32
        )
    trainer.state["restarted_at"] = {"vae": trainer.state["vae_step"], "transformer": trainer.state["step"]}
    logger.info("resuming from %s at step %d (optimiser moments start again)", folder, trainer.state["step"])


@torch.no_grad()
def evaluate(trainer: Trainer) -> None:
    """The learning curve: counting of the EMA pipeline with G2's sampler (50 steps, CFG 5, shift 5)
    on single-kind images, and once videos are trained on CountWorld 2's benchmark clips (1-3 kinds);
    and gate G1, the count probe of the text encoder."""
    args = trainer.args
    if not args.eval_prompts:
        return
    pipeline, step = ema_pipeline(trainer), trainer.state["step"]
    suites = [("eval", single_kind_scenes(args.eval_prompts, seed=args.seed), 1)]
    if step > args.video_from:
        clips = world2.benchmark_scenes(max(1, args.eval_prompts // 2), seed=args.seed)
        suites.append(("eval_videos", clips, args.frames))
    for stage, scenes, frames in suites:
        began = time.monotonic()
        rows = counting_rows(
            pipeline, scenes, frames, args.size, args.eval_steps, 5.0, args.seed, trainer.autocast
        )
        summary = counting_summary(rows) | {"seconds": time.monotonic() - began}
        trainer.state["evals"].append({"step": step, "frames": frames, **summary})
        trainer.log(stage, step, summary)
    probe = count_probe(pipeline, args.probe_captions, args.seed)
    trainer.state.setdefault("text_probes", []).append({"step": step, **probe})
    trainer.log("eval_text", step, probe)
    trainer.save_state()  # run() writes the portable copy next


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
