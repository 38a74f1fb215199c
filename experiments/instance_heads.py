"""Gate G3: do the model's self-attention heads separate the instances its own videos show?

    python experiments/instance_heads.py --model countworld2 --limit 32 --frames 1 --out runs/instance_heads

For each prompt one generation (the baseline's: same seed, sampler and guidance) keeps every head's
frame-local self-attention map at the reference step (conditional branch) in the chosen blocks; the
exact colour counter labels each target noun's instances in the finished video; and
`analysis.instance_heads` measures, per block, head, latent frame and noun, by how many nats a query
attends to its own instance over another instance of the same kind (G3 asks >= 2 at the reference
block), over the ring around it, and over tokens outside it at the same distance (`edge_nats`: what is
left once locality is taken out). It also records the head NUMINA's score S picks in each frame.
Frames or nouns with fewer than two instances have nothing to separate and are left out.

Outputs in --out: rows.csv (every block, head, frame, noun of every prompt), summary.csv (per block and
head, 95% prompt-bootstrap interval), chosen.csv (S's head per frame and its separation), g3.json and
figures/instance_heads.png. Each prompt's rows are kept in jobs/ as it finishes: a rerun with the same
settings resumes, other settings are refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from numina.arguments import (
    add_model_arguments,
    add_prompt_arguments,
    integer,
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_prompt_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--layers", default="reference", help="'reference', 'all' or more blocks, e.g. 2,7")
    parser.add_argument("--reference-step", type=integer(0), default=None, help="default: 20 of 50")
    parser.add_argument("--out", type=Path, default=Path("runs/instance_heads"))
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from analysis.figures import save_figure
from analysis.instance_heads import (
    instance_separation,
    latent_frame_sources,
    separation_summary,
)
from numina.capture import CaptureSpec, SelfAttentionCapture
from numina.capture.names import SELF_MAPS, SELF_SCORES
from numina.capture.spec import release_reference_layer, self_attention_defaults
from numina.cli import (
    check_output,
    generation_settings,
    index_list,
    load_prompt_set,
    pipeline_from_args,
    resolve_model_arguments,
)
from numina.evaluation import prompt_counter
from numina.evaluation.true_instances import token_instances
from numina.method.schedule import reference_step_of
from numina.models import geometry_of, load_tokenizer, resolve_model
from numina.prompts import parse_prompt
from numina.run_folder import check_resumable, device_type, disk_full_ends_cleanly, write_config, write_json
from numina.sampling import capture_generation
from numina.store import open_store

GATE_NATS = 2.0
# Settings that change a prompt's rows: a resumed --out must have been made with the same ones.
FIXED_SETTINGS = ("model", "frames", "height", "width", "steps", "guidance", "flow_shift", "seed", "layers",
                  "reference_step", "negative_prompt", "dtype", "device", "attention_backend",
                  "prompt_set", "self_attention_defaults")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_model_arguments(parser, args)
    if args.layers not in ("reference", "all"):
        try:
            args.layers = index_list(args.layers)
        except argparse.ArgumentTypeError as error:
            parser.error(f"--layers: {error}")
    if args.reference_step is not None and not 0 <= args.reference_step < args.steps:
        parser.error(f"--reference-step must be in 0..{args.steps - 1}")
    check_output(parser, args.out)
    return args


def prompt_rows(store_path: Path, video: np.ndarray, counter, targets: dict, stride: int) -> list[dict]:
    """The separation of every captured (block, head, latent frame, noun) of one prompt, and each
    frame's S-chosen head at every block."""
    rows = []
    with open_store(store_path) as store:
        maps = store[SELF_MAPS]
        scores = store[SELF_SCORES].sel(branch="cond", term="S")
        step = int(maps.coords["step"][0])
        layers, frames = (list(map(int, maps.coords[dim])) for dim in ("layer", "frame"))
        sources = latent_frame_sources(len(frames))
        labels = {noun: counter.instances(video[sources], noun) for noun in targets}
        for layer in layers:
            block = maps.sel(step=step, branch="cond", layer=layer).values  # (head, frame, query, key)
            chosen = scores.sel(step=step, layer=layer).values.argmax(axis=0)  # (frame,)
            for index, frame in enumerate(frames):
                for noun in targets:
                    tokens = token_instances(labels[noun][index], stride)
                    measured = instance_separation(block[:, index], tokens)
                    if measured is None:
                        continue
                    for head, nats in enumerate(measured["nats"]):
                        rows.append({"layer": layer, "head": head, "frame": frame, "noun": noun,
                                     "nats": float(nats), "ring_nats": float(measured["ring_nats"][head]),
                                     "edge_nats": float(measured["edge_nats"][head]),
                                     "pairs": measured["pairs"],
                                     "floored": measured["floored"],
                                     "chosen_by_s": bool(head == chosen[index])})  # fmt: skip
    return rows


def job_done(path: Path) -> bool:
    """A prompt's rows exist with every measure: a job written before `edge_nats` existed is measured
    again rather than mixed in (its prompts would silently drop out of that measure's means)."""
    return path.exists() and all("edge_nats" in row for row in json.loads(path.read_text()))


