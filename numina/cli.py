"""Command-line options shared by the experiment scripts: prompts, model, video size, sampler, counter, W&B.

Every script in experiments/ takes the same model and sampler options with the same defaults (the
release's 81 frames at 832x480 and 50 steps on real models; 17 frames at 128x128 and 20 steps on the
built-in CountWorld and tiny ones, `numina.models.model_defaults`), so they are declared once here.
Numeric options are parsed by `real` and `integer`, which refuse NaN, inf and out-of-range values while
the arguments are read. May import torch, diffusers, numina.checks, numina.models, numina.method.presets,
numina.walkthrough, numina.countworld.world2 (its object limit) and numina.evaluation.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import WanPipeline

from numina.checks import check_int, check_real
from numina.countworld.world2 import MAX_TOTAL as COUNTWORLD2_MAX_TOTAL
from numina.evaluation.countbench import (
    CountBenchPrompt,
    countworld_prompts,
    load_countbench,
    select_prompts,
)
from numina.evaluation.detectors import DETECTORS
from numina.method.presets import PRESETS, NuminaOptions, preset
from numina.models import DEFAULT_MODEL, load_pipeline, model_defaults
from numina.run_folder import check_writable_folder
from numina.tracking import check_mode
from numina.walkthrough import GenerationSettings

PROMPT_SETS = ("countbench", "countworld", "countworld2")

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def real(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse `type`: a finite number in the range (`low_open`: strictly above `low`)."""

    def parse(text: str) -> float:
        try:
            value: object = float(text)
        except ValueError:
            value = text
        try:
            return check_real("the value", value, low, high, low_open=low_open)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value: object = int(text)
        except ValueError:
            value = text
        try:
            return check_int("the value", value, low, high)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --seed, --steps, --frames, --height, --width, --guidance, --flow-shift, --negative-prompt,
    --dtype, --device, --attention-backend, --wandb."""
    parser.add_argument(
        "--model",
        default=None,
        help="hub id or local pipeline folder; 'countworld' (the trained built-in model, the default), "
        "'countworld2' (the second built-in, for GPU use), or 'tiny' / 'tiny:<variant>' (random weights)",
    )
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument(
        "--steps", type=integer(1), default=None, help="denoising steps (50; 20 on the built-in models)"
    )
    parser.add_argument(
        "--frames", type=integer(1), default=None, help="video frames, 4k+1 (81; 17 on the built-in models)"
    )
    parser.add_argument(
        "--height", type=integer(1), default=None, help="pixels (480; 128 on the built-in models)"
    )
    parser.add_argument(
        "--width", type=integer(1), default=None, help="pixels (832; 128 on the built-in models)"
    )
    parser.add_argument("--guidance", type=real(0), default=5.0, help="classifier-free guidance scale")
    parser.add_argument(
        "--flow-shift",
        type=real(0, low_open=True),
        default=5.0,
        help="UniPC flow shift (the release uses 5.0)",
    )
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="transformer dtype (bfloat16 on GPU, float32 on CPU)",
    )
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument(
        "--attention-backend", default=None, help="diffusers attention backend, e.g. native, flash, xformers"
    )
    parser.add_argument(
        "--wandb",
        choices=["offline", "online", "disabled"],
        default=None,
        help="W&B mode (offline unless logged in)",
    )


def resolve_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Name the model (the built-in default when none is given) and fill the size, step, device and dtype
    defaults for it (the numbers themselves were checked while parsing); refuse an online W&B mode
    without an API key."""
    args.model = args.model or DEFAULT_MODEL
    defaults = model_defaults(args.model)
    for key in ("frames", "height", "width", "steps"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    try:
        check_mode(args.wandb)
    except ValueError as error:
        parser.error(f"--wandb: {error}")


def check_output(parser: argparse.ArgumentParser, folder: Path, option: str = "--out") -> None:
    """An argument error, before any work, when `folder` could not be created or written in."""
    try:
        check_writable_folder(folder, option)
    except ValueError as error:
        parser.error(str(error))


def generation_settings(args: argparse.Namespace, seed: int | None = None) -> GenerationSettings:
    """The sampler call the options name, at `seed` (the run's --seed when None)."""
    return GenerationSettings(
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed if seed is None else seed,
        negative_prompt=args.negative_prompt,
    )


def pipeline_from_args(args: argparse.Namespace, model: str) -> WanPipeline:
    """`model` loaded with the options' dtype, device, flow shift and attention backend."""
    return load_pipeline(model, DTYPES[args.dtype], args.device, args.flow_shift, args.attention_backend)


def index_list(text: str | None) -> list[int] | None:
    """Comma-separated integers ("0,5,9"); None for "all"."""
    if text is None or text == "all":
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers or 'all', got {text!r}"
        ) from None


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """--prompt-set, --countbench, --countworld-prompts, --prompts, --limit: which prompts a script runs."""
    parser.add_argument(
        "--prompt-set",
        choices=PROMPT_SETS,
        default=None,
        help="CountBench's 210 prompts, or CountWorld's (at most 12 objects) or CountWorld 2's (at most 10); "
        "default: the model's own set",
    )
    parser.add_argument(
        "--countbench", type=Path, default=None, help="CountBench folder (../shared/countbench)"
    )
    parser.add_argument(
        "--countworld-prompts",
        type=integer(1),
        default=160,
        help="size of the CountWorld (2) prompt set (first-kind counts 1-8 in turn)",
    )
    parser.add_argument("--prompts", type=index_list, default=None, help="0-based prompt lines, e.g. 0,5,9")
    parser.add_argument(
        "--limit", type=integer(1), default=None, help="only the first N prompts (of --prompts)"
    )


