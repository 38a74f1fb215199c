"""The walk-through's own schedule: which step of a shorter walk-through sits at the reference noise
level, what is refused, and that NUMINA runs it (fewer transformer calls, same noise level)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler

import numina.method.phase1 as phase1
from numina.method.generation import run_numina
from numina.method.presets import preset
from numina.method.schedule import check_same_noise_level, walkthrough_schedule
from numina.models import Geometry
from numina.prompts import parse_prompt
from numina.sampling import GenerationSettings
from numina.store import open_store
from tests.test_numina import PROMPT, SETTINGS, _right_layout

RELEASE = GenerationSettings(num_frames=81, height=480, width=832, steps=50, guidance=5.0, seed=0)


@pytest.mark.parametrize(("steps", "reference"), [(None, 20), (50, 20), (25, 10), (10, 4), (5, 2)])
def test_a_shorter_walkthrough_reads_step_r_times_n_over_s(steps: int | None, reference: int) -> None:
    """Step 20 of 50 is at 0.6 of the unshifted sigma range: so are 10 of 25, 4 of 10 and 2 of 5."""
    schedule = walkthrough_schedule(RELEASE, walkthrough_steps=steps)
    assert schedule.reference_step == reference and schedule.final_reference_step == 20
    assert schedule.settings.steps == (steps or 50) and schedule.settings.guidance == 5.0
    assert schedule.is_final_run(RELEASE) == (schedule.settings.steps == 50)


def test_a_walkthrough_without_guidance_is_not_the_final_run() -> None:
    schedule = walkthrough_schedule(RELEASE, walkthrough_guidance=1.0)
    assert (schedule.settings.steps, schedule.settings.guidance, schedule.reference_step) == (50, 1.0, 20)
    assert not schedule.is_final_run(RELEASE)
    assert walkthrough_schedule(RELEASE, 30, 5).reference_step == 3  # 30 of 50 = 3 of 5


@pytest.mark.parametrize("steps", [12, 7, 49])
def test_a_walkthrough_with_no_step_at_the_reference_level_is_refused(steps: int) -> None:
    with pytest.raises(ValueError, match=f"walkthrough_steps={steps} has no step .* a multiple of 5"):
        walkthrough_schedule(RELEASE, walkthrough_steps=steps)
    with pytest.raises(ValueError, match="step index of a 50-step run"):
        walkthrough_schedule(RELEASE, reference_step=50)
    with pytest.raises(ValueError, match="walkthrough_steps must be"):
        preset("official", walkthrough_steps=0)
    with pytest.raises(ValueError, match="walkthrough_guidance must be"):
        preset("official", walkthrough_guidance=float("nan"))


def test_the_release_scheduler_puts_both_steps_at_one_noise_level(tiny_pipe) -> None:
    """On Wan's flow UniPC sampler (shifted, as the pipelines use it) step 4 of 10 is step 20 of 50;
    a Karras-spaced sampler is refused before any work."""
    for steps in (5, 10, 25):
        check_same_noise_level(
            tiny_pipe.scheduler, walkthrough_schedule(RELEASE, walkthrough_steps=steps), RELEASE
        )
    karras = DPMSolverMultistepScheduler(use_karras_sigmas=True)
    with pytest.raises(ValueError, match="does not space its steps evenly"):
        check_same_noise_level(karras, walkthrough_schedule(RELEASE, walkthrough_steps=10), RELEASE)


@pytest.fixture(scope="module")
def tokens(tiny_pipe):
    return parse_prompt(PROMPT, tiny_pipe.tokenizer)


def _transformer_calls(pipe, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize(
    ("overrides", "walkthrough_calls"),
    [({}, 3 * 2), ({"walkthrough_steps": 3}, 2 * 2), ({"walkthrough_guidance": 1.0}, 3 * 1)],
)
def test_a_cheaper_walkthrough_captures_the_reference_noise_level_with_fewer_calls(
    tiny_pipe,
    tokens,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict,
    walkthrough_calls: int,
) -> None:
    """6 steps, reference step 2: a 3-step walk-through reads its step 1, at the same timestep; without
    guidance each step is one call. The final run is the same 6 guided steps (12 calls)."""
    calls = _transformer_calls(tiny_pipe, monkeypatch)
    options = preset("official", **overrides)
    result = run_numina(tiny_pipe, tokens, SETTINGS, options, tmp_path / "a.h5")
    assert len(calls) == walkthrough_calls + 2 * SETTINGS.steps and result.path == "guided"
    assert result.transformer_calls(SETTINGS, options) == len(calls)  # what the benchmarks report
    tiny_pipe.scheduler.set_timesteps(SETTINGS.steps)
    wanted = float(tiny_pipe.scheduler.timesteps[2])
    with open_store(tmp_path / "a.h5") as store:
        walkthrough = GenerationSettings.from_dict(store.attrs["walkthrough_settings"])
        step = 1 if overrides.get("walkthrough_steps") else 2
        captured = store["capture/timestep"].sel(step=step, branch="cond").values
        assert walkthrough == replace(
            SETTINGS, **{k.removeprefix("walkthrough_"): v for k, v in overrides.items()}
        )
        assert len(store.attrs["timesteps"]) == walkthrough.steps
    assert float(captured) == pytest.approx(wanted, abs=1e-3)


def test_early_accept_regenerates_when_the_walkthrough_is_not_the_final_run(
    tiny_pipe, tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A right count after a 3-step walk-through cannot finish that walk-through as the video: the
    plain 6-step video is generated, bit-equal to the baseline."""
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    right = _right_layout(tokens.targets, geometry.frames, geometry.height)
    monkeypatch.setattr(phase1, "build_layout", lambda *args, **kwargs: right)
    options = preset("official", early_accept=True, walkthrough_steps=3)
    result = run_numina(tiny_pipe, tokens, SETTINGS, options, tmp_path / "a.h5")
    baseline = tiny_pipe(**SETTINGS.call(PROMPT), output_type="np").frames[0]
    assert result.path == "regenerated" and not result.edits
    np.testing.assert_array_equal(result.video, baseline)
