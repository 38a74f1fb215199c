"""benchmarks/walkthrough_options.py: cheaper walk-throughs against `official` on CountWorld 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from experiment_scripts import load_benchmark


def _script():
    return load_benchmark("walkthrough_options")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sets", "official,steps_7"], "not rows of OPTION_SETS"),
        (["--frames", "4"], "must be 1 or 4k+1"),
        (["--steps", "7", "--sets", "steps_5"], "walkthrough_steps=5 has no step"),
        (["--options", '{"walkthrough_steps": 0}'], "walkthrough_steps must be"),
    ],
)
def test_bad_settings_are_refused_before_any_work(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as error:
        _script().main([*argv, "--out", str(tmp_path / "out")])
    assert message in str(error.value) + capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow
def test_official_agrees_with_itself_and_calls_are_counted(tmp_path: Path) -> None:
    """5 steps, reference step 2: official's walk-through is 3 guided steps (6 calls) before the
    10-call final run, x1.6 of the baseline's 10; without guidance it is 3 calls, x1.3. Official's
    layout agrees with itself exactly; a rerun resumes from the jobs and refuses other settings."""
    script = _script()
    argv = ["--prompts", "1", "--steps", "5", "--sets", "official,no_cfg", "--device", "cpu"]
    out = tmp_path / "out"
    summary = script.main([*argv, "--out", str(out)]).set_index("set")
    assert summary.loc["official", "calls_ratio"] == pytest.approx(1.6)
    assert summary.loc["no_cfg", "calls_ratio"] == pytest.approx(1.3)
    assert summary.loc["official", "count_agreement"] == 1.0 and summary.loc["official", "mean_iou"] == 1.0
    assert summary.loc["official", "vs_official"] == 0.0
    rows = pd.read_csv(out / "rows.csv")
    assert set(rows["set"]) == {"official", "no_cfg"} and set(rows["prompt_id"]) == {0}
    jobs = sorted((out / "jobs").glob("*.json"))
    before = [path.read_text() for path in jobs]
    assert json.loads(before[0])["baseline"]["calls"] == 10
    script.main([*argv, "--out", str(out)])
    assert [path.read_text() for path in jobs] == before  # resumed, nothing generated again
    with pytest.raises(SystemExit, match="steps: 5 before, 6 now"):
        script.main([*[("6" if value == "5" else value) for value in argv], "--out", str(out)])