def load_prompt_set(args: argparse.Namespace) -> list[CountBenchPrompt]:
    """The prompts the options name: the set (the model's default unless --prompt-set), then
    --prompts and --limit. Records the chosen set in `args.prompt_set`."""
    args.prompt_set = args.prompt_set or model_defaults(args.model)["prompt_set"]
    if args.prompt_set == "countworld":
        prompts = countworld_prompts(args.countworld_prompts)
    elif args.prompt_set == "countworld2":
        prompts = countworld_prompts(args.countworld_prompts, max_total=COUNTWORLD2_MAX_TOTAL)
    else:
        prompts = load_countbench(args.countbench)
    return select_prompts(prompts, args.prompts, args.limit)


BASELINE = "baseline"


def add_methods_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """--methods: the plain pipeline (`baseline`) and/or NUMINA presets, comma-separated."""
    parser.add_argument(
        "--methods", default=default, help=f"comma-separated: {BASELINE} and/or {sorted(PRESETS)}"
    )


def resolve_methods(parser: argparse.ArgumentParser, args: argparse.Namespace, overrides: dict) -> None:
    """Split --methods into a list and check every name, and every preset with `overrides`."""
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m != BASELINE and m not in PRESETS]
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {unknown}; choose from {[BASELINE, *sorted(PRESETS)]}")
    try:
        for method in args.methods:
            method_options(method, overrides)
    except (TypeError, ValueError) as error:
        parser.error(f"--options: {error}")


def method_options(method: str, overrides: dict) -> NuminaOptions | None:
    """NUMINA's options for a preset name with `overrides`; None for the baseline."""
    return None if method == BASELINE else preset(method, **overrides)


COUNTERS = ("exact", *DETECTORS)


def add_counter_arguments(parser: argparse.ArgumentParser) -> None:
    """--counter, --counter-model, --palette: how generated videos are counted."""
    parser.add_argument(
        "--counter",
        choices=COUNTERS,
        default=None,
        help="how instances are counted (exact on the built-in models, grounding-dino otherwise, "
        "as the release)",
    )
    parser.add_argument("--counter-model", default=None, help="hub id or local folder of the detector")
    parser.add_argument("--palette", type=json.loads, default=None, help='exact counter: {"noun": [r, g, b]}')


def resolve_counter_arguments(args: argparse.Namespace) -> None:
    """The default counter: exact on the built-in models, GroundingDINO on real models (or what the
    model folder declares)."""
    args.counter = args.counter or model_defaults(args.model)["counter"]
