"""Generate one video with NUMINA (or only capture its attention) on a Wan pipeline: the main job.

    python experiments/generate.py --prompt "three cats on a sofa"                 # NUMINA, official
    python experiments/generate.py --prompt "three cats on a sofa" --capture-only  # walk-through only

writes a run folder (runs/<time>-<prompt>/): config.json, attention.h5 (the HDF5 attention store; with
NUMINA also the layout before and after correction, counts, head choice and edits), video.mp4,
figures/ (the nouns' and numerals' cross-attention; with NUMINA the layouts over the frames) and an
offline W&B run under wandb/. `--baseline` also generates the plain video with the same seed and
writes baseline.mp4 and side_by_side.mp4. Without --model it runs the built-in CountWorld model on
the CPU (trained on a world of coloured shapes; it does not yet count, so the layouts show the method
at work, not a fixed count); `--model tiny` runs random weights. --model takes a hub id or a local
diffusers folder (Wan2.1-T2V-1.3B/14B, Wan2.2-TI2V-5B).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from numina.arguments import (
    CACHE_METHODS,
    CROSS_HEADS,
    ESTIMATORS,
    HEAD_RULES,
    PRESET_NAMES,
    STATS,
    add_model_arguments,
    integer,
    json_value,
    real,
)


def _targets(text: str) -> object:
    """--counts: JSON that names at least one noun (the counts themselves are checked later)."""
    targets = json_value(text)
    if targets == {}:
        raise argparse.ArgumentTypeError("""'{}' names no noun: give each noun's count, e.g. '{"cat": 3}'""")
    return targets


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--counts",
        type=_targets,
        default=None,
        help="targets as JSON, e.g. '{\"cat\": 3}'; parsed from the prompt when absent",
    )
    parser.add_argument(
        "--capture-only",
        action="store_true",
        help="only the walk-through generation with attention capture (no correction, no second run)",
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, default="official", help="NUMINA preset")
    parser.add_argument("--head-rule", choices=HEAD_RULES, default=None, help="self-attention head choice")
    parser.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=None,
        help="low-rank components of the self-attention maps (README: 'Estimators')",
    )
    parser.add_argument(
        "--score-variant", choices=["official", "normalised"], default=None, help="S2 variant"
    )
    parser.add_argument("--cross-heads", choices=CROSS_HEADS, default=None, help="noun map: heads used")
    parser.add_argument(
        "--concentration-measure", choices=STATS, default=None, help="for --cross-heads concentration"
    )
    for flag, meaning in (
        ("--all-occurrences", "modulate every occurrence of a repeated noun"),
        ("--follow-steps", "centre delta(t) at 25 * steps / 50 instead of 25"),
        ("--early-accept", "right count after the walk-through: finish its latent instead of a second run"),
        ("--track-instances", "one label per object over time; removals take whole tracks"),
        ("--cache-walkthrough", "EasyCache's step caching in the walk-through (from step 10)"),
        ("--cache-guided", "the same in the guided run once modulation has ended"),
    ):
        parser.add_argument(flag, action="store_const", const=True, default=None, help=meaning)
    parser.add_argument(
        "--cache-method",
        choices=CACHE_METHODS,
        default=None,
        help="step cache of --cache-walkthrough/--cache-guided: this project's EasyCache hook (easycache) "
        "or diffusers' FirstBlockCache (first_block)",
    )
    parser.add_argument("--baseline", action="store_true", help="also generate the plain video, side by side")
    parser.add_argument(
        "--reference-step",
        type=integer(0),
        default=None,
        help="captured step (20 at 50 steps, same fraction otherwise)",
    )
    parser.add_argument(
        "--walkthrough-steps",
        type=integer(1),
        default=None,
        help="the walk-through's own step count, read at the reference noise level (e.g. 10 of 50)",
    )
    parser.add_argument(
        "--walkthrough-guidance",
        type=real(0),
        default=None,
        help="the walk-through's guidance scale (1: no CFG, half the calls)",
    )
    parser.add_argument(
        "--reference-layer",
        type=integer(0),
        default=None,
        help="block whose self-attention is reduced (15; the middle block of small models)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs"), help="folder that receives the run folder")
    add_model_arguments(parser)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np

