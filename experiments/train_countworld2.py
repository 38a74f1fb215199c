"""Train CountWorld 2 (a small Wan text-to-video pipeline that should count) in resumable pieces.

    python experiments/train_countworld2.py --work runs/countworld2-train --budget-minutes 9

runs the next piece and stops within the budget; the same command goes on. The stages (VAE, latent
statistics, transformer with the learning curve) are `numina.countworld.trainer2`'s.

A work folder keeps full checkpoints (optimiser moments included) and `portable/`: the EMA pipeline in
float16 with the state (`training.json`), the log and the learning curve beside it, the folder that is
committed as models/countworld2. Lent GPU machines keep nothing between calls: `--resume-from
<portable>` (or models/countworld2) starts a new work folder from it; the raw weights then restart
from the EMA weights and the optimiser's moments restart (the learning rate warms up again). Steps
draw their scenes and noise from generators seeded by (seed, step).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from numina.arguments import BUILT_IN_FRAMES, BUILT_IN_SIZE, check_output, integer, real


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    add = parser.add_argument
    add("--work", type=Path, required=True, help="work folder (checkpoints, portable copy, logs)")
    add("--budget-minutes", type=real(0, low_open=True), default=9.0, help="stop this piece after that long")
    add("--piece-steps", type=integer(1), default=None, help="stop this piece after N steps")
    add("--seed", type=integer(0), default=0)
    add("--frames", type=integer(1), default=BUILT_IN_FRAMES, help="frames of the video batches")
    add("--size", type=integer(1), default=BUILT_IN_SIZE, help="square frame size in pixels")
    add("--vae-steps", type=integer(0), default=800, help="fine-tuning steps of the VAE")
    add("--vae-batch", type=integer(1), default=16)
    add("--vae-lr", type=real(0, low_open=True), default=2e-4)
    add("--vae-eval-clips", type=integer(0), default=256, help="held-out clips of gate G0")
    add("--steps", type=integer(0), default=20000, help="transformer steps in all (the cosine's length)")
    add("--image-batch", type=integer(1), default=256)
    add("--video-batch", type=integer(1), default=32)
    add("--multi-kind-from", type=integer(0), default=3000, help="scenes of 1-3 kinds from this step")
    add("--video-from", type=integer(0), default=6000, help="a video batch beside the images from this step")
    add("--lr", type=real(0, low_open=True), default=3e-4)
    add("--warmup", type=integer(0), default=200)
    add("--ema", type=real(0, 1), default=0.999)
    add("--caption-dropout", type=real(0, 1), default=0.1)
    add("--object-weight", type=real(0), default=1.0, help="flow loss weight of latent positions on objects")
    add("--shift", type=real(0, low_open=True), default=3.0, help="noise-level shift while training")
    add("--compile", action="store_true", help="torch.compile the transformer's blocks")
    # 512: a 95% interval of about +-0.04 on the accuracy (128 gave +-0.08, wider than a piece's gain).
    add("--eval-prompts", type=integer(0), default=512, help="images scored after each piece (0: none)")
    add("--eval-steps", type=integer(1), default=50, help="their sampling steps (CFG 5, shift 5)")
    add("--probe-captions", type=integer(0), default=1000, help="captions of G1's text probe per piece")
    add("--log-every", type=integer(1), default=50)
    add("--checkpoint-every", type=integer(1), default=1000)
    add("--resume-from", type=Path, default=None, help="a portable copy, when the work folder is new")
    add("--device", default=None, help="cuda when available, else cpu")
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import torch

from numina.countworld.trainer2 import STATE_FILE, Trainer
from numina.countworld.world import MIN_SIZE
from numina.run_folder import disk_full_ends_cleanly


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames % 4 != 1 or args.size % 4 or args.size < MIN_SIZE:
        parser.error(f"--frames must be 4k+1 and --size a multiple of 4 of at least {MIN_SIZE}")
    if min(args.steps, args.image_batch, args.video_batch, args.vae_batch) < 1 or args.vae_steps < 0:
        parser.error("--steps and the batch sizes must be at least 1, --vae-steps at least 0")
    if args.probe_captions < 5 * 8:
        parser.error("--probe-captions must be at least 40 (five folds of eight counts)")
    if args.resume_from is not None and not (args.resume_from / STATE_FILE).is_file():
        parser.error(f"--resume-from {args.resume_from} holds no {STATE_FILE}: not a portable copy")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_output(parser, args.work, "--work")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    stage = Trainer(args).run()
    print(
        f"stopped in stage {stage!r}; run the same command again to continue" if stage != "done" else "done"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    with disk_full_ends_cleanly("train_countworld2.py"):
        main()
