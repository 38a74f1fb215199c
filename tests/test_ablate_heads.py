"""experiments/ablate_heads.py on the tiny pipeline: a small sweep completes, resumes, writes its table."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from experiment_scripts import load_experiment

from analysis.sweeps import constant_fidelity, setting_id
from numina.evaluation import load_countbench
from numina.method import preset, run_numina
from numina.method.identify import Phase1Data, noun_cross_maps
from numina.method.layout import LayoutOptions, build_layout
from numina.method.phase1 import noun_positions
from numina.models import load_pipeline
from numina.prompts import PromptTokens, parse_prompt
from numina.sampling import GenerationSettings, plain_generation
from numina.store import open_store
from numina.version import code_version

ablate = load_experiment("ablate_heads")
GRID = '{"head_rule": ["per_frame", "per_video"], "cross_heads": ["mean", "peak"]}'
SEGMENTS = '{"extraction": "segments"}'


def _args(tiny_folder: Path, bench: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model", str(tiny_folder), "--countbench", str(bench), "--out", str(out), "--prompts", "3,209",
        "--frames", "9", "--height", "64", "--width", "64", "--steps", "4", "--wandb", "disabled",
        "--counter", "exact", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_a_sweep_completes_resumes_and_writes_its_table(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "sweep", "--grid", GRID, "--heads"))
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 + 4 * 4  # the 2 x 2 grid and every (block, head) of the tiny model
    assert summary["accuracy"].between(0, 1).all() and (summary["n_prompts"] == 2).all()
    fixed = summary[summary["head_rule"] == "fixed"]
    assert sorted(zip(fixed["reference_layer"], fixed["fixed_head"], strict=True)) == [
        (layer, head) for layer in range(4) for head in range(4)
    ]
    assert (out / "figures" / "heads_heatmap.png").stat().st_size > 0
    sweep = yaml.safe_load((out / "sweep.yaml").read_text())
    assert sweep["parameters"]["cross_heads"]["values"] == ["mean", "peak"]

    # the layout count recorded for a setting is the one a NUMINA run's own walk-through finds
    setting = {"head_rule": "per_frame", "cross_heads": "mean"}
    result = json.loads((out / "settings" / f"{setting_id(setting)}.json").read_text())
    pipeline = load_pipeline(str(tiny_folder), torch.float32, "cpu")
    item = load_countbench(countbench_dir)[3]
    tokens = parse_prompt(item.prompt, pipeline.tokenizer, targets=item.targets)
    settings = GenerationSettings(num_frames=9, height=64, width=64, steps=4)
    numina = run_numina(pipeline, tokens, settings, preset("official", **setting), tmp_path / "a.h5")
    recorded = {
        noun: [row["count"] for row in result["rows"] if row["prompt_id"] == 3 and row["noun"] == noun]
        for noun in tokens.targets
    }
    assert recorded == numina.counts("walkthrough")

    # interrupted: one setting's result lost; the stores are kept, so nothing is generated again
    (out / "settings" / f"{setting_id(setting)}.json").unlink()
    evaluated = []
    original = ablate.evaluate_settings
    monkeypatch.setattr(ablate, "evaluate_settings", lambda s, *a: evaluated.extend(s) or original(s, *a))
    monkeypatch.setattr(ablate, "capture_generation", lambda *a, **k: pytest.fail("generated again"))
    ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "sweep", "--grid", GRID, "--heads"))
    assert evaluated == [setting]
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), summary)

    # a rerun of the finished sweep opens no W&B run
    monkeypatch.setattr(ablate, "Tracker", lambda *a, **k: pytest.fail("a W&B run was opened"))
    ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "sweep", "--grid", GRID, "--heads"))


def test_a_grid_mixing_the_release_step_and_others_captures_both(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    grid = '{"reference_step": [null, 1]}'
    out = ablate.main(
        _args(tiny_folder, countbench_dir, tmp_path / "steps", "--grid", grid, "--prompts", "3")
    )
    assert len(pd.read_csv(out / "summary.csv")) == 2


@pytest.mark.slow
def test_a_folder_made_with_other_prompts_is_refused(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    grid = '{"cross_heads": ["mean"]}'
    ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "sweep", "--grid", grid, "--prompts", "3"))
    with pytest.raises(SystemExit, match=r"prompts: \[3\] before, \[3, 209\] now"):
        ablate.main(
            _args(tiny_folder, countbench_dir, tmp_path / "sweep", "--grid", grid, "--prompts", "3,209")
        )


def test_unknown_options_fail_before_any_work(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        ablate.main(
            _args(tiny_folder, countbench_dir, tmp_path / "a", "--grid", '{"head_rul": ["per_frame"]}')
        )
    with pytest.raises(SystemExit):  # the capture's, one per sweep
        ablate.main(
            _args(tiny_folder, countbench_dir, tmp_path / "a", "--grid", '{"estimator": ["release"]}')
        )
    assert "one sweep per --preset" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="head_rule=.fixd. is not one of"):
        ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "b", "--grid", '{"head_rule": ["fixd"]}'))
    assert not (tmp_path / "a").exists()


def test_a_segments_sweep_captures_its_components_and_lays_out_with_them(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    out = ablate.main(
        _args(
            tiny_folder, countbench_dir, tmp_path / "seg", "--heads", "--prompts", "3", "--layout", SEGMENTS
        )
    )
    segments = LayoutOptions(extraction="segments")
    assert json.loads((out / "config.json").read_text())["options"]["layout"] == asdict(segments)
    official = preset("official")
    differs = False
    with open_store(out / "stores" / "p003.h5") as store:
        tokens = PromptTokens.from_records(store.attrs["tokens"])
        components = store["self_attention/components"]
        assert components.sizes["component"] == 12  # what segments reads, not the release's 3
        frames, height, width = (components.sizes[d] for d in ("frame", "y", "x"))
        step = int(components.coords["step"][0])
        for layer in range(4):
            data = Phase1Data.from_store(store, step, layer, [layer])
            maps, _ = noun_cross_maps(
                data, noun_positions(tokens), official.cross_heads, official.concentration_measure
            )
            for head in range(4):
                chosen = components.sel(step=step, branch="cond", layer=layer, head=head).values
                chosen = chosen.astype(np.float32).reshape(frames, height * width, -1)
                expected = build_layout(chosen, maps, height, width, segments)
                release = build_layout(chosen, maps, height, width, official.layout)
                setting = {"head_rule": "fixed", "reference_layer": layer, "fixed_head": head}
                result = json.loads((out / "settings" / f"{setting_id(setting)}.json").read_text())
                recorded = {
                    noun: [row["count"] for row in result["rows"] if row["noun"] == noun]
                    for noun in tokens.targets
                }
                assert recorded == {noun: expected.counts(noun).tolist() for noun in tokens.targets}
                differs |= recorded != {noun: release.counts(noun).tolist() for noun in tokens.targets}
    assert differs  # the release's extraction on the same data counts otherwise: the check can fail


def test_the_grid_varies_layout_settings_over_the_sweeps_extraction(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    grid = (
        '{"layout.contrast": [1.01, 6.0], "head_rule": ["fixed"], "reference_layer": [1], "fixed_head": [2]}'
    )
    out = ablate.main(
        _args(
            tiny_folder,
            countbench_dir,
            tmp_path / "g",
            "--grid",
            grid,
            "--prompts",
            "3",
            "--layout",
            SEGMENTS,
        )
    )
    official = preset("official")
    with open_store(out / "stores" / "p003.h5") as store:
        tokens = PromptTokens.from_records(store.attrs["tokens"])
        components = store["self_attention/components"]
        frames, height, width = (components.sizes[d] for d in ("frame", "y", "x"))
        step = int(components.coords["step"][0])
        data = Phase1Data.from_store(store, step, 1, [1])
        maps, _ = noun_cross_maps(
            data, noun_positions(tokens), official.cross_heads, official.concentration_measure
        )
        chosen = components.sel(step=step, branch="cond", layer=1, head=2).values.astype(np.float32)
        chosen = chosen.reshape(frames, height * width, -1)
    counted = {}
    for contrast in (1.01, 6.0):
        setting = {"layout.contrast": contrast, "head_rule": "fixed", "reference_layer": 1, "fixed_head": 2}
        result = json.loads((out / "settings" / f"{setting_id(setting)}.json").read_text())
        counted[contrast] = [row["count"] for row in result["rows"]]
        expected = build_layout(
            chosen, maps, height, width, LayoutOptions(extraction="segments", contrast=contrast)
        )
        assert counted[contrast] == [c for noun in tokens.targets for c in expected.counts(noun).tolist()]
    assert sum(counted[1.01]) > sum(counted[6.0])  # a lower contrast keeps more segments
    assert "layout.contrast" in pd.read_csv(out / "summary.csv").columns


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ('{"layout.extraction": ["segments"]}', "one sweep per extraction"),
        ('{"layout.contrst": [2.0]}', "layout settings"),
        ('{"walkthrough_steps": [10]}', "benchmarks/walkthrough_options.py"),
    ],
)
def test_the_grid_cannot_change_the_extraction_or_name_unknown_layout_settings(
    tiny_folder: Path,
    countbench_dir: Path,
    tmp_path: Path,
    grid: str,
    message: str,
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit):
        ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "a", "--grid", grid))
    assert message in capsys.readouterr().err and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ('{"extractoin": "segments"}', "['extractoin'] are not layout options"),
        ('{"extraction": "segment"}', "layout extraction 'segment' is not one of"),
        ('{"contrast": 0.5}', "layout contrast must be a finite number > 1"),
        ('["segments"]', "--layout must be a JSON object"),
        ('{"extraction": segments}', "argument --layout: not valid JSON"),
    ],
)
def test_a_bad_layout_is_refused_before_any_work(
    tiny_folder: Path,
    countbench_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    layout: str,
    message: str,
) -> None:
    with pytest.raises(SystemExit):
        ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "a", "--heads", "--layout", layout))
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_resume_with_another_layout_is_refused(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    args = _args(tiny_folder, countbench_dir, tmp_path / "sweep", "--grid", '{"cross_heads": ["mean"]}')
    args += ["--prompts", "3"]
    ablate.main([*args, "--layout", SEGMENTS])
    ablate.main([*args, "--layout", SEGMENTS])  # the same layout resumes
    with pytest.raises(SystemExit, match='options.layout.extraction: "segments" before, "release" now'):
        ablate.main(args)  # the preset's layout
    with pytest.raises(SystemExit, match="options.layout.contrast: 3.0 before, 4.0 now"):
        ablate.main([*args, "--layout", '{"extraction": "segments", "contrast": 4.0}'])


def test_a_folder_captured_with_another_estimator_is_not_resumed(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path
) -> None:
    """official's estimator changed on 2026-12-06: its earlier walk-through stores hold other components."""
    args = [*_args(tiny_folder, countbench_dir, tmp_path / "sweep", "--grid", '{"cross_heads": ["mean"]}')]
    args += ["--prompts", "2"]
    out = ablate.main(args)
    config = json.loads((out / "config.json").read_text())
    assert (config["options"]["estimator"], config["code_version"]) == ("release", code_version())
    config["options"]["estimator"] = "converged"  # as the earlier official captured
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match='options.estimator: "converged" before, "release" now'):
        ablate.main(args)