from analysis.figures import layout_overlay_figure, save_figure, token_maps_figure
from numina.cli import (
    check_output,
    generation_settings,
    pipeline_from_args,
    resolve_model_arguments,
)
from numina.countworld.world import vocabulary, words_outside_vocabulary
from numina.method.correct import check_correction
from numina.method.generation import NuminaResult, run_numina
from numina.method.phase1 import method_spec
from numina.method.presets import preset
from numina.models import (
    Geometry,
    countworld,
    countworld2,
    geometry_of,
    load_tokenizer,
    model_defaults,
    resolve_model,
)
from numina.prompts import PromptTokens, parse_prompt, validate_targets
from numina.run_folder import disk_full_ends_cleanly, new_run_folder, save_video, slug, write_json
from numina.sampling import capture_generation, plain_generation
from numina.store import open_store
from numina.version import code_version
from numina.wandb_mirror import Tracker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_model_arguments(parser, args)
    if args.counts is not None:
        try:
            args.counts = validate_targets(args.counts)
            check_correction(args.counts)
        except (TypeError, ValueError) as error:
            parser.error(f"--counts: {error}")
    options = {
        "reference_step": args.reference_step,
        "reference_layer": args.reference_layer,
        "walkthrough_steps": args.walkthrough_steps,
        "walkthrough_guidance": args.walkthrough_guidance,
        "head_rule": args.head_rule,
        "estimator": args.estimator,
        "score_variant": args.score_variant,
        "cross_heads": args.cross_heads,
        "concentration_measure": args.concentration_measure,
        "all_occurrences": args.all_occurrences,
        "follow_steps": args.follow_steps,
        "early_accept": args.early_accept,
        "track_instances": args.track_instances,
        "cache_walkthrough": args.cache_walkthrough,
        "cache_guided": args.cache_guided,
        "cache_method": args.cache_method,
    }
    args.options = preset(args.preset, **{key: value for key, value in options.items() if value is not None})
    if args.capture_only and (args.walkthrough_steps is not None or args.walkthrough_guidance is not None):
        parser.error(
            "--walkthrough-steps and --walkthrough-guidance shorten NUMINA's walk-through; --capture-only "
            "generates with --steps and --guidance: set those instead"
        )
    check_output(parser, args.out)
    return args


def token_labels(tokens: PromptTokens) -> dict[str, list[int]]:
    """Figure labels of the targets' numerals and nouns (first occurrence) with their token positions."""
    labels: dict[str, list[int]] = {}
    for noun in tokens.targets:
        numeral = tokens.numeral_for(noun)
        if numeral is not None:
            labels[f'numeral "{numeral.text}"'] = list(numeral.positions)
        labels[f'noun "{noun}"'] = tokens.noun_spans(noun)[0]
    return labels


