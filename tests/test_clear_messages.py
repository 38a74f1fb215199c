"""The smaller cases of issue 24: each message says what is wrong and what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from experiment_scripts import EXPERIMENTS, load_benchmark, load_experiment

from numina.countworld.world import words_outside_vocabulary
from numina.models.geometry import Geometry

TRANSFORMER = SimpleNamespace(patch_size=(1, 2, 2), num_layers=2, num_attention_heads=2, attention_head_dim=8)


@pytest.mark.parametrize(
    ("frames", "height", "message"),
    [
        (9, -128, "height=-128 .* multiple of 16 .* The smallest valid value is 16"),
        (9, 8, "height=8 .* The smallest valid value is 16"),
        (9, 40, "height=40 .* Nearest valid values: 32 or 48"),
        (0, 64, "num_frames=0 .* The smallest valid value is 1"),
        (10, 64, "num_frames=10 .* Nearest valid values: 9 or 13"),
    ],
)
def test_a_size_the_model_cannot_take_names_the_valid_values(frames: int, height: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Geometry.from_configs(TRANSFORMER, 4, 8, frames, height, 64)


# (script, arguments, what the argument error says)
ARGUMENT_ERRORS = [
    ("generate", ["--prompt", "three cats", "--height", "-128"],
     "argument --height: the value must be an integer >= 1"),
    ("generate", ["--prompt", "three cats", "--counts", "{}"], "argument --counts: '{}' names no noun"),
    ("generate", ["--prompt", "three cats", "--counts", "{cat: 3}"],
     "argument --counts: not valid JSON (Expecting property name enclosed in double quotes at character 2)"),
    ("countbench", ["--options", "{'early_accept': true}"], "argument --options: not valid JSON"),
    ("countbench", ["--palette", '{"cat": [1, 0, 0]'], "argument --palette: not valid JSON"),
    ("ablate_heads", ["--grid", "head_rule=fixed"],
     "argument --grid: not valid JSON (Expecting value at character 1)"),
]  # fmt: skip


@pytest.mark.parametrize(("script", "arguments", "said"), ARGUMENT_ERRORS)
def test_an_argument_error_names_the_option_and_the_fix(
    script: str, arguments: list[str], said: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_experiment(script).parse_args([*arguments, "--wandb", "disabled"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert said in error and "invalid loads value" not in error


def test_words_a_built_in_model_does_not_know_include_accents_emoji_and_digits() -> None:
    assert words_outside_vocabulary("Three red café 🐱 3 circles, on a grey sofa.") == [
        "café",
        "🐱",
        "3",
        "sofa",
    ]
    assert words_outside_vocabulary("Three red circles.") == []


# Every runnable script: the experiments and the benchmarks.
SCRIPTS = sorted([*EXPERIMENTS.glob("*.py"), *(EXPERIMENTS.parent / "benchmarks").glob("*.py")])


@pytest.mark.parametrize("arguments", [["--help"], ["--seed", "-1"]])
def test_help_and_argument_errors_answer_before_the_model_code_is_imported(arguments: list[str]) -> None:
    """Each script parses its arguments above its imports of torch and diffusers (~20 s on 2 cores);
    `--seed -1` is refused by the seed's type, or as an unknown option where a script takes no seed."""
    check = (
        "import runpy, sys\n"
        "for script in sys.argv[1:]:\n"
        f"    sys.argv = [script, *{arguments!r}]\n"
        "    try:\n"
        "        runpy.run_path(script, run_name='__main__')\n"
        "    except SystemExit as exit:\n"
        "        print('EXIT', exit.code)\n"
        "print('LOADED', sorted(m for m in ('torch', 'diffusers', 'numpy', 'pandas') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(EXPERIMENTS.parent)}
    done = subprocess.run(
        [sys.executable, "-c", check, *map(str, SCRIPTS)], capture_output=True, text=True, env=env
    )
    lines = done.stdout.strip().splitlines()
    codes = [line.split()[1] for line in lines if line.startswith("EXIT ")]
    assert len(SCRIPTS) >= 18 and codes == ["0" if arguments == ["--help"] else "2"] * len(SCRIPTS), (
        done.stderr[-2000:]
    )
    assert lines[-1] == "LOADED []"


@pytest.mark.parametrize("script", ["train_countworld.py", "train_countworld2.py"])
@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--budget-minutes", "nan", "a finite number > 0, got nan"),
        ("--lr", "0", "a finite number > 0, got 0.0"),
        ("--ema", "1.5", "a finite number >= 0 and <= 1, got 1.5"),
        ("--steps", "-1", "an integer >= 0, got -1"),
    ],
)
def test_training_options_are_checked_before_a_piece_starts(
    script: str, option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN budget or learning rate would otherwise surface minutes into a paid GPU piece."""
    parser = load_experiment(script.removesuffix(".py")).build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--work", "w", option, value])
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.endswith(f"argument {option}: the value must be {says}"), error


def test_the_light_option_names_are_the_models_own() -> None:
    from numina import arguments
    from numina.capture.spec import ESTIMATORS
    from numina.evaluation import planted
    from numina.evaluation.controls import CONTROLS
    from numina.evaluation.detectors import DETECTORS
    from numina.method.cache import CACHE_METHODS
    from numina.method.identify import CROSS_HEADS, HEAD_RULES
    from numina.method.presets import PRESETS
    from numina.metrics.concentration import STATS
    from numina.models import countworld, countworld2

    assert tuple(sorted(PRESETS)) == arguments.PRESET_NAMES
    assert CONTROLS == arguments.CONTROL_NAMES
    assert ("exact", *DETECTORS) == arguments.COUNTERS
    assert (arguments.HEAD_RULES, arguments.CROSS_HEADS) == (HEAD_RULES, CROSS_HEADS)
    assert (arguments.STATS, arguments.CACHE_METHODS) == (STATS, CACHE_METHODS)
    assert arguments.ESTIMATORS == ESTIMATORS
    built_in = {
        "frames": arguments.BUILT_IN_FRAMES,
        "height": arguments.BUILT_IN_SIZE,
        "width": arguments.BUILT_IN_SIZE,
    }
    assert countworld.VIDEO == countworld2.VIDEO == built_in
    assert (tuple(planted.DIFFICULTIES), tuple(planted.EXTRACTIONS)) == (
        arguments.PLANTED_DIFFICULTIES,
        arguments.PLANTED_EXTRACTIONS,
    )


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("capture_overhead", ["--repeats", "0"]),
        ("numina_overhead", ["--steps", "0"]),
        ("numina_caching_trained", ["--prompts", "0"]),
        ("countworld_train_speed", ["--batches", "256", "0"]),
        ("countworld2_render_speed", ["--frames", "1.5"]),
        ("diagnose_gpu", ["--limit", "-2"]),
    ],
)
def test_benchmark_counts_are_checked_before_a_gpu_is_held(
    script: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A zero repeat count would end a paid GPU call with a division by zero after the model was built."""
    with pytest.raises(SystemExit):
        load_benchmark(script).build_parser().parse_args(argv)
    assert "the value must be an integer >= 1" in capsys.readouterr().err
