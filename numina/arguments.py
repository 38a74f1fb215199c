"""The experiment scripts' shared command-line options, declared without importing torch or diffusers,
so that `--help` and argument errors answer at once (numina.cli resolves them against the models).

Numeric options are parsed by `real` and `integer`, which refuse NaN, inf and out-of-range values while
the arguments are read. The names offered as choices are those of the modules that define them (a test
keeps them equal). May import only the standard library, numina.checks, numina.run_folder and
numina.wandb_mirror (which imports wandb only when a run starts).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numina.checks import check_int, check_real
from numina.run_folder import check_writable_folder
from numina.wandb_mirror import check_mode

PROMPT_SETS = ("countbench", "countworld", "countworld2")
DTYPE_NAMES = ("bfloat16", "float16", "float32")
BASELINE = "baseline"
# numina.method.presets.PRESETS, numina.evaluation.controls.CONTROLS,
# numina.evaluation.detectors.DETECTORS, numina.method.identify's HEAD_RULES and CROSS_HEADS,
# numina.metrics.concentration.STATS, numina.method.cache.CACHE_METHODS, numina.capture.spec.ESTIMATORS.
PRESET_NAMES = ("improved", "official", "paper")
CONTROL_NAMES = ("oracle", "random_head")
COUNTERS = ("exact", "owlv2", "grounding-dino")
HEAD_RULES = ("per_frame", "per_video", "per_layer", "fixed")
CROSS_HEADS = ("mean", "concentration", "peak")
STATS = ("mean_attention", "entropy", "top_mass", "peak_to_mean", "spread", "gini")
CACHE_METHODS = ("easycache", "first_block")
ESTIMATORS = ("converged", "release")
# numina.models.countworld.VIDEO and numina.models.countworld2.VIDEO: the built-in models' clips.
BUILT_IN_FRAMES, BUILT_IN_SIZE = 17, 128
# numina.evaluation.planted.DIFFICULTIES and EXTRACTIONS (benchmarks/layout_planted.py).
PLANTED_DIFFICULTIES = ("clean", "easy", "medium", "weak")
PLANTED_EXTRACTIONS = ("release", "official", "segments", "truth")


def _checked(convert: Callable[[str], object], check: Callable[[object], Any]) -> Callable[[str], Any]:
    """An argparse `type`: `convert` the text (text it cannot convert goes to `check` as it is, whose
    message then names it), then `check` it; a refusal is an argument error."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = text
        try:
            return check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def real(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse `type`: a finite number in the range (`low_open`: strictly above `low`)."""
    return _checked(float, lambda value: check_real("the value", value, low, high, low_open=low_open))


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in [low, high]."""
    return _checked(int, lambda value: check_int("the value", value, low, high))


def _not_a_number(constant: str) -> None:
    raise argparse.ArgumentTypeError(f"got {constant}: numbers in JSON options must be finite")


def json_value(text: str) -> Any:
    """An argparse `type`: a JSON value; bad JSON is an argument error that shows JSON's own message, and
    NaN or Infinity (which Python's JSON reads) is refused."""
    try:
        return json.loads(text, parse_constant=_not_a_number)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({error.msg} at character {error.pos + 1}): {text!r}; "
            """write keys and strings in double quotes, e.g. '{"cat": 3}'"""
        ) from None


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
        choices=DTYPE_NAMES,
        default=None,
        help="transformer dtype (bfloat16 on GPU, float32 on CPU)",
    )
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument(
        "--attention-backend", default=None, help="diffusers attention backend, e.g. native, flash, xformers"
    )
    add_wandb_argument(parser)


def add_wandb_argument(parser: argparse.ArgumentParser) -> None:
    """--wandb: the W&B mode; `resolve_wandb` settles it before any work."""
    parser.add_argument(
        "--wandb",
        choices=["offline", "online", "disabled"],
        default=None,
        help="W&B mode (offline unless logged in)",
    )


def resolve_wandb(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Settle --wandb into the mode the run will use (`numina.wandb_mirror.check_mode`); an online mode that
    cannot start (no key, a server that does not answer or rejects the key) is an argument error here,
    not a traceback after the work."""
    try:
        args.wandb = check_mode(args.wandb)
    except ValueError as error:
        parser.error(f"--wandb: {error}")


def check_output(parser: argparse.ArgumentParser, folder: Path, option: str = "--out") -> None:
    """An argument error, before any work, when `folder` could not be created or written in."""
    try:
        check_writable_folder(folder, option)
    except ValueError as error:
        parser.error(str(error))


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


def add_methods_argument(parser: argparse.ArgumentParser, default: str, controls: bool = False) -> None:
    """--methods: the plain pipeline (`baseline`), NUMINA presets and, where the script runs them,
    the controls of `numina.evaluation.controls`, comma-separated."""
    names = [*PRESET_NAMES, *(CONTROL_NAMES if controls else ())]
    parser.add_argument("--methods", default=default, help=f"comma-separated: {BASELINE} and/or {names}")


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
    parser.add_argument("--palette", type=json_value, default=None, help='exact counter: {"noun": [r, g, b]}')
