"""The diagnosis experiment at a real model's shape on a GPU (random weights): time, store size, resume.

    python benchmarks/diagnose_gpu.py --variant wan2.1-1.3b --limit 6 --steps 10 --countbench DIR

Builds a full-size random-weight pipeline folder (`build_tiny_pipeline(size="full")`), runs
`experiments/diagnose_numerals.py` on the first `limit` CountBench prompts at 81 frames, 832x480, then
runs it again with two more prompts to show that finished prompts are skipped, and writes the timings,
store sizes and peak GPU memory as JSON, with the prompts' status table and the diagnosis figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

from numina.arguments import integer

REPO = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without torch, so that --help and argument errors answer at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="wan2.1-1.3b")
    parser.add_argument("--limit", type=integer(1), default=6)
    parser.add_argument("--steps", type=integer(1), default=10)
    parser.add_argument("--countbench", default=None)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "numina-diagnose-gpu")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import pandas as pd
import torch

from numina.models.tiny import build_tiny_pipeline


def _diagnose():
    spec = importlib.util.spec_from_file_location(
        "diagnose_numerals", REPO / "experiments" / "diagnose_numerals.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    args = build_parser().parse_args()
    started = time.perf_counter()
    folder = build_tiny_pipeline(
        args.work / f"{args.variant}-full", args.variant, size="full", transformer_dtype=torch.bfloat16
    )
    built = time.perf_counter() - started
    out = args.work / "run"
    shutil.rmtree(out, ignore_errors=True)
    common = ["--model", str(folder), "--steps", str(args.steps), "--out", str(out), "--wandb", "disabled"]
    common += ["--countbench", args.countbench] if args.countbench else []
    diagnose = _diagnose()
    timings = {}
    for name, limit in (("first", args.limit), ("resumed", args.limit + 2)):
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        diagnose.main([*common, "--limit", str(limit)])
        timings[name] = {
            "prompts": limit,
            "seconds": time.perf_counter() - start,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
            "status": pd.read_csv(out / "prompts.csv")["status"].value_counts().to_dict(),
        }
    stores = sorted((out / "stores").glob("*.h5"))
    config = json.loads((out / "config.json").read_text())
    result = {
        "variant": args.variant,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "geometry": config["geometry"],
        "steps": args.steps,
        "capture_steps": config["capture_steps"],
        "layers_captured": len(config["layers"]),
        "pipeline_build_seconds": built,
        "runs": timings,
        "store_mib_per_prompt": sum(p.stat().st_size for p in stores) / len(stores) / 2**20,
        "token_statistics_rows": len(pd.read_csv(out / "token_statistics.csv")),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"diagnose_{args.variant}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    shutil.copy(out / "prompts.csv", args.results / f"diagnose_{args.variant}_prompts.csv")
    shutil.copy(out / "figures" / "diagnosis.png", args.results / f"diagnose_{args.variant}_diagnosis.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
