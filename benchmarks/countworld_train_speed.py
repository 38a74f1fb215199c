"""How fast CountWorld's transformer trains at each batch size, eager and compiled, side by side.

The 5.2M-parameter transformer is far too small to keep an H200 busy at batch 128, so a larger batch
may cost little more time per step, and regional compilation may remove per-kernel overhead. This
times the training step of `experiments/train_countworld.py` (bf16 autocast, object-weighted flow
loss, gradient clipping, AdamW, EMA) on random latents and captions of CountWorld's shape, for every
batch size in eager mode and with `compile_repeated_blocks`, and prints steps/s, clips/s and each
configuration's clips/s relative to eager at the first batch size, all in one process.

    python benchmarks/countworld_train_speed.py --batches 128 256 512 \
        --out benchmarks/results/countworld_train_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from numina.arguments import integer


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without torch, so that --help and argument errors answer at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=integer(1), nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=integer(1), default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=integer(0), default=5, help="untimed steps first (compiles here)")
    parser.add_argument("--eager-only", action="store_true", help="skip the compiled runs")
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import torch
from diffusers import WanTransformer3DModel

from numina.countworld.training import flow_training_step, shifted_sigmas
from numina.models.countworld import TRANSFORMER, VAE, VIDEO

TEXT_LENGTH = 512  # the pipeline zero-pads every caption to 512 positions


def latent_shape(batch: int) -> tuple[int, ...]:
    frames = (VIDEO["frames"] - 1) // VAE["scale_factor_temporal"] + 1
    side = VIDEO["height"] // VAE["scale_factor_spatial"]
    return (batch, VAE["z_dim"], frames, side, side)


def time_training(batch: int, compiled: bool, steps: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds per training step (CUDA events on GPU) after `warmup` untimed steps."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TRANSFORMER).to(device).train()
    average = copy.deepcopy(model).eval().requires_grad_(False)
    if compiled:
        model.compile_repeated_blocks(fullgraph=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    clean = torch.randn(latent_shape(batch), device=device)
    text = torch.zeros(batch, TEXT_LENGTH, TRANSFORMER["text_dim"], device=device)
    text[:, :12] = torch.randn(batch, 12, TRANSFORMER["text_dim"], device=device)
    objects = torch.rand(batch, *clean.shape[2:], device=device) < 0.1
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        data = {"clean": clean, "noise": torch.randn_like(clean), "text": text, "objects": objects}
        data["sigmas"] = shifted_sigmas(batch, 3.0, device=device)
        flow_training_step(model, average, optimiser, data, 5.0, 0.999, autocast)

    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - began)
    median = statistics.median(seconds)
    return {"batch": batch, "compiled": compiled, "seconds_per_step": median, "clips_per_s": batch / median}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    modes = [False] if args.eager_only else [False, True]
    rows = [time_training(b, c, args.steps, args.warmup, args.device) for c in modes for b in args.batches]
    reference = rows[0]["clips_per_s"]
    print(f"{'batch':>6} {'mode':>9} {'s/step':>8} {'steps/s':>8} {'clips/s':>9} {'x clips/s':>9}")
    for row in rows:
        row["relative_clips_per_s"] = row["clips_per_s"] / reference
        mode = "compiled" if row["compiled"] else "eager"
        print(
            f"{row['batch']:>6} {mode:>9} {row['seconds_per_step']:>8.4f} "
            f"{1 / row['seconds_per_step']:>8.2f} {row['clips_per_s']:>9.0f} "
            f"{row['relative_clips_per_s']:>9.2f}"
        )
    if args.out is not None:
        device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
        args.out.write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
