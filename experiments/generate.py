"""Generate one video with a Wan pipeline and capture its attention: the project's main job.

    python experiments/generate.py --prompt "three cats on a sofa" --capture-only

writes a run folder (runs/<time>-<prompt>/): config.json, attention.h5 (the HDF5 attention store),
video.mp4, figures/token_maps.{png,pdf} (the nouns' and numerals' cross-attention) and an offline
W&B run under wandb/. Without --model it runs the built-in tiny pipeline on the CPU (random weights:
the maps show the plumbing, not counting). --model takes a hub id or a local diffusers folder
(Wan2.1-T2V-1.3B/14B, Wan2.2-TI2V-5B).

This version runs NUMINA's walk-through with capture (`--capture-only`); the count correction and
guided regeneration are the method's next step and are not part of it yet.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from analysis.figures import save_figure, token_maps_figure
from numina.capture import numina_spec
from numina.cli import DTYPES, add_model_arguments, resolve_model_arguments
from numina.models import geometry_of, load_pipeline, load_tokenizer, resolve_model
from numina.prompts import parse_prompt, validate_targets
from numina.run_folder import new_run_folder, save_video, write_json
from numina.store import open_store
from numina.tracking import Tracker
from numina.version import code_version
from numina.walkthrough import GenerationSettings, capture_generation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--counts",
        type=json.loads,
        default=None,
        help="targets as JSON, e.g. '{\"cat\": 3}'; parsed from the prompt when absent",
    )
    parser.add_argument(
        "--capture-only",
        action="store_true",
        help="walk-through generation with attention capture (the only mode in this version)",
    )
    parser.add_argument(
        "--reference-step",
        type=int,
        default=None,
        help="captured step (20 at 50 steps, same fraction otherwise)",
    )
    parser.add_argument(
        "--reference-layer",
        type=int,
        default=None,
        help="block whose self-attention is reduced (15; the middle block of small models)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs"), help="folder that receives the run folder")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    if not args.capture_only:
        parser.error("this version runs the walk-through with capture only: pass --capture-only")
    resolve_model_arguments(parser, args)
    if args.counts is not None:
        try:
            args.counts = validate_targets(args.counts)
        except (TypeError, ValueError) as error:
            parser.error(f"--counts: {error}")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("generate")
    started = time.perf_counter()

    # Everything that can be wrong with the request fails here, before any weights are loaded.
    try:
        model = resolve_model(args.model)
        settings = GenerationSettings(
            args.frames, args.height, args.width, args.steps, args.guidance, args.seed, args.negative_prompt
        )
        geometry = geometry_of(model, settings.num_frames, settings.height, settings.width)
        tokens = parse_prompt(args.prompt, load_tokenizer(model), targets=args.counts)
    except (ValueError, OSError) as error:
        raise SystemExit(f"generate.py: error: {error}") from None
    if not tokens.targets:
        raise SystemExit(
            f"No counted noun found in {args.prompt!r}: give the targets with --counts '{{\"noun\": 3}}'."
        )
    labels: dict[str, list[int]] = {}
    for noun in tokens.targets:
        numeral = tokens.numeral_for(noun)
        if numeral is not None:
            labels[f'numeral "{numeral.text}"'] = list(numeral.positions)
        labels[f'noun "{noun}"'] = tokens.noun_spans(noun)[0]
    captured = sorted({position for span in labels.values() for position in span})
    spec = numina_spec(
        geometry, tuple(captured), tokens.n_tokens, settings.steps, args.reference_step, args.reference_layer
    ).resolved(geometry, settings.steps)

    pipeline = load_pipeline(model, DTYPES[args.dtype], args.device, args.flow_shift, args.attention_backend)
    run_dir = new_run_folder(args.out, args.prompt)
    config = {
        "prompt": args.prompt,
        "targets": tokens.targets,
        "model": args.model or "tiny",
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
        video = capture_generation(
            pipeline,
            tokens,
            spec,
            settings,
            run_dir / "attention.h5",
            {"model": config["model"], "config": config},
        )
        save_video(video, run_dir / "video.mp4", settings.fps)
        with open_store(run_dir / "attention.h5") as store:
            figure = token_maps_figure(store, labels, step=spec.steps[0])
        save_figure(figure, run_dir / "figures" / "token_maps")
        tracker.log_image("cross_attention/token_maps", figure)
        tracker.log_video("video", run_dir / "video.mp4", fps=settings.fps)
        tracker.log_artifact(
            run_dir / "attention.h5", name=f"attention-{run_dir.name}", type="attention-store"
        )
        seconds = time.perf_counter() - started
        tracker.log_scalars({"seconds": seconds})
    log.info("done in %.1f s: %s", seconds, ", ".join(sorted(path.name for path in run_dir.iterdir())))
    return run_dir


if __name__ == "__main__":
    main()
