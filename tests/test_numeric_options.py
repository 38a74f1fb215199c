"""Numbers are checked before any work: NaN, inf and out-of-range options are refused by name, by every
script while its arguments are read and by the option records, and a diverged generation is refused
before it is written or counted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from experiment_scripts import load_experiment

from numina.capture.spec import CaptureSpec, CrossAttentionCapture
from numina.method.layout import LayoutOptions
from numina.method.modulate import ModulationPlan
from numina.method.presets import NuminaOptions
from numina.models import load_pipeline
from numina.prompts import parse_prompt
from numina.sampling import GenerationSettings, capture_generation, plain_generation

SCRIPTS = ("generate", "countbench", "ablate_heads", "diagnose_numerals", "countworld_samples")
REQUIRED = {"generate": ["--prompt", "three cats"], "ablate_heads": ["--heads"]}
# Options every script takes (numina.cli), with values that must be refused.
MODEL_OPTIONS = [
    ("--guidance", "nan"),
    ("--guidance", "inf"),
    ("--guidance", "-1"),
    ("--guidance", "five"),
    ("--flow-shift", "nan"),
    ("--flow-shift", "0"),
    ("--flow-shift", "-inf"),
    ("--steps", "0"),
    ("--steps", "2.5"),
    ("--frames", "0"),
    ("--height", "-128"),
    ("--width", "nan"),
    ("--seed", "-1"),
]
# Options of one script or a few.
SCRIPT_OPTIONS = [
    ("countbench", "--seeds", "0"),
    ("countbench", "--samples", "-1"),
    ("countbench", "--limit", "0"),
    ("countbench", "--countworld-prompts", "0"),
    ("countbench", "--options", '{"cache_threshold": NaN}'),
    ("countbench", "--options", '{"stride": 0}'),
    ("diagnose_numerals", "--limit", "0"),
    ("countworld_samples", "--seeds", "0"),
    ("generate", "--reference-step", "-1"),
    ("generate", "--reference-layer", "-2"),
    ("countworld2_gates", "--clips", "5"),
    ("countworld2_gates", "--frames", "16"),
    ("countworld2_gates", "--seed", "-3"),
]
CASES = [(script, option, value) for script in SCRIPTS for option, value in MODEL_OPTIONS] + SCRIPT_OPTIONS


@pytest.mark.parametrize(("script", "option", "value"), CASES)
def test_scripts_refuse_bad_numbers_while_reading_arguments(
    capsys: pytest.CaptureFixture, script: str, option: str, value: str
) -> None:
    module = load_experiment(script)
    with pytest.raises(SystemExit) as exit_:
        module.parse_args([*REQUIRED.get(script, []), f"{option}={value}"])  # "=": "-inf" is no option
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # the usage lines above name every option
    assert option in error or option.lstrip("-").replace("-", "_") in error
    assert "must be" in error


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: GenerationSettings(17, 128, 128, guidance=math.nan), "guidance"),
        (lambda: GenerationSettings(17, 128, 128, guidance=math.inf), "guidance"),
        (lambda: GenerationSettings(17, 128, 128, steps=0), "steps"),
        (lambda: GenerationSettings(0, 128, 128), "num_frames"),
        (lambda: GenerationSettings(17, -128, 128), "height"),
        (lambda: GenerationSettings(17, 128, 128, seed=-1), "seed"),
        (lambda: NuminaOptions(cache_threshold=math.nan), "cache_threshold"),
        (lambda: NuminaOptions(score_weights=(1.0, math.nan, 0.1)), "score_weights[1]"),
        (lambda: NuminaOptions(cost_weights=(1.0, 1.0)), "cost_weights"),
        (lambda: NuminaOptions(stride=0), "stride"),
        (lambda: NuminaOptions(modulation_scale=0.0), "modulation_scale"),
        (lambda: NuminaOptions(modulation_scale=math.inf), "modulation_scale"),
        (lambda: ModulationPlan((), 0, scale=math.nan), "scale"),
        (lambda: NuminaOptions(reference_step=-1), "reference_step"),
        (lambda: LayoutOptions(threshold=math.nan), "threshold"),
        (lambda: LayoutOptions(quantile=0.0), "quantile"),
        (lambda: LayoutOptions(min_overlap=1.5), "min_overlap"),
        (lambda: LayoutOptions(eps=math.inf), "eps"),
        (lambda: load_pipeline("no/such-model", flow_shift=math.nan), "flow_shift"),
    ],
)
def test_option_records_refuse_bad_numbers(build, name: str) -> None:
    with pytest.raises(ValueError, match="must be") as error:
        build()
    assert name in str(error.value)


def test_good_options_are_unchanged() -> None:
    assert LayoutOptions() == LayoutOptions(0.05, 3.0, 5, 0.2, 0.2, 1000, 0.5)
    assert GenerationSettings(17, 128, 128).guidance == 5.0
    assert NuminaOptions(score_weights=[1, 1, 0.1]).score_weights == [1, 1, 0.1]


SMALL = GenerationSettings(num_frames=5, height=32, width=32, steps=2, seed=7)


@pytest.fixture
def diverging(tiny_pipe):
    """The tiny pipeline with a transformer whose output is NaN (as an overflowing one gives)."""
    handle = tiny_pipe.transformer.register_forward_hook(
        lambda module, args, output: (output[0] * np.nan, *output[1:])
    )
    yield tiny_pipe
    handle.remove()


def test_a_diverged_generation_is_refused_with_its_prompt_and_seed(diverging) -> None:
    with pytest.raises(FloatingPointError, match=r"'three cats' at seed 7 .* NaN/inf"):
        plain_generation(diverging, "three cats", SMALL)


def test_a_diverged_capture_leaves_no_complete_store(diverging, tmp_path: Path) -> None:
    tokens = parse_prompt("three cats", diverging.tokenizer)
    positions = tuple(tokens.noun_spans("cats")[0])
    spec = CaptureSpec(steps=(1,), cross_attention=CrossAttentionCapture((0,), positions, tokens.n_tokens))
    with pytest.raises(FloatingPointError, match="at seed 7"):
        capture_generation(diverging, tokens, spec, SMALL, tmp_path / "a.h5")
    assert not (tmp_path / "a.h5").exists()  # only the `.partial` that readers refuse
