"""experiments/countbench.py on the tiny pipeline: tables, shards merged like one run, resume, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from experiment_scripts import load_experiment

REPO = Path(__file__).resolve().parent.parent


countbench = load_experiment("countbench")


def _args(tiny_folder: Path, bench: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model", str(tiny_folder), "--countbench", str(bench), "--out", str(out), "--prompts", "0,3,209",
        "--seeds", "1", "--frames", "9", "--height", "64", "--width", "64", "--steps", "3",
        "--counter", "exact", "--wandb", "disabled", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def single(tiny_folder: Path, countbench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return countbench.main(_args(tiny_folder, countbench_dir, tmp_path_factory.mktemp("single")))


def test_a_run_writes_every_table(single: Path) -> None:
    results = pd.read_csv(single / "results.csv")
    # prompts 0 and 3: 1 noun each, prompt 209: 3 nouns; 1 seed; 2 methods; 9 frames
    assert len(results) == (1 + 1 + 3) * 1 * 2 * 9
    assert set(results["method"]) == {"baseline", "official"}
    assert results.groupby(["prompt_id", "noun"])["target"].first().to_dict() == {
        (0, "astronaut"): 1, (3, "cat"): 1, (209, "blossoms"): 4, (209, "cat"): 1, (209, "samurai"): 3,
    }  # fmt: skip
    summary = pd.read_csv(single / "summary.csv")
    assert set(summary["breakdown"]) == {"overall", "target", "n_categories"}
    paired = pd.read_csv(single / "paired.csv")
    assert paired[["baseline", "other", "n_prompts"]].values.tolist() == [["baseline", "official", 3]]
    changes = pd.read_csv(single / "changes.csv")
    assert changes["method"].tolist() == ["official"] and changes["rows"].tolist() == [len(results) // 2]
    baseline = results[results["method"] == "baseline"]
    right = baseline["count"] == baseline["target"]
    assert changes["right"].tolist() == [int(right.sum())]
    assert changes["over"].tolist() == [int((baseline["count"] > baseline["target"]).sum())]
    assert len(pd.read_csv(single / "videos.csv")) == 6
    assert (single / "figures" / "accuracy_by_target.png").stat().st_size > 0
    assert (single / "figures" / "paired_differences.png").stat().st_size > 0
    # the first --samples (2) prompts keep their first seed's videos, for W&B and for looking at
    assert sorted(p.name for p in (single / "videos").glob("*.mp4")) == [
        "p000-s0-baseline.mp4", "p000-s0-official.mp4", "p003-s0-baseline.mp4", "p003-s0-official.mp4",
    ]  # fmt: skip


@pytest.mark.slow
def test_shards_merge_into_the_single_process_table(
    single: Path, tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        countbench.main(_args(tiny_folder, countbench_dir, out, "--shard", shard))
    assert len(list((out / "videos").glob("*.json"))) == 6 and not (out / "results.csv").exists()
    countbench.main(_args(tiny_folder, countbench_dir, out, "--merge"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), pd.read_csv(single / "results.csv"))


@pytest.mark.slow
def test_torchrun_ranks_share_the_jobs_and_rank_0_merges(
    single: Path, tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "torchrun"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
    ]
    command += [str(REPO / "experiments" / "countbench.py"), *_args(tiny_folder, countbench_dir, out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), pd.read_csv(single / "results.csv"))


def test_torchrun_ranks_beyond_the_gpus_share_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # a machine with 2 GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = countbench.parse_args(["--device", "cuda", "--prompt-set", "countworld", "--wandb", "disabled"])
    assert args.shard == (2, 3) and args.device == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert countbench.parse_args(["--device", "cuda", "--prompt-set", "countworld"]).device == "cuda:1"


@pytest.mark.slow
def test_a_resumed_run_only_makes_the_missing_videos(
    single: Path, tiny_folder: Path, countbench_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (single / "videos" / "p209-s0-official.json").unlink()
    made = []
    original = countbench.run_job
    monkeypatch.setattr(
        countbench,
        "run_job",
        lambda p, item, seed, method, *a: (
            made.append((item.index, seed, method)) or original(p, item, seed, method, *a)
        ),
    )
    countbench.main(_args(tiny_folder, countbench_dir, single))
    assert made == [(209, 0, "official")]
    assert len(pd.read_csv(single / "results.csv")) == (1 + 1 + 3) * 2 * 9
    assert not (single / "scratch").exists() and not list((single / "videos").glob("tmp*"))  # no stores


def test_a_rerun_with_nothing_new_opens_no_wandb_run(
    single: Path, tiny_folder: Path, countbench_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(countbench, "Tracker", lambda *a, **k: pytest.fail("a W&B run was opened"))
    monkeypatch.setattr(countbench, "pipeline_from_args", lambda *a: pytest.fail("the model was loaded"))
    countbench.main(_args(tiny_folder, countbench_dir, single))


def test_an_open_vocabulary_counter_counts_every_frame(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    """The tiny OWLv2 (random weights) through the real loading path: one count per frame and noun."""
    from numina.testing import build_tiny_owlv2

    detector = build_tiny_owlv2(tmp_path / "owlv2")
    out = countbench.main(
        _args(tiny_folder, countbench_dir, tmp_path / "run", "--methods", "baseline", "--prompts", "0")
        + ["--counter", "owlv2", "--counter-model", str(detector)]
    )
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 9 and results["count"].ge(0).all()
    assert json.loads((out / "config.json").read_text())["counter"] == "owlv2"


def test_bad_requests_fail_before_any_model_work(
    tiny_folder: Path, countbench_dir: Path, single: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        countbench.main(_args(tiny_folder, countbench_dir, tmp_path / "a", "--methods", "baseline,oficial"))
    with pytest.raises(SystemExit):
        countbench.main(_args(tiny_folder, countbench_dir, tmp_path / "b", "--shard", "2/2"))
    with pytest.raises(SystemExit):
        countbench.main(
            _args(tiny_folder, countbench_dir, tmp_path / "c", "--options", '{"early_acept": true}')
        )
    with pytest.raises(SystemExit):  # a walk-through with no step at the reference noise level
        countbench.main(
            _args(tiny_folder, countbench_dir, tmp_path / "d", "--options", '{"walkthrough_steps": 7}')
        )
    assert "walkthrough_steps=7 has no step" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")
    with pytest.raises(SystemExit, match="guidance: 5.0 before, 3.0 now"):
        countbench.main(_args(tiny_folder, countbench_dir, single, "--guidance", "3"))


def test_countbench_runs_the_controls_and_pairs_them_with_the_baseline(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    """G4's controls (numina.evaluation.controls) as methods: one prompt, 5 frames (2 latent frames)."""
    controls = "--prompts", "3", "--frames", "5", "--methods", "baseline,oracle,random_head"
    out = countbench.main(_args(tiny_folder, countbench_dir, tmp_path / "g4", *controls))
    assert pd.read_csv(out / "paired.csv")["other"].tolist() == ["oracle", "random_head"]
    oracle = json.loads((out / "videos" / "p003-s0-oracle.json").read_text())
    baseline = json.loads((out / "videos" / "p003-s0-baseline.json").read_text())
    # the oracle's layout counts what the counter counted in the baseline (latent frame f: frame 4f),
    # and it regenerates only where that is not the target
    drawn = baseline["counts"]["cat"][::4]
    assert oracle["layout_counts"]["cat"] == drawn
    assert oracle["corrected_counts"]["cat"] == [1, 1]
    assert oracle["numina_path"] == ("accepted" if drawn == [1, 1] else "guided")
    random_head = json.loads((out / "videos" / "p003-s0-random_head.json").read_text())
    assert set(random_head) >= {"numina_path", "edits", "layout_counts", "corrected_counts"}


def test_the_controls_are_refused_where_they_cannot_run(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):  # the oracle's layout comes from the exact counter only
        countbench.main(
            _args(tiny_folder, countbench_dir, tmp_path / "a", "--methods", "oracle", "--counter", "owlv2")
        )
    assert "--methods oracle builds its layout from the true instances" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    samples = load_experiment("countworld_samples")
    with pytest.raises(SystemExit):  # a script that does not run the controls does not take them
        samples.main(["--model", str(tiny_folder), "--methods", "oracle", "--out", str(tmp_path / "s.png")])
    assert "unknown ['oracle']" in capsys.readouterr().err