@pytest.mark.parametrize(
    ("grid", "name"),
    [
        ("cache_threshold: [0.05, .nan]", "cache_threshold"),
        ("cache_threshold: [.inf]", "cache_threshold"),
        ("stride: [0]", "stride"),
        ("score_weights: [[1, 1, .nan]]", "score_weights[2]"),
    ],
)
def test_bad_numbers_in_the_grid_file_fail_before_any_work(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, grid: str, name: str
) -> None:
    grid_file = tmp_path / "grid.yaml"  # YAML reads .nan and .inf as floats: the grid check must catch them
    grid_file.write_text(grid + "\n")
    with pytest.raises(SystemExit, match="must be") as error:
        ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "a", "--grid-file", str(grid_file)))
    assert name in str(error.value)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "grid", ['{"cache_threshold": [0.05, NaN]}', '{"score_weights": [[1, 1, Infinity]]}']
)
def test_nan_in_the_json_grid_is_an_argument_error(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, grid: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        ablate.main(_args(tiny_folder, countbench_dir, tmp_path / "a", "--grid", grid))
    assert "--grid: got" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_end_to_end_scores_generate_and_count_each_setting_once(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _args(tiny_folder, countbench_dir, tmp_path / "e2e", "--grid", '{"follow_steps": [false, true]}')
    args = [*args, "--prompts", "3", "--end-to-end"]
    generated = []
    original = ablate.generate_video
    monkeypatch.setattr(
        ablate, "generate_video", lambda *a, **k: generated.append(a[3].follow_steps) or original(*a, **k)
    )
    out = ablate.main(args)
    summary = pd.read_csv(out / "summary.csv")
    assert generated == [False, True]  # one guided generation per setting and prompt
    assert summary["end_to_end_accuracy"].between(0, 1).all() and len(summary) == 2
    ablate.main(args)
    assert generated == [False, True]  # resumed: nothing generated again


class _BrightnessCounter:
    """A stand-in counter whose count depends on the frame's pixels: (mean brightness x 1000) mod 5."""

    def count(self, video: np.ndarray, noun: str) -> np.ndarray:
        return (np.asarray(video).reshape(len(video), -1).mean(axis=1) * 1000).astype(int) % 5


def test_fidelity_scores_the_layout_against_what_the_walk_through_drew(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        ablate, "prompt_counter", lambda *a, **k: lambda prompt, targets: _BrightnessCounter()
    )
    args = _args(tiny_folder, countbench_dir, tmp_path / "fid", "--grid", '{"cross_heads": ["mean"]}')
    out = ablate.main([*args, "--prompts", "3"])

    # the counted video is the walk-through's, which is the plain pipeline's with the same seed
    pipeline = load_pipeline(str(tiny_folder), torch.float32, "cpu")
    item = load_countbench(countbench_dir)[3]
    video = plain_generation(
        pipeline, item.prompt, GenerationSettings(num_frames=9, height=64, width=64, steps=4)
    )
    drawn = json.loads((out / "stores" / "p003.drawn.json").read_text())
    assert drawn == {noun: _BrightnessCounter().count(video, noun).tolist() for noun in item.targets}
    assert len(set(next(iter(drawn.values())))) > 1  # the planted counts vary over frames

    # each decoded frame's drawn count meets the layout count of its latent frame (9 frames: 0 | 1-4 | 5-8)
    result = json.loads(next((out / "settings").glob("*.json")).read_text())
    layout = {(r["noun"], r["frame"]): r["count"] for r in result["rows"]}
    expected = [
        (noun, frame, drawn[noun][frame], layout[(noun, latent)])
        for noun in item.targets
        for latent, frames in enumerate([[0], [1, 2, 3, 4], [5, 6, 7, 8]])
        for frame in frames
    ]
    assert sorted((r["noun"], r["frame"], r["drawn"], r["count"]) for r in result["fidelity_rows"]) == sorted(
        expected
    )
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    assert summary["fidelity"] == pytest.approx(np.mean([d == c for _, _, d, c in expected]))
    assert summary["fidelity_mean_signed_error"] == pytest.approx(np.mean([c - d for _, _, d, c in expected]))

    # a setting scored before fidelity existed is scored again; a store without drawn counts is redone
    path = next((out / "settings").glob("*.json"))
    path.write_text(json.dumps({k: v for k, v in result.items() if k != "fidelity_rows"}))
    (out / "stores" / "p003.drawn.json").unlink()
    generated = []
    original = ablate.capture_generation
    monkeypatch.setattr(
        ablate, "capture_generation", lambda *a, **k: generated.append(1) or original(*a, **k)
    )
    ablate.main([*args, "--prompts", "3"])
    assert generated == [1] and json.loads(path.read_text())["fidelity_rows"] == result["fidelity_rows"]


def test_the_chance_level_is_the_best_constant_count() -> None:
    # p1 drew 3, 3, 4 and p2 drew 0, 4: counting 4 everywhere is exact on 1/3 of p1 and 1/2 of p2
    # (mean 5/12), counting 3 on 2/3 and 0 (1/3); 0 on 0 and 1/2 (1/4).
    rows = [
        {"prompt_id": 1, "frame": f, "noun": "cat", "drawn": d, "count": 0} for f, d in enumerate([3, 3, 4])
    ]
    rows += [
        {"prompt_id": 2, "frame": f, "noun": "dog", "drawn": d, "count": 0} for f, d in enumerate([0, 4])
    ]
    chance = constant_fidelity(rows)
    assert chance["count"] == 4 and chance["fidelity"] == pytest.approx(5 / 12)
