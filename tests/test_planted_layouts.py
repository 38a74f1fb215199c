"""numina.evaluation.planted: the scenes keep their rules, the scores are right, the method's layout on
an easy scene, and benchmarks/layout_planted.py end to end on a tiny suite."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from experiment_scripts import load_benchmark

from numina.capture.reductions import reduce_self_attention
from numina.capture.spec import SelfAttentionCapture
from numina.evaluation.planted import (
    DIFFICULTIES,
    EXTRACTIONS,
    NOUN_MAP_CYCLE,
    CaseSpec,
    PlantedCase,
    accuracy_table,
    benchmark_suite,
    disc,
    generate_case,
    iou_matrix,
    match_frame,
    own_instance_mass,
    run_benchmark,
    truth_extraction,
    wilson_interval,
)
from numina.method.layout import build_layout
from numina.method.presets import preset


def _chebyshev(a: np.ndarray, b: np.ndarray) -> int:
    """Smallest Chebyshev distance between the positions of two masks."""
    pa, pb = np.argwhere(a), np.argwhere(b)
    return int(np.abs(pa[:, None, :] - pb[None, :, :]).max(axis=-1).min())


SPECS = [
    CaseSpec(16, 16, 3, radius=(1, 2), difficulty="easy", seed=1),
    CaseSpec(32, 32, 4, radius=(2, 4), others=2, difficulty="medium", noun_map="diffuse", seed=2),
    CaseSpec(30, 52, 6, radius=(1, 3), adjacent_pairs=3, difficulty="weak", seed=3),
    CaseSpec(24, 40, 3, radius=(2, 3), adjacent_pairs=1, gap=3, frames=3, seed=4),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: f"{spec.grid}-k{spec.k}")
def test_scenes_keep_their_counts_radii_and_gaps(spec: CaseSpec) -> None:
    case = generate_case(spec)
    n = spec.k + spec.others
    assert case.instances.shape == (spec.frames, spec.height, spec.width)
    assert case.centres.shape == (spec.frames, n, 2)
    assert all(spec.radius[0] <= r <= spec.radius[1] for r in case.radii)
    for frame, labels in enumerate(case.instances):
        np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
        for index, ((cy, cx), radius) in enumerate(zip(case.centres[frame], case.radii, strict=True)):
            # Each instance is exactly its disc, whole and inside the grid (so none overwrote another).
            window = labels[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] == index + 1
            np.testing.assert_array_equal(window, disc(int(radius)))
            assert (labels == index + 1).sum() == disc(int(radius)).sum()
        for i, j in combinations(range(n), 2):
            distance = _chebyshev(labels == i + 1, labels == j + 1)
            partners = j == i + 1 and i % 2 == 0 and j < 2 * spec.adjacent_pairs
            if partners and frame == 0:
                assert distance == 2  # exactly one background token between them
            else:
                assert distance >= (2 if partners else spec.gap + 1)
        np.testing.assert_array_equal(case.truth[frame], np.where(labels <= spec.k, labels, 0))
    steps = np.abs(np.diff(case.centres, axis=0))
    assert steps.max(initial=0) <= 1  # small motion: at most one token per frame and axis


@pytest.mark.parametrize("level", list(DIFFICULTIES))
def test_self_maps_are_row_distributions(level: str) -> None:
    case = generate_case(CaseSpec(16, 20, 2, radius=(2, 3), difficulty=level, frames=2, seed=5))
    assert case.self_maps.shape == (2, 320, 320) and case.self_maps.dtype == np.float32
    assert (case.self_maps >= 0).all()
    np.testing.assert_allclose(case.self_maps.sum(axis=-1), 1.0, atol=1e-5)
    assert case.noun_maps.shape == (2, 16, 20) and (case.noun_maps > 0).all()


def test_difficulty_levels_make_heads_less_sharp() -> None:
    masses = [
        own_instance_mass(generate_case(CaseSpec(30, 52, 4, radius=(2, 4), difficulty=level, seed=6)))
        for level in DIFFICULTIES
    ]
    assert masses[0] == pytest.approx(0.95, abs=1e-3)  # clean: exactly the level's own mass
    assert all(a > b for a, b in zip(masses, masses[1:], strict=False)), masses


def test_noun_map_covers_only_the_nouns_instances() -> None:
    case = generate_case(CaseSpec(32, 32, 2, radius=(3, 3), others=2, difficulty="clean", seed=7))
    noun_map, labels = case.noun_maps[0], case.instances[0]
    peaks = [noun_map[labels == label].max() for label in (1, 2)]
    elsewhere = [noun_map[labels == label].max() for label in (3, 4)]
    assert max(elsewhere) < 0.1 * min(peaks)
    assert case.truth[0].max() == 2 and set(np.unique(case.truth[0])) == {0, 1, 2}


def test_generation_is_seeded() -> None:
    spec = CaseSpec(16, 16, 3, radius=(1, 2), difficulty="weak", frames=2, seed=11)
    first, again = generate_case(spec), generate_case(spec)
    for name in ("radii", "centres", "instances", "self_maps", "noun_maps"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    other = generate_case(CaseSpec(16, 16, 3, radius=(1, 2), difficulty="weak", frames=2, seed=12))
    assert not np.array_equal(first.self_maps, other.self_maps)


def test_bad_specs_and_crowded_scenes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="radius range"):
        CaseSpec(16, 16, 1, radius=(3, 2))
    with pytest.raises(ValueError, match="adjacent pairs"):
        CaseSpec(16, 16, 1, adjacent_pairs=1)
    with pytest.raises(ValueError, match="difficulty 'hard'"):
        CaseSpec(16, 16, 1, difficulty="hard")
    with pytest.raises(ValueError, match="gap must be >= 1"):
        CaseSpec(16, 16, 1, gap=0)
    with pytest.raises(ValueError, match="Could not place 12 instances"):
        generate_case(CaseSpec(10, 10, 12, radius=(3, 3)))


# --- scores ----------------------------------------------------------------------------------------


def _squares(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]], labels: list[int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int32)
    for (y0, y1, x0, x1), label in zip(boxes, labels, strict=True):
        out[y0:y1, x0:x1] = label
    return out


TRUTH = _squares((10, 10), [(1, 3, 1, 3), (6, 8, 6, 8)], [1, 2])


def test_iou_on_a_hand_example() -> None:
    # The second square shifted right by one token: overlap 2 of a union of 6 positions.
    predicted = _squares((10, 10), [(1, 3, 1, 3), (6, 8, 7, 9)], [7, 3])
    iou, truth_ids, predicted_ids = iou_matrix(TRUTH, predicted)
    np.testing.assert_array_equal(truth_ids, [1, 2])
    np.testing.assert_array_equal(predicted_ids, [3, 7])
    np.testing.assert_allclose(iou, [[0.0, 1.0], [2 / 6, 0.0]])
    match = match_frame(TRUTH, predicted)
    assert (match.count, match.matched, match.exact) == (2, 1, False)  # right count, wrong instance


def test_perfect_merged_and_background_layouts() -> None:
    relabelled = np.where(TRUTH == 1, 5, np.where(TRUTH == 2, 9, -1))  # other ids; -1 is background
    perfect = match_frame(TRUTH, relabelled)
    assert perfect.exact and perfect.ious.tolist() == [1.0, 1.0]
    merged = match_frame(TRUTH, np.where(TRUTH > 0, 1, 0))
    assert (merged.count, merged.matched, merged.exact) == (1, 1, False)
    extra = TRUTH.copy()
    extra[9, :] = 3
    assert (match_frame(TRUTH, extra).count, match_frame(TRUTH, extra).exact) == (3, False)
    empty = match_frame(np.zeros((4, 4), int), np.zeros((4, 4), int))
    assert empty.exact and empty.target == 0


def test_merged_pair_iou_is_half_and_still_counts_one_match() -> None:
    """A merged pair of equal instances has IoU exactly 0.5 with each: one of them is matched."""
    merged = np.where(TRUTH > 0, 1, 0)
    np.testing.assert_allclose(iou_matrix(TRUTH, merged)[0], [[0.5], [0.5]])
    assert match_frame(TRUTH, merged).matched == 1


def test_wilson_interval() -> None:
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    z, n, p = 1.959964, 20, 0.75
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    np.testing.assert_allclose(wilson_interval(15, 20), (centre - half, centre + half), atol=1e-5)


def test_the_truth_scores_one_and_a_failing_extraction_is_recorded() -> None:
    specs, notes = benchmark_suite([(16, 16)], [0, 2, 3], ["clean", "weak"], 2, seed=0)
    assert not notes and len(specs) == 12

    def failing(case: PlantedCase) -> np.ndarray:
        raise ValueError("no layout")

    run = run_benchmark(specs, {"truth": truth_extraction, "failing": failing}, keep=[0])
    table = accuracy_table(run.rows, "k").set_index(["extraction", "k"])
    assert (table.loc["truth", ["exact", "count_right"]] == 1.0).all().all()
    assert (table.loc["truth", "cases"] == 4).all()
    assert (table.loc["failing", "exact"] == 0.0).all() and (table.loc["failing", "errors"] == 4).all()
    assert run.rows.loc[run.rows["extraction"] == "failing", "error"].str.contains("no layout").all()
    assert len(run.examples) == 1 and set(run.examples[0].predicted) == {"truth"}


def test_a_case_is_exact_only_when_every_frame_is() -> None:
    rows = pd.DataFrame(
        {
            "extraction": "x",
            "case": [0, 0, 1],
            "k": 2,
            "frame": [0, 1, 0],
            "target": 2,
            "count": [2, 3, 2],
            "exact": [True, False, True],
            "error": "",
        }
    )
    table = accuracy_table(rows).iloc[0]
    assert (table["cases"], table["exact"], table["count_right"], table["mean_abs_error"]) == (
        2,
        0.5,
        0.5,
        0.25,
    )
    with pytest.raises(ValueError, match="cannot group by"):
        accuracy_table(rows, "grid")


def test_suite_is_seeded_per_cell_and_names_cells_left_out() -> None:
    alone, _ = benchmark_suite([(30, 52)], [3], ["easy"], 8, seed=1)
    together, notes = benchmark_suite([(16, 16), (30, 52)], [3, 11], ["easy"], 8, seed=1)
    assert [s for s in together if s.grid == "30x52" and s.k == 3] == alone  # other cells change nothing
    assert notes == ["16x16 k=11: 11 instances do not fit the grid; cells left out"]
    assert {(s.scenario, s.noun_map) for s in alone} == set(NOUN_MAP_CYCLE)
    motion = [s for s in alone if s.scenario == "motion"]
    assert motion and all(s.frames == 3 for s in motion)
    assert all(s.adjacent_pairs == 1 for s in alone if s.scenario == "adjacent")
    assert all(s.others > 0 for s in alone if s.scenario == "others")


# --- the method's layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_official_layout_finds_two_clean_large_instances(seed: int) -> None:
    case = generate_case(CaseSpec(32, 32, 2, radius=(5, 5), difficulty="clean", seed=seed))
    labels = EXTRACTIONS["official"](case)
    match = match_frame(case.truth[0], labels[0])
    assert match.exact and (match.ious > 0.9).all()


def test_official_layout_counts_background_when_the_noun_is_absent() -> None:
    """What the release's rule does with k = 0 (a flat noun map puts every position in the focus
    mask, so every MeanShift cluster passes the 20% rule): recorded, not endorsed."""
    case = generate_case(CaseSpec(32, 32, 0, radius=(3, 3), others=2, difficulty="clean", seed=0))
    assert match_frame(case.truth[0], EXTRACTIONS["official"](case)[0]).count > 0


@pytest.mark.slow
def test_official_layout_is_the_releases_on_noisy_scenes() -> None:
    """`official` (float64 scikit-learn-exact components, the project's MeanShift) against the release's
    formulas run with scikit-learn itself: the same labels, frame by frame. Clean scenes are left out:
    their equal instances give exactly repeated singular values, whose components only rounding picks."""
    specs, _ = benchmark_suite([(16, 16)], [1, 3, 6], ["easy", "medium", "weak"], 1, seed=4)
    specs += benchmark_suite([(30, 52)], [3], ["medium"], 1, seed=4)[0]  # the Wan2.1 480p grid
    run = run_benchmark(specs, {"release": EXTRACTIONS["release"], "official": EXTRACTIONS["official"]})
    official = run.rows[run.rows["extraction"] == "official"]
    assert len(official) == sum(spec.frames for spec in specs) and official["error"].eq("").all()
    assert official["same_as_first"].all()
    assert "same_as_first" not in run.rows[run.rows["extraction"] == "release"].dropna(axis=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("difficulty", ["easy", "medium", "weak"])
def test_official_layout_is_the_same_on_cpu_and_gpu(difficulty: str) -> None:
    """The release's components run in float64 everywhere: the same maps give the same labels. Clean
    scenes are left out, as in the test against scikit-learn above: their equal instances give exactly
    repeated singular values, whose components only rounding picks (on an H100, k = 8 of the clean
    level gave another label to 30 of 1,560 tokens)."""
    part = SelfAttentionCapture(layers=(0,), scores=False, estimator=preset("official").estimator)
    for k in (1, 2, 4, 8):
        case = generate_case(CaseSpec(30, 52, k, difficulty=difficulty, seed=k))
        labels = []
        for device in ("cpu", "cuda"):
            maps = torch.from_numpy(case.self_maps)[None].to(device)
            components = reduce_self_attention(maps, 30, 52, part)["components"][0].cpu().numpy()
            layout = build_layout(
                components.reshape(case.spec.frames, 30 * 52, -1), {"noun": case.noun_maps}, 30, 52
            )
            labels.append(layout["noun"])
        np.testing.assert_array_equal(*labels, err_msg=f"k={k}")


# --- the script ------------------------------------------------------------------------------------


def _script():
    return load_benchmark("layout_planted")


def test_script_rejects_bad_options_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    script = _script()
    for argv, message in [
        (["--grids", "30by52"], "is not HxW"),
        (["--ks", "8-2"], "runs backwards"),
        (["--cases-per-cell", "0"], "must be an integer >= 1"),
        (["--examples", "-1"], "must be an integer >= 0"),
        (["--extractions", "official,magic"], "extraction ['magic']"),
        (["--quick", "--grids", "16x16"], "--quick sets"),
    ]:
        with pytest.raises(SystemExit):
            script.main([*argv, "--out", str(tmp_path / "out")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_script_writes_tables_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "planted"
    argv = ["--grids", "16x16", "--ks", "1-2", "--difficulties", "clean", "--cases-per-cell", "1"]
    assert _script().main([*argv, "--extractions", "truth", "--examples", "2", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary_k.csv")
    assert summary["exact"].tolist() == [1.0, 1.0] and summary["cases"].tolist() == [1, 1]
    assert "| truth | 1 | 1 | 1.00 [0.21, 1.00]" in (out / "summary.md").read_text()
    assert json.loads((out / "config.json").read_text())["cases"] == 2
    for name in ("rows.csv", "accuracy_by_k.png", "examples.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "same_labels.csv").exists()  # one extraction: nothing to compare


def test_same_labels_counts_the_later_extractions_frames() -> None:
    rows = pd.DataFrame(
        {
            "extraction": ["release"] * 3 + ["official"] * 3 + ["segments"] * 3,
            "difficulty": ["easy", "easy", "weak"] * 3,
            "same_as_first": [None] * 3 + [True, False, True] + [False, False, False],
        }
    )
    table = _script().same_labels(rows).set_index(["extraction", "difficulty"])
    assert table.loc[("official", "easy")].tolist() == [2, 0.5]
    assert table.loc[("official", "weak")].tolist() == [1, 1.0]
    assert table.loc[("segments", "easy")].tolist() == [2, 0.0] and "release" not in table.index
