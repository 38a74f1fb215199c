"""Command-line options shared by the experiment scripts, resolved against the models: prompts, model,
video size, sampler, counter, W&B.

Every script in experiments/ takes the same model and sampler options with the same defaults (the
release's 81 frames at 832x480 and 50 steps on real models; 17 frames at 128x128 and 20 steps on the
built-in CountWorld and tiny ones, `numina.models.model_defaults`). The options are declared in
numina.arguments (light, for a quick `--help`) and re-exported here; this module fills their defaults,
checks them against the model and loads what they name. May import torch, diffusers, numina.arguments,
numina.checks, numina.models, numina.method (presets, schedule), numina.sampling,
numina.countworld.world2 (its object limit) and numina.evaluation.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import WanPipeline

from numina.arguments import (  # noqa: F401  (the scripts import the declarations from here too)
    BASELINE,
    COUNTERS,
    PROMPT_SETS,
    add_counter_arguments,
    add_methods_argument,
    add_model_arguments,
    add_prompt_arguments,
    check_output,
    index_list,
    integer,
    json_value,
    real,
    resolve_wandb,
)
from numina.countworld.world2 import MAX_TOTAL as COUNTWORLD2_MAX_TOTAL
from numina.evaluation.controls import CONTROL_PRESET, CONTROLS
from numina.evaluation.countbench import (
    CountBenchPrompt,
    countworld_prompts,
    load_countbench,
    select_prompts,
)
from numina.method.presets import PRESETS, NuminaOptions, preset
from numina.method.schedule import options_schedule
from numina.models import DEFAULT_MODEL, load_pipeline, model_defaults
from numina.sampling import GenerationSettings

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Name the model (the built-in default when none is given) and fill the size, step, device and dtype
    defaults for it (the numbers themselves were checked while parsing); settle the W&B mode
    (`resolve_wandb`: an online mode that cannot start is refused here, before any work)."""
    args.model = args.model or DEFAULT_MODEL
    defaults = model_defaults(args.model)
    for key in ("frames", "height", "width", "steps"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(parser, args.device)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    resolve_wandb(parser, args)


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """A --device torch does not know, or a CUDA device on a machine without one, is an argument error
    here: otherwise it ends the run later, as torch's own error, after the model has loaded."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        parser.error(f"--device {device!r} is not a device; give cpu, cuda or cuda:N (mps on a Mac)")
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: this machine has no CUDA GPU that torch can use; give cpu")


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


def resolve_methods(
    parser: argparse.ArgumentParser, args: argparse.Namespace, overrides: dict, controls: bool = False
) -> None:
    """Split --methods into a list and check every name (the controls only where the script runs
    them: `controls`), and every preset with `overrides`."""
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = [BASELINE, *sorted(PRESETS), *(CONTROLS if controls else ())]
    unknown = [m for m in args.methods if m not in known]
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {unknown}; choose from {known}")
    try:
        for method in args.methods:
            options = method_options(method, overrides)
            if options is not None:  # a walk-through schedule the run's --steps cannot take
                options_schedule(generation_settings(args), options)
    except (TypeError, ValueError) as error:
        parser.error(f"--options: {error}")


def method_options(method: str, overrides: dict) -> NuminaOptions | None:
    """NUMINA's options for a preset name with `overrides` (a control: those of the preset it starts
    from, `CONTROL_PRESET`); None for the baseline."""
    if method == BASELINE:
        return None
    return preset(CONTROL_PRESET if method in CONTROLS else method, **overrides)


def resolve_counter_arguments(args: argparse.Namespace) -> None:
    """The default counter: exact on the built-in models, GroundingDINO on real models (or what the
    model folder declares)."""
    args.counter = args.counter or model_defaults(args.model)["counter"]
