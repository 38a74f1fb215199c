"""experiments/diagnose_numerals.py on the tiny pipeline: tables, figures, resume, and errors before work."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from experiment_scripts import load_experiment
from wandb_log import read_transaction_log

from analysis.statistics import MEASURES
from numina.evaluation import load_countbench
from numina.store import open_store

diagnose = load_experiment("diagnose_numerals")
# Prompt 3 has a numeral ("A"), an adjective ("black") and a noun; 209 has three nouns and numerals.
PROMPTS = "3,209"


def _args(tiny_folder: Path, countbench: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model", str(tiny_folder), "--countbench", str(countbench), "--out", str(out),
        "--frames", "9", "--height", "64", "--width", "64", "--steps", "4", "--wandb", "disabled", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def diagnosis(tiny_folder: Path, countbench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("diagnosis")
    return diagnose.main(_args(tiny_folder, countbench_dir, out, "--prompts", PROMPTS, "--wandb", "offline"))


def test_the_diagnosis_writes_tables_with_the_expected_columns_and_token_types(
    diagnosis: Path, countbench_dir: Path
) -> None:
    tokens = pd.read_csv(diagnosis / "token_statistics.csv")
    for column in ("prompt_id", "step", "layer", "head", "token", "word", "token_type", "normalisation"):
        assert column in tokens.columns
    assert set(MEASURES) <= set(tokens.columns)
    assert set(tokens["prompt_id"]) == {3, 209}
    assert set(tokens["normalisation"]) == {"all", "prompt"}
    assert {"numeral", "noun", "adjective", "other", "eos", "padding"} <= set(tokens["token_type"])
    # Every captured token of prompt 209 is in the table, typed as its store's token map says.
    prompt = load_countbench(countbench_dir)[209]
    with open_store(diagnosis / "stores" / "p209.h5") as store:
        captured = [int(p) for p in store["cross_attention/probs"].coords["token"]]
        assert store.attrs["prompt"] == prompt.prompt
    rows = tokens[(tokens["prompt_id"] == 209) & (tokens["normalisation"] == "all")]
    assert sorted(set(rows["token"])) == captured
    nouns = set(rows.loc[rows["token_type"] == "noun", "word"])
    assert nouns == {"samurai", "blossoms", "cat"}
    numerals = set(rows.loc[rows["token_type"] == "numeral", "word"])
    assert numerals == {"Three", "four", "one"}
    # 4 layers x 4 heads of the tiny model, one row per token: frames are averaged.
    assert len(rows) == 4 * 4 * len(captured)

    summary = pd.read_csv(diagnosis / "summary.csv")
    assert {
        "normalisation",
        "token_type",
        "layer",
        "measure",
        "mean",
        "ci_low",
        "ci_high",
        "n_prompts",
    } <= set(summary.columns)
    numeral_entropy = summary[
        (summary["token_type"] == "numeral")
        & (summary["measure"] == "entropy")
        & (summary["normalisation"] == "all")
    ]
    assert len(numeral_entropy) == 4 and (numeral_entropy["n_prompts"] == 2).all()

    differences = pd.read_csv(diagnosis / "type_differences.csv")
    assert set(differences["comparison"]) == {"numeral - noun", "numeral - adjective"}
    choices = pd.read_csv(diagnosis / "head_choices.csv")
    assert len(choices) == 2 * 3  # two prompts x 3 latent frames (9 frames)
    scores = pd.read_csv(diagnosis / "separability.csv")
    best = scores.loc[scores.groupby(["prompt_id", "frame"])["S"].idxmax()]
    paired = best.merge(choices, on=["prompt_id", "frame"], suffixes=("_best", "_chosen"))
    assert len(paired) == 6 and (paired["head_best"] == paired["head_chosen"]).all()

    for name in ("diagnosis", "diagnosis_prompt_renormalised", "separability_heatmap", "example_tokens"):
        for suffix in (".png", ".pdf"):
            assert (diagnosis / "figures" / f"{name}{suffix}").stat().st_size > 1000
    config = json.loads((diagnosis / "config.json").read_text())
    assert config["prompts"] == [3, 209] and config["layers"] == [0, 1, 2, 3]


def test_the_diagnosis_is_mirrored_to_wandb_with_its_tables_and_figures(diagnosis: Path) -> None:
    (offline,) = (diagnosis / "wandb").glob("offline-run-*")
    records = read_transaction_log(offline)
    logged = {
        item.nested_key[0] if item.nested_key else item.key
        for record in records
        if record.WhichOneof("record_type") == "history"
        for item in record.history.item
    }
    assert {
        "summary",
        "type_differences",
        "prompts",
        "figures/diagnosis",
        "figures/separability_heatmap",
    } <= logged
    assert list(offline.glob("files/media/table/summary_*.table.json"))
    assert list(offline.glob("files/media/images/figures/diagnosis_*.png"))


@pytest.mark.slow
def test_a_resumed_run_skips_finished_prompts_and_regenerates_a_cut_off_store(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    diagnose.main(_args(tiny_folder, countbench_dir, out, "--limit", "2"))
    first = pd.read_csv(out / "token_statistics.csv")
    # Prompt 1's generation is interrupted: only a .partial store remains, no tables.
    for path in (out / "tables").glob("p001_*"):
        path.unlink()
    (out / "stores" / "p001.h5").rename(out / "stores" / "p001.h5.partial")
    generated = []
    original = diagnose.capture_generation
    monkeypatch.setattr(
        diagnose, "capture_generation", lambda *a, **k: generated.append(a[1].prompt) or original(*a, **k)
    )
    diagnose.main(_args(tiny_folder, countbench_dir, out, "--limit", "3"))
    prompts = load_countbench(countbench_dir)
    assert generated == [prompts[1].prompt, prompts[2].prompt]
    status = pd.read_csv(out / "prompts.csv").set_index("prompt_id")["status"].to_dict()
    assert status == {0: "done before", 1: "generated", 2: "generated"}
    resumed = pd.read_csv(out / "token_statistics.csv")
    # The same seed and settings give the same numbers for the regenerated prompt.
    pd.testing.assert_frame_equal(
        first.reset_index(drop=True), resumed[resumed["prompt_id"] < 2].reset_index(drop=True), rtol=1e-5
    )


def test_changed_settings_or_bad_requests_fail_before_any_model_work(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    out = tmp_path / "run"
    (out).mkdir()
    (out / "config.json").write_text(json.dumps({"model": str(tiny_folder), "stats_only": True}))
    monkeypatch.setattr(diagnose, "pipeline_from_args", no_loading)
    with pytest.raises(SystemExit, match="resume it with the same settings"):
        diagnose.main(_args(tiny_folder, countbench_dir, out, "--limit", "1"))
    with pytest.raises(SystemExit, match="out of range"):
        diagnose.main(_args(tiny_folder, countbench_dir, tmp_path / "b", "--prompts", "0,210"))
    with pytest.raises(SystemExit, match="layer index"):
        diagnose.main(_args(tiny_folder, countbench_dir, tmp_path / "c", "--limit", "1", "--layers", "0,7"))
    with pytest.raises(SystemExit, match="lacks prompts.txt"):
        diagnose.main(_args(tiny_folder, tmp_path, tmp_path / "d", "--limit", "1"))
