"""A script that fails after its W&B run started ends that run, marked failed with a non-zero exit
code, instead of leaving it open: every script that logs to W&B is made to fail while its run is open,
and its run is read back from W&B's offline transaction log."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiment_scripts import load_experiment
from wandb_log import read_transaction_log

from numina.wandb_mirror import Tracker

pytestmark = pytest.mark.slow  # end to end: run by .ci/run, not by the default loop

SMALL = ["--frames", "9", "--height", "64", "--width", "64", "--steps", "3", "--wandb", "offline"]
# (script, its arguments: model folder, CountBench folder, output folder -> argv)
SCRIPTS = {
    "generate": lambda model, bench, out: [
        "--prompt", "three cats on a sofa", "--capture-only", "--model", model, "--out", out, *SMALL,
    ],
    "countbench": lambda model, bench, out: [
        "--model", model, "--countbench", bench, "--out", out, "--prompts", "3", "--seeds", "1",
        "--methods", "baseline", "--counter", "exact", *SMALL,
    ],
    "ablate_heads": lambda model, bench, out: [
        "--model", model, "--countbench", bench, "--out", out, "--prompts", "3", "--counter", "exact",
        "--grid", '{"cross_heads": ["mean"]}', *SMALL,
    ],
    "diagnose_numerals": lambda model, bench, out: [
        "--model", model, "--countbench", bench, "--out", out, "--prompts", "3", *SMALL,
    ],
    "train_countworld": lambda model, bench, out: [
        "--work", out, "--size", "64", "--frames", "5", "--vae-frames", "5", "--vae-steps", "2",
        "--vae-batch", "2", "--eval-clips", "2", "--clips", "6", "--steps", "3", "--batch", "2",
        "--sample-prompts", "2", "--sample-steps", "2", "--wandb", "offline",
    ],
}  # fmt: skip


def _exit_codes(root: Path) -> list[list[int]]:
    """The exit codes each offline W&B run under `root` recorded (none: the run was left open)."""
    return [
        [
            record.exit.exit_code
            for record in read_transaction_log(run)
            if record.WhichOneof("record_type") == "exit"
        ]
        for run in sorted(root.rglob("offline-run-*"))
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_that_fails_while_its_run_is_open_ends_the_run_as_failed(
    script: str, tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("failed in the middle of the work")

    monkeypatch.setattr(Tracker, "_log", fail)  # the first thing the script logs raises
    argv = SCRIPTS[script](str(tiny_folder), str(countbench_dir), str(tmp_path / "out"))
    with pytest.raises(RuntimeError, match="failed in the middle"):
        load_experiment(script).main(argv)
    assert _exit_codes(tmp_path) == [[1]]
