"""Sweeps over NUMINA's choices, scored by how well the layout alone counts (no regeneration).

    python experiments/ablate_heads.py --limit 5 --grid '{"head_rule": ["per_frame", "per_video"],
        "score_variant": ["official", "normalised"], "cross_heads": ["mean", "concentration", "peak"]}'
    python experiments/ablate_heads.py --limit 5 --heads          # every (block, head) as a fixed choice
    python experiments/ablate_heads.py --limit 5 --heads --layout '{"extraction": "segments"}'
    python experiments/ablate_heads.py --grid-file sweep.yaml

Each prompt is generated once with a capture wide enough for every setting of the grid (the
self-attention reductions and the nouns' and numerals' cross-attention at every block, at every
reference step the grid names), and that walk-through's video is counted (`--counter`). Then every
setting (any `NuminaOptions` fields: head_rule, fixed_head, score_variant, score_weights, cross_heads,
concentration_measure, reference_layer, reference_step, all_occurrences, ...) builds the layout from
the stored data and is scored twice: its counts against the targets (accuracy) and against what the
walk-through's own video shows (fidelity: does the layout see the instances the model drew? Accuracy
alone cannot tell a layout that miscounts from a model that drew the wrong number). Nothing is
generated again. The estimator (the preset's) and the extraction (`--layout`: `LayoutOptions` fields
over the preset's) are one per sweep, since the capture depends on them; grid keys `layout.<field>`
vary the layout's other settings.

Resumable: one JSON per setting in settings/, and a setting whose file exists is skipped; a folder
made with other prompts, model, preset, estimator, layout or sampler settings is refused, and a stored
walk-through that lacks a reference step a new setting needs, or its drawn counts
(`stores/p<id>.drawn.json`), is captured again. Outputs: `summary.csv` (every setting's options,
layout accuracy and fidelity with 95% prompt-bootstrap intervals, the fidelity's mean absolute and
signed errors, mean S of the chosen heads), `figures/heads_heatmap.{png,pdf}` and
`figures/heads_fidelity.{png,pdf}` (accuracy and fidelity per block and head, with `--heads`),
`fidelity_chance.json` (the best fidelity of a layout that always counts one number: the chance
level), `sweep.yaml` (the grid as a `wandb sweep` configuration, for users with a W&B server), and
W&B runs: one group per sweep, one run per setting, and a summary run (a rerun with nothing new opens
none). Both scores count frames as the evaluation does; `--end-to-end` also generates every prompt
with NUMINA under each setting and counts the videos, which is what settings that act only in the
guided run (the delta schedule: `follow_steps`) need.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from numina.arguments import (
    PRESET_NAMES,
    add_counter_arguments,
    add_model_arguments,
    add_prompt_arguments,
    json_value,
)

SEGMENTS = """'{"extraction": "segments"}'"""


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    add_prompt_arguments(parser)
    parser.add_argument("--grid", type=json_value, default=None, help="JSON: option -> list of values")
    parser.add_argument("--grid-file", type=Path, default=None, help="YAML or JSON file with the grid")
    parser.add_argument("--heads", action="store_true", help="add every (block, head) as a fixed choice")
    parser.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default="official",
        help="options not in the grid come from this preset",
    )
    parser.add_argument(
        "--layout",
        type=json_value,
        default=None,
        help=f"JSON: the layout options of every setting over the preset's, e.g. {SEGMENTS}",
    )
    parser.add_argument(
        "--end-to-end", action="store_true", help="also generate every setting's videos and count them"
    )
    add_counter_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (runs/ablate-<model>)")
    add_model_arguments(parser)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from analysis.figures import save_figure, separability_heatmap
from analysis.statistics import captured_steps
from analysis.sweeps import (
    LAYOUT_PREFIX,
    constant_fidelity,
    evaluate_settings,
    options_of,
    setting_id,
    summarise,
)
from numina.capture import CaptureSpec, CrossAttentionCapture, SelfAttentionCapture
from numina.capture.spec import self_attention_defaults
from numina.cli import (
    check_output,
    generation_settings,
    load_prompt_set,
    pipeline_from_args,
    resolve_counter_arguments,
    resolve_model_arguments,
)
from numina.evaluation import count_rows, prompt_counter
from numina.method.generation import generate_video
from numina.method.layout import LayoutOptions
from numina.method.phase1 import captured_positions, reference_of
from numina.method.presets import NuminaOptions, preset
from numina.models import Geometry, geometry_of, load_tokenizer, resolve_model
from numina.prompts import PromptTokens, parse_prompt
from numina.run_folder import (
    check_resumable,
    device_type,
    disk_full_ends_cleanly,
    slug,
    write_config,
    write_json,
)
from numina.sampling import GenerationSettings, capture_generation
from numina.store import open_store
from numina.version import code_version
from numina.wandb_mirror import Tracker, logged_already, record_logged

log = logging.getLogger("ablate_heads")
# The walk-throughs run the sweep's own sampler settings: a shorter or unguided walk-through is
# compared by benchmarks/walkthrough_options.py, not swept here.
WALKTHROUGH_SCHEDULE = ("walkthrough_steps", "walkthrough_guidance")
# The estimator is the capture's (one per sweep, from --preset); the layout's options are one per
# sweep too (--layout), since the extraction decides how many components the capture keeps.
OPTION_NAMES = {f.name for f in fields(NuminaOptions)} - {"layout", "estimator", *WALKTHROUGH_SCHEDULE}
LAYOUT_NAMES = [f.name for f in fields(LayoutOptions)]
# Grid keys `layout.<field>` vary the layout's settings over the sweep's; the extraction itself is
# --layout's, since it decides how many components the walk-throughs capture.
GRID_LAYOUT_NAMES = {LAYOUT_PREFIX + name for name in LAYOUT_NAMES} - {LAYOUT_PREFIX + "extraction"}
# What every setting's result in a folder depends on besides the setting itself (the counter: the
# walk-throughs' drawn counts are kept and reused).
FIXED_SETTINGS = (
    "model",
    "prompt_set",
    "prompts",
    "preset",
    "options",
    "frames",
    "height",
    "width",
    "steps",
    "guidance",
    "flow_shift",
    "negative_prompt",
    "seed",
    "counter",
    "counter_model",
    "palette",
    "dtype",
    "device",
    "attention_backend",
    "self_attention_defaults",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_model_arguments(parser, args)
    grid = dict(args.grid or {})
    if args.grid_file is not None:
        grid.update(yaml.safe_load(args.grid_file.read_text()) or {})
    if "estimator" in grid:
        parser.error(
            "the estimator is set by the walk-throughs' capture, one per sweep: compare estimators with "
            "one sweep per --preset (official: release, improved: converged) into different --out folders"
        )
    if set(WALKTHROUGH_SCHEDULE) & set(grid):
        parser.error(
            "the walk-throughs run the sweep's --steps and --guidance: compare shorter or unguided "
            "walk-throughs with benchmarks/walkthrough_options.py"
        )
    if LAYOUT_PREFIX + "extraction" in grid:
        parser.error(
            "the extraction decides how many components the walk-throughs capture, one per sweep: set it "
            """with --layout '{"extraction": "segments"}', one sweep per extraction"""
        )
    unknown = sorted(set(grid) - OPTION_NAMES - GRID_LAYOUT_NAMES)
    if unknown:
        parser.error(
            f"grid options {unknown} are not NUMINA options; choose from {sorted(OPTION_NAMES)} "
            f"or layout settings {sorted(GRID_LAYOUT_NAMES)}"
        )
    grid = {name: values if isinstance(values, list) else [values] for name, values in grid.items()}
    if any(not values for values in grid.values()):
        parser.error("every grid entry needs at least one value")
    if not grid and not args.heads:
        parser.error("nothing to sweep: give --grid, --grid-file and/or --heads")
    args.grid_values = grid
    args.base = base_options(parser, args.preset, args.layout)
    resolve_counter_arguments(args)
    args.out = args.out or Path("runs") / f"ablate-{slug(args.model)}"
    check_output(parser, args.out)
    return args


def base_options(parser: argparse.ArgumentParser, name: str, layout: Any) -> NuminaOptions:
    """The preset's options with the sweep's layout (`--layout`, a JSON object of `LayoutOptions`
    fields over the preset's), checked by the options' own rules before any work."""
    options = preset(name)
    if layout is None:
        return options
    if not isinstance(layout, dict):
        parser.error(f"--layout must be a JSON object of layout options, e.g. {SEGMENTS}; got {layout!r}")
    unknown = sorted(set(layout) - set(LAYOUT_NAMES))
    if unknown:
        parser.error(f"--layout: {unknown} are not layout options; choose from {LAYOUT_NAMES}")
    try:
        return options_of(options, {LAYOUT_PREFIX + name: value for name, value in layout.items()})
    except ValueError as error:
        parser.error(f"--layout: {error}")


def settings_of(args: argparse.Namespace, geometry: Geometry) -> list[dict]:
    """Every setting of the grid (cartesian product), then the fixed (block, head) choices."""
    grid = args.grid_values
    settings = (
        [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())] if grid else []
    )
    if args.heads:
        settings += [
            {"head_rule": "fixed", "reference_layer": layer, "fixed_head": head}
            for layer in range(geometry.layers)
            for head in range(geometry.heads)
        ]
    return settings


def wide_spec(
    geometry: Geometry, tokens: PromptTokens, steps: list[int], options: NuminaOptions, seed: int
) -> CaptureSpec:
    """Capture for every setting: self-attention reductions (the components the sweep's layout reads,
    by the preset's estimator, its head scores seeded by the run's `seed`, as `method_spec` does) and
    cross maps at every block."""
    every = tuple(range(geometry.layers))
    return CaptureSpec(
        steps=tuple(steps),
        self_attention=SelfAttentionCapture(
            layers=every,
            components=options.layout.components,
            estimator=options.estimator,
            score_seed=seed,
        ),
        cross_attention=CrossAttentionCapture(
            layers=every,
            tokens=captured_positions(tokens, all_occurrences=True),
            prompt_length=tokens.n_tokens,
            stats=False,
        ),
    )


def drawn_path(store: Path) -> Path:
    """Where a walk-through's drawn counts are kept: beside its store."""
    return store.with_suffix(".drawn.json")


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        prompts = load_prompt_set(args)
        model = resolve_model(args.model)
        geometry = geometry_of(model, args.frames, args.height, args.width)
        tokenizer = load_tokenizer(model)
        parsed = {item.index: parse_prompt(item.prompt, tokenizer, targets=item.targets) for item in prompts}
        base = args.base
        settings = settings_of(args, geometry)
        for setting in settings:
            options_of(base, setting)
        # Loaded before any work: every walk-through's video is counted for the layout's fidelity.
        counter_of = prompt_counter(args.counter, args.counter_model, args.device, args.palette)
    except (ValueError, OSError, TypeError) as error:
        raise SystemExit(
            f"ablate_heads.py: error: {error} (the sweep counts each walk-through's video with "
            "--counter; give --counter exact for worlds of coloured shapes, or --counter-model)"
        ) from None
    # Every reference step a setting reads, the release's included when a setting leaves it unset.
    steps = sorted({reference_of(options_of(base, s), geometry, args.steps)[0] for s in settings})
    out = args.out
    config = {
        "model": args.model,
        "prompt_set": args.prompt_set,
        "grid": args.grid_values,
        "heads": args.heads,
        "preset": args.preset,
        # every option of the preset as this code defines it (official's estimator changed on
        # 2026-12-06): the walk-throughs' capture and every setting's layout start from them
        "options": base.to_dict(),
        "prompts": [p.index for p in prompts],
        "frames": args.frames,
        "height": args.height,
        "width": args.width,
        "steps": args.steps,
        "guidance": args.guidance,
        "flow_shift": args.flow_shift,
        "negative_prompt": args.negative_prompt,
        "seed": args.seed,
        "counter": args.counter,
        "counter_model": args.counter_model,
        "palette": args.palette,
        "dtype": args.dtype,
        "device": device_type(args.device),
        "attention_backend": args.attention_backend,
        # what the walk-throughs' capture computes with on this device
        "self_attention_defaults": self_attention_defaults(args.device),
        "command": ["experiments/ablate_heads.py", *(sys.argv[1:] if argv is None else argv)],
        "code_version": code_version(),
    }
    check_resumable(out, config, FIXED_SETTINGS, "ablate_heads.py")
    for folder in ("stores", "settings", "figures"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_config(out, config)
    settings_by_id = {setting_id(s): s for s in settings}
    write_json(out / "settings.json", settings_by_id)
    (out / "sweep.yaml").write_text(yaml.safe_dump(_wandb_sweep(args, config)))

    stores = {item.index: out / "stores" / f"p{item.index:03d}.h5" for item in prompts}
    loaded = []

    def pipeline() -> Any:
        """The pipeline, loaded once, when something has to be generated."""
        if not loaded:
            loaded.append(pipeline_from_args(args, model))
        return loaded[0]

    def count_video(tokens: PromptTokens, video: np.ndarray) -> dict[str, list[int]]:
        """Per target noun, the counter's count on every frame of a prompt's video."""
        counter = counter_of(tokens.prompt, tokens.targets)
        return {noun: counter.count(video, noun).tolist() for noun in tokens.targets}

    generation = generation_settings(args)
    for item in tqdm(prompts, desc="walk-throughs", unit="prompt"):
        store, tokens = stores[item.index], parsed[item.index]
        if store.exists() and drawn_path(store).exists() and set(steps) <= set(_stored_steps(store)):
            continue
        spec = wide_spec(geometry, tokens, steps, base, generation.seed)
        video = capture_generation(
            pipeline(), tokens, spec, generation, store, {"prompt_id": item.index}, overwrite=True
        )
        write_json(drawn_path(store), count_video(tokens, video))

    def path_of(setting: dict) -> Path:
        return out / "settings" / f"{setting_id(setting)}.json"

    # Layouts: settings with one reference step and block are scored together (one read per prompt),
    # and each group's results are written before the next group starts. A result written before
    # fidelity was scored is scored again.
    pending: dict[tuple[int, int], list[dict]] = {}
    for setting in settings:
        if not path_of(setting).exists() or "fidelity_rows" not in json.loads(path_of(setting).read_text()):
            pending.setdefault(reference_of(options_of(base, setting), geometry, args.steps), []).append(
                setting
            )
    new = set()
    drawn = {prompt_id: json.loads(drawn_path(path).read_text()) for prompt_id, path in stores.items()}
    for group_settings in tqdm(pending.values(), desc="settings (by reference block)", unit="group"):
        for result in evaluate_settings(group_settings, base, stores, drawn, geometry, args.steps):
            write_json(path_of(result["setting"]), result)
            new.add(setting_id(result["setting"]))

    results = []
    group = f"ablate-{out.name}"
    end_to_end = EndToEnd(pipeline, count_video, parsed, generation, args.seed) if args.end_to_end else None
    for setting in settings:
        path = path_of(setting)
        result = json.loads(path.read_text())
        if end_to_end is not None and "end_to_end_rows" not in result:
            result["end_to_end_rows"] = end_to_end.rows(options_of(base, setting))
            write_json(path, result)
            new.add(setting_id(setting))
        results.append(result)

    summary = summarise(results)
    summary.to_csv(out / "summary.csv", index=False)
    chance = constant_fidelity(results[0]["fidelity_rows"])
    write_json(out / "fidelity_chance.json", chance)
    log.info(
        "a layout that always counts %d has fidelity %.3f [%.3f, %.3f]: the chance level",
        chance["count"],
        chance["fidelity"],
        chance["ci_low"],
        chance["ci_high"],
    )
    for row in summary[summary["setting"].isin(new)].to_dict("records"):
        with Tracker(
            out / "wandb-settings",
            name=row["setting"],
            group=group,
            config=settings_by_id[row["setting"]],
            mode=args.wandb,
            job_type="ablate-setting",
        ) as tracker:
            accuracies = {
                "layout_accuracy": row["accuracy"],
                "layout_fidelity": row["fidelity"],
                "mean_head_score": row["mean_head_score"],
            }
            if "end_to_end_accuracy" in row and pd.notna(row["end_to_end_accuracy"]):
                accuracies["end_to_end_accuracy"] = row["end_to_end_accuracy"]
            tracker.log_scalars(accuracies)
    figures = {}
    fixed = summary[summary["head_rule"] == "fixed"] if "head_rule" in summary else summary.iloc[:0]
    scores = (
        ("heads_heatmap", "accuracy", "Layout count accuracy (against the targets)"),
        ("heads_fidelity", "fidelity", "Layout fidelity (against the counts drawn)"),
    )
    for name, column, title in scores if not fixed.empty else ():
        table = fixed.rename(columns={"reference_layer": "layer", "fixed_head": "head"})
        table = table.astype({"layer": int, "head": int}).assign(variant=column)
        figure = separability_heatmap(table, term=column)
        figure.axes[0].set_title(f"{title} with a fixed self-attention head (block x head)")
        figures[name] = save_figure(figure, out / "figures" / name)[0]
    logged = summary.to_csv() + json.dumps(chance, sort_keys=True)
    if logged_already(out, logged, args.wandb):
        log.info("the summary is the one the last W&B summary run logged: no new W&B run")
    else:
        with Tracker(
            out,
            name=f"{out.name}-summary",
            group=group,
            config=config,
            mode=args.wandb,
            job_type="ablate-summary",
        ) as tracker:
            tracker.log_table("summary", summary)
            tracker.log_scalars(
                {"fidelity_chance": chance["fidelity"], "fidelity_chance_count": chance["count"]}
            )
            for name, image in figures.items():
                tracker.log_image(f"figures/{name}", image)
        record_logged(out, logged, args.wandb)
    for column in ("accuracy", "fidelity"):
        best = summary.sort_values(column, ascending=False).head(3)
        log.info("best settings by layout %s:\n%s", column, best.to_string(index=False))
    return out


def _stored_steps(path: Path) -> list[int]:
    """The reference steps a stored walk-through holds (none when the file cannot be read)."""
    try:
        with open_store(path) as store:
            return captured_steps(store)
    except (OSError, ValueError):
        return []


class EndToEnd:
    """Generates every prompt with NUMINA under a setting and counts the videos (--end-to-end)."""

    def __init__(
        self,
        pipeline: Callable[[], Any],
        count_video: Callable[[PromptTokens, np.ndarray], dict[str, list[int]]],
        parsed: dict,
        generation: GenerationSettings,
        seed: int,
    ) -> None:
        self.pipeline, self.count_video, self.parsed = pipeline, count_video, parsed
        self.generation, self.seed = generation, seed

    def rows(self, options: NuminaOptions) -> list[dict]:
        rows = []
        for prompt_id, tokens in self.parsed.items():
            video, _ = generate_video(self.pipeline(), tokens, self.generation, options)
            counts = self.count_video(tokens, video)
            rows += count_rows(prompt_id, self.seed, "end_to_end", tokens.targets, counts)
        return rows


def _wandb_sweep(args: argparse.Namespace, config: dict) -> dict:
    """The grid as a `wandb sweep` configuration running this script once per setting."""
    parameters = {name: {"values": values} for name, values in args.grid_values.items()}
    return {
        "program": "experiments/ablate_heads.py",
        "method": "grid",
        "metric": {"name": "layout_accuracy", "goal": "maximize"},
        "parameters": parameters,
        "command": ["${env}", "python", "${program}", "--grid-file", "${args_json_file}"],
        "description": f"NUMINA head/setting sweep over {len(config['prompts'])} CountBench prompts",
    }


if __name__ == "__main__":
    with disk_full_ends_cleanly("ablate_heads.py"):
        main()
