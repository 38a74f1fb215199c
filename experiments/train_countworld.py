"""Train the CountWorld model (a small Wan text-to-video pipeline) on the procedural world of shapes.

    python experiments/train_countworld.py --work runs/countworld-train --budget-minutes 9

runs the next piece of training and stops within the budget; run the same command again to go on
until it prints "done". Three stages, each checkpointed and resumable:

1. vae: the AutoencoderKLWan learns to reconstruct clips rendered on the fly (L1 + squared error,
   object pixels weighted up, a small KL); then it is scored on held-out clips (PSNR, and whether the
   exact counter counts the reconstructions right);
2. latents: a data set of `--clips` 17-frame clips is rendered and encoded (parts of 4,096 clips,
   kept in the work folder) with their captions and the latent positions their objects cover; with
   `--refresh-every N` one part is replaced by new clips every N transformer steps, so the model sees
   more of the world than one fixed set (which part holds which clips follows from the step alone);
   per-channel statistics go into the VAE config;
3. transformer: flow matching with caption dropout (for classifier-free guidance), object positions
   weighted up in the loss, AdamW, warm-up and cosine learning rate, gradient clipping, bf16 autocast
   on GPU, an EMA of the weights.

Every checkpoint also writes `<work>/portable`: the state, the loss log and the weights (VAE,
transformer, EMA) as diffusers folders in files under 15 MB, without optimiser moments. A fresh
machine resumes from it with `--resume-from <portable copy>` (moments restart, so the learning rate
warms up again; the latent data set is encoded again, the same clips as before); lent GPU machines
keep nothing between calls, so this is how training goes on there (`benchmarks/train_countworld_piece.sh`).

After every transformer piece the EMA pipeline is written to `<work>/pipeline` (float16, files under
15 MB; `--export` copies it elsewhere, e.g. models/countworld). Losses go to `<work>/losses.jsonl`,
`<work>/loss_curves.png` and W&B. Every step draws its clips, noise and noise levels from generators
seeded by (seed, step), so a run split into pieces ends with the same weights as one run. The batch
size alone may change between pieces (the state's `changes` records at which step); every other
data setting of a work folder is fixed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from numina.arguments import (
    BUILT_IN_FRAMES,
    BUILT_IN_SIZE,
    add_wandb_argument,
    check_output,
    integer,
    real,
    resolve_wandb,
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="work folder (checkpoints, data, logs)")
    parser.add_argument(
        "--budget-minutes", type=real(0, low_open=True), default=9.0, help="stop this piece after that long"
    )
    parser.add_argument("--piece-steps", type=integer(1), default=None, help="stop this piece after N steps")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--frames", type=integer(1), default=BUILT_IN_FRAMES)
    parser.add_argument("--size", type=integer(1), default=BUILT_IN_SIZE, help="square video size in pixels")
    parser.add_argument("--vae-steps", type=integer(0), default=1500)
    parser.add_argument("--vae-batch", type=integer(1), default=8)
    parser.add_argument(
        "--vae-frames", type=integer(1), default=17, help="clip length while training the VAE"
    )
    parser.add_argument("--vae-lr", type=real(0, low_open=True), default=1e-3)
    parser.add_argument("--kl-weight", type=real(0), default=1e-6)
    parser.add_argument(
        "--object-weight", type=real(0), default=10.0, help="VAE loss weight of object pixels"
    )
    parser.add_argument("--eval-clips", type=integer(0), default=64)
    parser.add_argument("--clips", type=integer(1), default=24576, help="clips in the latent data set")
    parser.add_argument("--steps", type=integer(0), default=10000, help="transformer optimisation steps")
    parser.add_argument(
        "--refresh-every",
        type=integer(0),
        default=0,
        help="replace one part of the latent set with new clips every N transformer steps (0: never)",
    )
    parser.add_argument("--batch", type=integer(1), default=128)
    parser.add_argument("--lr", type=real(0, low_open=True), default=5e-4)
    parser.add_argument("--warmup", type=integer(0), default=300)
    parser.add_argument("--ema", type=real(0, 1), default=0.999)
    parser.add_argument("--caption-dropout", type=real(0, 1), default=0.1)
    parser.add_argument(
        "--flow-object-weight",
        type=real(0),
        default=5.0,
        help="flow loss weight of latent positions on objects",
    )
    parser.add_argument(
        "--shift", type=real(0, low_open=True), default=3.0, help="noise-level shift while training"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the transformer's blocks (regional compilation)"
    )
    parser.add_argument(
        "--sample-prompts",
        type=integer(0),
        default=32,
        help="benchmark prompts the model draws after each piece",
    )
    parser.add_argument(
        "--sample-steps", type=integer(1), default=20, help="denoising steps of those samples"
    )
    parser.add_argument("--log-every", type=integer(1), default=25)
    parser.add_argument("--checkpoint-every", type=integer(1), default=500)
    parser.add_argument("--export", type=Path, default=None, help="copy the trained pipeline here")
    parser.add_argument(
        "--resume-from", type=Path, default=None, help="a portable checkpoint, when the work folder is new"
    )
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    add_wandb_argument(parser)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import torch

from numina.countworld.trainer import Trainer
from numina.run_folder import disk_full_ends_cleanly


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames % 4 != 1 or args.vae_frames % 4 != 1:
        parser.error("--frames and --vae-frames must be 4k+1 (the VAE's temporal stride is 4)")
    if args.size % 8:
        parser.error("--size must be a multiple of 8 (VAE stride 4 times the 2x2 patch)")
    if args.clips < 1 or args.steps < 1 or min(args.vae_steps, args.sample_prompts, args.refresh_every) < 0:
        parser.error(
            "--clips and --steps must be at least 1; --vae-steps, --sample-prompts, --refresh-every >= 0"
        )
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_output(parser, args.work, "--work")
    resolve_wandb(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    stage = Trainer(args).run()
    if stage == "done":
        print(f"done: the trained pipeline is in {args.work / 'pipeline'}")
    else:
        print(f"stopped in stage {stage!r} at the budget; run the same command again to continue")
    sys.stdout.flush()


if __name__ == "__main__":
    with disk_full_ends_cleanly("train_countworld.py"):
        main()
