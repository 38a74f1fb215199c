"""Measure CountWorld 2's first gates on a pipeline folder: G0 (the VAE) and G1 (the text encoder).

    python experiments/countworld2_gates.py --model models/countworld2 --out runs/countworld2_gates.json

G0: held-out clips of CountWorld 2's world are encoded and decoded, and the exact colour counter must
agree with the truth on >= 98% of (clip, frame, noun) pairs. G1: a linear probe must recover the first
kind's count from its noun's output state in >= 80% of captions of 1-3 kinds (`numina.countworld.gates`).
G2 (the baseline counts partially) is `experiments/countbench.py --model ... --methods baseline`; G3
(instance heads) is `experiments/ablate_heads.py --heads`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from numina.arguments import (
    integer,
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="countworld2", help="'countworld2' or a pipeline folder")
    parser.add_argument("--gates", default="g0,g1", help="comma-separated: g0, g1")
    parser.add_argument("--clips", type=integer(10), default=256, help="held-out clips of G0")
    parser.add_argument("--frames", type=integer(1), default=17, help="frames of those clips (4k+1)")
    parser.add_argument("--captions", type=integer(10), default=2000, help="captions of G1's probe")
    parser.add_argument("--seed", type=integer(0), default=1234)
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
import torch

from numina.cli import check_output
from numina.countworld import world2
from numina.countworld.gates import count_probe
from numina.countworld.joint_training import vae_count_agreement
from numina.models import load_pipeline
from numina.models.countworld2 import VIDEO
from numina.run_folder import disk_full_ends_cleanly, write_json

THRESHOLDS = {"g0": ("count_agreement", 0.98), "g1": ("noun_probe", 0.8)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.gates = [gate.strip() for gate in args.gates.split(",")]
    unknown = sorted(set(args.gates) - set(THRESHOLDS))
    if unknown:
        parser.error(f"unknown gates {unknown}; choose from {sorted(THRESHOLDS)}")
    if args.frames % 4 != 1:
        parser.error(f"--frames must be 4k+1 (5, 9, 13, 17, ...), got {args.frames}")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.out is not None:
        check_output(parser, args.out.parent)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pipeline = load_pipeline(args.model, torch.float32, args.device)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    results: dict = {"model": args.model, "seed": args.seed}
    if "g0" in args.gates:
        rng = np.random.default_rng(args.seed)
        scenes = world2.sample_scenes(rng, args.clips)
        seed = int(rng.integers(2**31))
        size = VIDEO["height"]
        results["g0"] = vae_count_agreement(pipeline.vae, scenes, seed, args.frames, size, autocast)
        results["g0"] |= {"clips": args.clips, "frames": args.frames}
    if "g1" in args.gates:
        results["g1"] = count_probe(pipeline, args.captions, args.seed)
    for gate in args.gates:
        key, threshold = THRESHOLDS[gate]
        results[gate]["passed"] = results[gate][key] >= threshold
        print(f"{gate}: {key} {results[gate][key]:.4f} (gate >= {threshold}): "
              f"{'passed' if results[gate]['passed'] else 'failed'}")  # fmt: skip
    if args.out is not None:
        write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    with disk_full_ends_cleanly("countworld2_gates.py"):
        main()