def heatmap(summary: pd.DataFrame, reference: int) -> Figure:
    """Mean separation per block and head: own instance over another, over its background ring, and
    over tokens outside it at the same distance (nats), the reference block marked."""
    figure = Figure(figsize=(3.0 + 1.5 * summary["head"].nunique(), 1.0 + 0.35 * summary["layer"].nunique()),
                    constrained_layout=True)  # fmt: skip
    titles = {"nats": "own instance over another (nats)", "ring_nats": "own instance over its ring (nats)",
              "edge_nats": "own instance over outside, equal distance (nats)"}  # fmt: skip
    for axis, (measure, title) in zip(figure.subplots(1, 3), titles.items(), strict=True):
        table = summary.pivot(index="layer", columns="head", values=measure)
        image = axis.imshow(table.values, cmap="viridis", aspect="auto")
        axis.set(xticks=range(table.shape[1]), xticklabels=table.columns, yticks=range(table.shape[0]),
                 yticklabels=[f"{layer}{' (ref)' if layer == reference else ''}" for layer in table.index],
                 xlabel="head", ylabel="block", title=title)  # fmt: skip
        figure.colorbar(image, ax=axis)
    return figure


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    prompts = load_prompt_set(args)
    model = resolve_model(args.model)
    geometry = geometry_of(model, args.frames, args.height, args.width)
    reference = release_reference_layer(geometry)
    layers = {"reference": [reference], "all": list(range(geometry.layers))}.get(args.layers, args.layers)
    layers = sorted({*layers, reference})  # G3 is judged at the reference block, so it is always kept
    step = reference_step_of(args.steps, args.reference_step)
    spec = CaptureSpec(steps=(step,), self_attention=SelfAttentionCapture(layers=tuple(layers), maps=True))
    try:
        spec.validate(geometry, args.steps)
    except ValueError as error:
        raise SystemExit(f"instance_heads.py: error: {error}") from None
    tokenizer = load_tokenizer(model)
    parsed = {item.index: parse_prompt(item.prompt, tokenizer, targets=item.targets) for item in prompts}
    counter_of = prompt_counter("exact")
    stride = args.height // geometry.height
    config = {key: getattr(args, key) for key in FIXED_SETTINGS if hasattr(args, key)}
    command = ["experiments/instance_heads.py", *(sys.argv[1:] if argv is None else argv)]
    config |= {"layers": layers, "reference_step": step, "prompt_set": args.prompt_set, "command": command,
               "device": device_type(args.device),
               "self_attention_defaults": self_attention_defaults(args.device)}  # fmt: skip
    out = args.out
    check_resumable(out, config, FIXED_SETTINGS, "instance_heads.py")
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    write_config(out, config)
    pipeline, settings = None, generation_settings(args)
    for item in tqdm(prompts, desc="prompts", unit="prompt"):
        job = out / "jobs" / f"p{item.index:03d}.json"
        if job_done(job):
            continue
        pipeline = pipeline or pipeline_from_args(args, model)
        tokens = parsed[item.index]
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            store = Path(scratch) / "attention.h5"
            video = capture_generation(pipeline, tokens, spec, settings, store)
            rows = prompt_rows(
                store, video, counter_of(tokens.prompt, tokens.targets), tokens.targets, stride
            )
        write_json(job, [{"prompt_id": item.index, **row} for row in rows])
    rows = pd.DataFrame(
        [
            row
            for item in prompts
            for row in json.loads((out / "jobs" / f"p{item.index:03d}.json").read_text())
        ]
    )
    if rows.empty:
        raise SystemExit(
            "instance_heads.py: no frame of any video showed two instances of a kind; nothing to measure"
        )
    rows.to_csv(out / "rows.csv", index=False)
    summary = separation_summary(rows)
    summary.to_csv(out / "summary.csv", index=False)
    chosen = rows[rows["chosen_by_s"]]
    chosen.to_csv(out / "chosen.csv", index=False)
    at_reference = summary[summary["layer"] == reference].sort_values("nats", ascending=False)
    best = at_reference.iloc[0]
    by_s = separation_summary(chosen[chosen["layer"] == reference], by=("layer",)).iloc[0]
    result = {
        "reference_layer": reference,
        "reference_step": step,
        "prompts": int(rows["prompt_id"].nunique()),
        "best_head": int(best["head"]),
        "best_head_nats": float(best["nats"]),
        "best_head_interval": [float(best["nats_low"]), float(best["nats_high"])],
        "best_head_ring_nats": float(best["ring_nats"]),
        "s_chosen_nats": float(by_s["nats"]),
        "s_chosen_interval": [float(by_s["nats_low"]), float(by_s["nats_high"])],
        "s_chosen_ring_nats": float(by_s["ring_nats"]),
        "best_head_edge_nats": float(best["edge_nats"]),
        "s_chosen_edge_nats": float(by_s["edge_nats"]),
        "best_edge_head": int(at_reference.sort_values("edge_nats", ascending=False).iloc[0]["head"]),
        "best_edge_nats": float(at_reference["edge_nats"].max()),
        "floored_share": float(rows["floored"].mean()),
        "gate_nats": GATE_NATS,
        "passed": bool(best["nats"] >= GATE_NATS),
    }
    write_json(out / "g3.json", result)
    (out / "figures").mkdir(exist_ok=True)
    save_figure(heatmap(summary, reference), out / "figures" / "instance_heads")
    print(summary.round(3).to_string(index=False))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    with disk_full_ends_cleanly("instance_heads.py"):
        main()
