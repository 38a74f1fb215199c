"""numina.evaluation.accuracy: scores on a hand-computed table, breakdowns, cluster bootstrap, paired test,
where the counts moved."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from numina.evaluation.accuracy import (
    accuracy_by_categories,
    accuracy_by_target,
    accuracy_summary,
    count_changes,
    counts_table,
    fidelity_summary,
    frame_scores,
    paired_comparison,
    video_scores,
)

# Hand-built table, method "baseline", seeds 0 and 1, frames 0-2.
#   p1: "cat" target 2.            p2: "dog" target 3, "ball" target 1.
#   p1 s0: cat 2,2,3 -> frame scores 1,1,0          -> accuracy 2/3, |err| mean 1/3
#   p1 s1: cat 2,2,2 -> 1,1,1                       -> accuracy 1,   |err| mean 0, all frames exact
#   p2 s0: dog 3,3,2 ball 1,0,1 -> 1, 1/2, 1/2      -> accuracy 2/3, |err| mean (1 + 1) / 6 = 1/3
#   p2 s1: dog 0,0,0 ball 1,1,0 -> 1/2, 1/2, 0      -> accuracy 1/3, |err| mean (9 + 1) / 6 = 5/3
#   prompt scores: p1 (2/3 + 1) / 2 = 5/6, p2 (2/3 + 1/3) / 2 = 1/2; benchmark (5/6 + 1/2) / 2 = 2/3.
#   By target (per (prompt, noun) pair, mean over seeds and frames of per-noun exactness):
#     target 1: (p2, ball) = (2/3 + 2/3) / 2 = 2/3; target 2: (p1, cat) = 5/6; target 3: (p2, dog) = 1/3.
#   By number of categories: 1 -> p1 = 5/6, 2 -> p2 = 1/2.
HAND_COUNTS = {
    ("p1", 0): {"cat": (2, [2, 2, 3])},
    ("p1", 1): {"cat": (2, [2, 2, 2])},
    ("p2", 0): {"dog": (3, [3, 3, 2]), "ball": (1, [1, 0, 1])},
    ("p2", 1): {"dog": (3, [0, 0, 0]), "ball": (1, [1, 1, 0])},
}


def _records(videos: dict, method: str = "baseline") -> list[dict]:
    rows = []
    for (prompt_id, seed), nouns in videos.items():
        for noun, (target, counts) in nouns.items():
            for frame, count in enumerate(counts):
                rows.append(
                    {
                        "prompt_id": prompt_id,
                        "seed": seed,
                        "method": method,
                        "frame": frame,
                        "noun": noun,
                        "target": target,
                        "count": count,
                    }
                )
    return rows


@pytest.fixture
def hand() -> pd.DataFrame:
    return counts_table(_records(HAND_COUNTS))


def test_frame_scores_by_hand(hand: pd.DataFrame) -> None:
    frames = frame_scores(hand).set_index(["prompt_id", "seed", "frame"])
    expected = {
        ("p1", 0): [1, 1, 0],
        ("p1", 1): [1, 1, 1],
        ("p2", 0): [1, 0.5, 0.5],
        ("p2", 1): [0.5, 0.5, 0],
    }
    for (prompt_id, seed), scores in expected.items():
        for frame, score in enumerate(scores):
            assert frames.loc[(prompt_id, seed, frame), "score"] == score
    assert frames.loc[("p2", 0, 0), "n_nouns"] == 2
    assert frames.loc[("p1", 0, 0), "n_nouns"] == 1
    assert bool(frames.loc[("p2", 0, 0), "all_exact"]) and not frames.loc[("p2", 0, 1), "all_exact"]


def test_video_scores_by_hand(hand: pd.DataFrame) -> None:
    videos = video_scores(hand).set_index(["prompt_id", "seed"])
    assert videos["accuracy"].to_dict() == pytest.approx(
        {("p1", 0): 2 / 3, ("p1", 1): 1.0, ("p2", 0): 2 / 3, ("p2", 1): 1 / 3}, abs=1e-12
    )
    assert videos["mean_abs_error"].to_dict() == pytest.approx(
        {("p1", 0): 1 / 3, ("p1", 1): 0.0, ("p2", 0): 1 / 3, ("p2", 1): 5 / 3}, abs=1e-12
    )
    assert videos["all_frames_exact"].to_dict() == {
        ("p1", 0): False,
        ("p1", 1): True,
        ("p2", 0): False,
        ("p2", 1): False,
    }
    assert videos["n_categories"].to_dict() == {("p1", 0): 1, ("p1", 1): 1, ("p2", 0): 2, ("p2", 1): 2}
    assert videos["max_target"].to_dict() == {("p1", 0): 2, ("p1", 1): 2, ("p2", 0): 3, ("p2", 1): 3}
    assert set(videos["n_frames"]) == {3}


def test_benchmark_mean_by_hand(hand: pd.DataFrame) -> None:
    summary = accuracy_summary(hand, n_resamples=500)
    assert list(summary["method"]) == ["baseline"]
    row = summary.iloc[0]
    assert row["accuracy"] == pytest.approx(2 / 3, abs=1e-12)
    assert row["n_prompts"] == 2 and row["n_units"] == 2
    # Two prompts with scores 5/6 and 1/2: every resample mean is one of 1/2, 2/3, 5/6.
    assert 0.5 - 1e-12 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 5 / 6 + 1e-12


def test_breakdowns_by_hand(hand: pd.DataFrame) -> None:
    by_target = accuracy_by_target(hand, n_resamples=200).set_index("target")
    assert by_target["accuracy"].to_dict() == pytest.approx({1: 2 / 3, 2: 5 / 6, 3: 1 / 3}, abs=1e-12)
    assert by_target["n_units"].to_dict() == {1: 1, 2: 1, 3: 1}
    by_cat = accuracy_by_categories(hand, n_resamples=200).set_index("n_categories")
    assert by_cat["accuracy"].to_dict() == pytest.approx({1: 5 / 6, 2: 1 / 2}, abs=1e-12)
    # Same through the generic entry point, combined with an extra column.
    extra = hand.assign(model="wan-1.3b")
    both = accuracy_summary(extra, by=["model", "target"], n_resamples=200)
    assert list(both.columns[:3]) == ["method", "model", "target"]
    assert both["accuracy"].tolist() == pytest.approx([2 / 3, 5 / 6, 1 / 3], abs=1e-12)


def test_by_target_pools_pairs_of_one_prompt() -> None:
    # "3 cats and 3 dogs": both pairs go to target 3; cat exact on 1/2 frames, dog on 2/2 -> 3/4.
    rows = _records({("q", 0): {"cat": (3, [3, 0]), "dog": (3, [3, 3])}})
    row = accuracy_by_target(counts_table(rows), n_resamples=100).iloc[0]
    assert row["target"] == 3 and row["n_units"] == 2 and row["n_prompts"] == 1
    assert row["accuracy"] == pytest.approx(0.75)


def _graded(n_prompts: int, seeds_of: dict[int, int] | None = None, method: str = "baseline") -> list[dict]:
    """Prompt i: one noun, target 1, 4 frames, (i % 5) exact frames, identical on every seed."""
    seeds_of = seeds_of or {}
    videos = {}
    for i in range(n_prompts):
        exact = i % 5
        counts = [1] * min(exact, 4) + [0] * (4 - min(exact, 4))
        for seed in range(seeds_of.get(i, 1)):
            videos[(f"p{i:02d}", seed)] = {"obj": (1, counts)}
    return _records(videos, method)


def test_bootstrap_ci_contains_mean_and_is_seeded() -> None:
    counts = counts_table(_graded(12))
    a = accuracy_summary(counts, seed=3).iloc[0]
    b = accuracy_summary(counts, seed=3).iloc[0]
    c = accuracy_summary(counts, seed=4).iloc[0]
    assert a["ci_low"] < a["accuracy"] < a["ci_high"]
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])
    wider = accuracy_summary(counts, seed=3, confidence=0.99).iloc[0]
    assert wider["ci_low"] <= a["ci_low"] and wider["ci_high"] >= a["ci_high"]


def test_bootstrap_resamples_prompts_not_rows() -> None:
    # Extra identical seeds add no information about prompts: with prompt-level resampling the mean and
    # the CI stay exactly the same. Resampling rows or videos would (a) shift the mean towards the
    # repeated prompt and (b) shrink the interval roughly by sqrt(20) when every prompt is repeated.
    one = accuracy_summary(counts_table(_graded(10)), seed=7).iloc[0]
    lopsided_counts = counts_table(_graded(10, seeds_of={4: 30}))
    lopsided = accuracy_summary(lopsided_counts, seed=7).iloc[0]
    repeated = accuracy_summary(counts_table(_graded(10, seeds_of=dict.fromkeys(range(10), 20))), seed=7)
    repeated = repeated.iloc[0]
    for other in (lopsided, repeated):
        assert other["accuracy"] == pytest.approx(one["accuracy"], abs=1e-12)
        assert other["ci_low"] == pytest.approx(one["ci_low"], abs=1e-12)
        assert other["ci_high"] == pytest.approx(one["ci_high"], abs=1e-12)
        assert other["n_prompts"] == 10
    # The check has power: the per-video mean of the lopsided table is far from the per-prompt mean.
    assert video_scores(lopsided_counts)["accuracy"].mean() > one["accuracy"] + 0.2
    assert one["ci_high"] - one["ci_low"] > 0.2


def _planted(gain_prompts: int, n_prompts: int = 10) -> pd.DataFrame:
    """Baseline: prompt i has (i % 3) of 4 frames exact; numina: one more exact frame on the first
    `gain_prompts` prompts (a gain of exactly 1/4 there), the same elsewhere. Two seeds each."""
    baseline, numina = {}, {}
    for i in range(n_prompts):
        k = i % 3
        extra = 1 if i < gain_prompts else 0
        for seed in (0, 1):
            baseline[(f"p{i}", seed)] = {"obj": (2, [2] * k + [0] * (4 - k))}
            numina[(f"p{i}", seed)] = {"obj": (2, [2] * (k + extra) + [0] * (4 - k - extra))}
    return counts_table(_records(baseline, "baseline") + _records(numina, "numina"))


def test_paired_comparison_planted_gain() -> None:
    result = paired_comparison(_planted(gain_prompts=8), seed=1)
    assert result.n_prompts == 10 and result.n_videos == 20
    assert result.difference == pytest.approx(8 * 0.25 / 10, abs=1e-12)
    # Baseline: k = 0,1,2,0,1,2,0,1,2,0 -> mean 9/40; numina adds 2/10.
    assert result.baseline_accuracy == pytest.approx(9 / 40, abs=1e-12)
    assert result.other_accuracy == pytest.approx(9 / 40 + 0.2, abs=1e-12)
    assert 0 < result.ci_low <= result.difference <= result.ci_high <= 0.25
    assert result.p_value < 0.05
    assert "wilcoxon" in result.test
    assert result == paired_comparison(_planted(gain_prompts=8), seed=1)


def test_paired_comparison_identical_methods() -> None:
    result = paired_comparison(_planted(gain_prompts=0))
    assert result.difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert result.baseline_accuracy == result.other_accuracy


def test_paired_comparison_uses_only_shared_videos() -> None:
    table = _planted(gain_prompts=10)
    # Drop numina's seed 1 of p0 and all of p9's numina videos: p9 leaves, p0 keeps seed 0 only.
    drop = (table["method"] == "numina") & (
        ((table["prompt_id"] == "p0") & (table["seed"] == 1)) | (table["prompt_id"] == "p9")
    )
    result = paired_comparison(table[~drop])
    assert result.n_prompts == 9 and result.n_videos == 17
    assert result.difference == pytest.approx(0.25, abs=1e-12)


def test_bad_input_messages(hand: pd.DataFrame) -> None:
    rows = _records(HAND_COUNTS)
    with pytest.raises(ValueError, match=r"lacks column\(s\) count"):
        counts_table([{k: v for k, v in r.items() if k != "count"} for r in rows])
    negative = [dict(r) for r in rows]
    negative[3]["count"] = -1
    with pytest.raises(ValueError, match=r"'count' has 1 negative value\(s\)"):
        counts_table(negative)
    with pytest.raises(ValueError, match="must hold integers"):
        counts_table([dict(r, target=1.5) for r in rows])
    with pytest.raises(ValueError, match="repeat a"):
        counts_table(rows + rows[:1])
    with pytest.raises(ValueError, match="does not list the same nouns on every frame"):
        counts_table(rows[:-1])
    with pytest.raises(ValueError, match="counts table is empty"):
        counts_table([])
    with pytest.raises(ValueError, match="cannot group by nope"):
        accuracy_summary(hand, by="nope")


def test_paired_comparison_errors() -> None:
    left = _records({("p1", 0): {"cat": (1, [1])}}, "baseline")
    right = _records({("p2", 0): {"cat": (1, [1])}}, "numina")
    no_shared = r"no shared \(prompt_id, seed\) videos.*only in 'baseline': \['p1'\]"
    with pytest.raises(ValueError, match=no_shared):
        paired_comparison(counts_table(left + right))
    with pytest.raises(ValueError, match=r"method\(s\) 'numina' not in the counts table"):
        paired_comparison(counts_table(left))


def test_count_changes_by_hand(hand: pd.DataFrame) -> None:
    # Against HAND_COUNTS (the baseline), "numina" per frame:
    #   p1 s0 cat (target 2): baseline 2,2,3 -> numina 2,1,2: right kept, right made wrong, over better
    #   p1 s1 cat: baseline 2,2,2 -> numina 2,2,2: right kept x3
    #   p2 s0 dog (3): 3,3,2 -> 3,3,1: right x2 kept, under worse; ball (1): 1,0,1 -> 1,0,3: right kept,
    #     under unchanged, right made wrong
    #   p2 s1 dog: 0,0,0 -> 1,2,0: under better x2, under unchanged; ball: 1,1,0 -> 1,1,1: right x2 kept,
    #     under better
    # So over 1 (1 better); under 6 (3 better, 1 worse, 2 unchanged); right 11 (2 made wrong, 9 kept).
    other = {
        ("p1", 0): {"cat": (2, [2, 1, 2])},
        ("p1", 1): {"cat": (2, [2, 2, 2])},
        ("p2", 0): {"dog": (3, [3, 3, 1]), "ball": (1, [1, 0, 3])},
        ("p2", 1): {"dog": (3, [1, 2, 0]), "ball": (1, [1, 1, 1])},
    }
    both = pd.concat([hand, counts_table(_records(other, "numina"))])
    row = count_changes(both).set_index("method").loc["numina"]
    assert row["rows"] == 18
    assert [row["over"], row["over_better"], row["over_worse"], row["over_unchanged"]] == [1, 1, 0, 0]
    assert [row["under"], row["under_better"], row["under_worse"], row["under_unchanged"]] == [6, 3, 1, 2]
    assert [row["right"], row["right_worse"], row["right_unchanged"]] == [11, 2, 9]
    with pytest.raises(ValueError, match="method 'baseline' not in the counts table"):
        count_changes(counts_table(_records(other, "numina")))


G4_CPU = Path(__file__).resolve().parents[1] / "benchmarks/results/countworld2_step6242/g4_cpu"


def test_count_changes_gives_the_published_g4_table() -> None:
    """The "where the counts moved" rows of RESULTS (G4 on the CPU) from the committed counts."""
    table = count_changes(pd.read_csv(G4_CPU / "presets_paper_improved" / "results.csv")).set_index("method")
    columns = ["over", "over_better", "over_worse", "over_unchanged", "under", "under_better"]
    columns += ["under_worse", "under_unchanged", "right", "right_worse"]
    assert table.loc["paper", columns].tolist() == [21, 5, 5, 11, 15, 5, 1, 9, 27, 7]
    assert table.loc["improved", columns].tolist() == [21, 3, 3, 15, 15, 4, 1, 10, 27, 9]


def test_fidelity_weighs_prompts_equally_and_signs_the_error() -> None:
    # p1: 4 rows, drawn 3,3,3,3 against layout 3,3,2,5 -> exact 2/4, |err| (0+0+1+2)/4 = 3/4,
    #     signed (0+0-1+2)/4 = 1/4.   p2: 2 rows, drawn 1,0 against 0,0 -> exact 1/2, |err| 1/2,
    #     signed -1/2.   Means over prompts: fidelity 1/2, |err| 5/8, signed -1/8.
    rows = [
        {"prompt_id": "p1", "frame": f, "noun": "cat", "drawn": 3, "count": c}
        for f, c in enumerate([3, 3, 2, 5])
    ] + [{"prompt_id": "p2", "frame": f, "noun": "dog", "drawn": d, "count": 0} for f, d in enumerate([1, 0])]
    summary = fidelity_summary(rows, n_resamples=200)
    assert summary["fidelity"] == pytest.approx(0.5)
    assert summary["mean_abs_error"] == pytest.approx(5 / 8)
    assert summary["mean_signed_error"] == pytest.approx(-1 / 8)
    assert summary["n_prompts"] == 2 and summary["ci_low"] <= 0.5 <= summary["ci_high"]
    with pytest.raises(ValueError, match="drawn"):
        fidelity_summary([{"prompt_id": "p1", "frame": 0, "noun": "cat", "count": 1}])