def layout_figures(
    result: NuminaResult, geometry: Geometry, video: np.ndarray, baseline: np.ndarray | None
) -> dict:
    """Each noun's layout after the walk-through (over the baseline when there is one) and after
    correction (over the NUMINA video), at each latent frame's first video frame."""
    first = [geometry.video_frames(frame)[0] for frame in range(geometry.frames)]
    figures = {}
    for noun in result.layout.nouns:
        for stage, layout, frames in (
            ("walkthrough", result.layout, baseline if baseline is not None else video),
            ("corrected", result.corrected, video),
        ):
            counts = layout.counts(noun).tolist()
            title = f'"{noun}" layout, {stage} (target {result.targets[noun]}; counts {counts})'
            figures[f"layout_{slug(noun)}_{stage}"] = layout_overlay_figure(
                layout[noun], frames[first], title=title
            )
    return figures


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("generate")
    started = time.perf_counter()

    # Everything that can be wrong with the request fails here, before any weights are loaded.
    try:
        model = resolve_model(args.model)
        settings = generation_settings(args)
        geometry = geometry_of(model, settings.num_frames, settings.height, settings.width)
        tokens = parse_prompt(args.prompt, load_tokenizer(model), targets=args.counts)
        if not tokens.targets:
            raise ValueError(
                f"no counted noun found in {args.prompt!r}: give the targets with --counts '{{\"noun\": 3}}'"
            )
        if args.counts is None and not args.capture_only:
            try:
                check_correction(tokens.targets)
            except ValueError as error:
                raise ValueError(
                    f"{error} The targets {tokens.targets} were read off the prompt and NUMINA corrects "
                    "0 to 99 instances: give the targets it should reach with --counts."
                ) from None
        unknown = words_outside_vocabulary(args.prompt)
        if model_defaults(model)["prompt_set"] in (countworld.NAME, countworld2.NAME) and unknown:
            log.warning(
                "CountWorld was trained on its world's words only and does not know %s; its words are: %s",
                ", ".join(repr(word) for word in unknown),
                " ".join(vocabulary()),
            )
        # The walk-through's capture, the same with or without the rest of the method.
        spec, _, _ = method_spec(geometry, tokens, settings, args.options, args.device)
    except (ValueError, OSError) as error:
        raise SystemExit(f"generate.py: error: {error}") from None

    pipeline = pipeline_from_args(args, model)
    run_dir = new_run_folder(args.out, args.prompt)
    config = {
        "prompt": args.prompt,
        "targets": tokens.targets,
        "mode": "capture-only" if args.capture_only else "numina",
        "preset": None if args.capture_only else args.preset,
        "numina_options": None if args.capture_only else args.options.to_dict(),
        "model": args.model,
        "model_source": model,
        "dtype": args.dtype,
        "device": args.device,
        "flow_shift": args.flow_shift,
        "attention_backend": args.attention_backend,
        "settings": settings.to_dict(),
        "geometry": geometry.to_dict(),
        "capture_spec": spec.to_dict(),
        "code_version": code_version(),
        "command": ["experiments/generate.py", *(sys.argv[1:] if argv is None else argv)],
    }
    write_json(run_dir / "config.json", config)
    log.info("run folder: %s", run_dir)

    with Tracker(run_dir, name=run_dir.name, config=config, mode=args.wandb, job_type="generate") as tracker:
        pipeline.set_progress_bar_config(disable=False, desc="denoising")
        store_attrs = {"model": config["model"], "config": config}
        baseline = plain_generation(pipeline, tokens.prompt, settings) if args.baseline else None
        figures = {}
        if args.capture_only:
            video = capture_generation(
                pipeline, tokens, spec, settings, run_dir / "attention.h5", store_attrs
            )
        else:
            result = run_numina(
                pipeline, tokens, settings, args.options, run_dir / "attention.h5", store_attrs
            )
            video = result.video
            write_json(run_dir / "numina.json", result.summary())
            figures.update(layout_figures(result, geometry, video, baseline))
            tracker.log_scalars(  # one history row
                {
                    f"counts/{stage}/{noun}/frames_right": sum(c == tokens.targets[noun] for c in counts)
                    for stage in ("walkthrough", "corrected")
                    for noun, counts in result.counts(stage).items()
                }
            )
            tracker.log_table("edits", [edit.__dict__ for edit in result.edits] or [{"edit": "none"}])
            log.info(
                "NUMINA %s: counts %s -> %s, %d edits",
                result.path,
                result.counts(),
                result.counts("corrected"),
                len(result.edits),
            )
        save_video(video, run_dir / "video.mp4", settings.fps)
        tracker.log_video("video", run_dir / "video.mp4", fps=settings.fps)
        if baseline is not None:
            save_video(baseline, run_dir / "baseline.mp4", settings.fps)
            save_video(np.concatenate([baseline, video], axis=2), run_dir / "side_by_side.mp4", settings.fps)
            tracker.log_video("side_by_side", run_dir / "side_by_side.mp4", fps=settings.fps)
        with open_store(run_dir / "attention.h5") as store:
            figures["token_maps"] = token_maps_figure(store, token_labels(tokens), step=spec.steps[0])
        for name, figure in figures.items():
            save_figure(figure, run_dir / "figures" / name)
            tracker.log_image(f"figures/{name}", figure)
        tracker.log_artifact(
            run_dir / "attention.h5", name=f"attention-{run_dir.name}", type="attention-store"
        )
        seconds = time.perf_counter() - started
        tracker.log_scalars({"seconds": seconds})
    log.info("done in %.1f s: %s", seconds, ", ".join(sorted(path.name for path in run_dir.iterdir())))
    return run_dir


if __name__ == "__main__":
    with disk_full_ends_cleanly("generate.py"):
        main()
