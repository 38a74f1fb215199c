"""Counting-accuracy metrics for CountBench runs: frame, video and benchmark scores, breakdowns, paired tests.

The input is a tidy "counts" table, one row per (prompt_id, seed, method, frame, noun) with the integer
columns `target` (the prompt's count for that noun) and `count` (what the counter found on that decoded
frame); extra columns are kept and may be used for grouping. The release's protocol (METHOD.md,
"Evaluation"): frame score = fraction of the prompt's nouns counted exactly; video (prompt) score = mean
over frames; benchmark = mean over prompts. With several seeds per prompt, a prompt's score is the mean
over its seeds of the video scores, so every prompt weighs the same whatever its number of seeds.

`count_changes` says where a method moved the counts against the baseline's: among the (prompt, seed,
frame, noun) rows the baseline over-counted, under-counted or got right, how many the method made
better, worse or left at the same error; an accuracy difference near zero can hide many moves both ways.

`fidelity_summary` scores a layout instead of a video: its counts against those the counter found
on the video the layout was taken from (drawn), not against the targets.

Uncertainty is a percentile bootstrap that resamples PROMPTS (a cluster bootstrap: a prompt's seeds,
frames and nouns stay together), with a fresh `numpy.random.default_rng(seed)` for every group, so the
results are deterministic given `seed` and do not depend on which other groups are present.

May import numpy, pandas and scipy only (no torch, no other numina module).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

KEY_COLUMNS = ("prompt_id", "seed", "method", "frame", "noun")
VALUE_COLUMNS = ("target", "count")
REQUIRED_COLUMNS = KEY_COLUMNS + VALUE_COLUMNS
FRAME_KEYS = ["prompt_id", "seed", "method", "frame"]
VIDEO_KEYS = ["prompt_id", "seed", "method"]
# Breakdown names `accuracy_summary(by=...)` understands besides the table's own extra columns.
BY_TARGET, BY_CATEGORIES = "target", "n_categories"


def count_rows(
    prompt_id: Any, seed: int, method: str, targets: Mapping[str, int], counts: Mapping[str, Sequence[int]]
) -> list[dict[str, Any]]:
    """The counts-table rows of one video: one per (frame, noun) of `counts` (noun -> per-frame counts)."""
    return [
        {
            "prompt_id": prompt_id,
            "seed": seed,
            "method": method,
            "frame": frame,
            "noun": noun,
            "target": targets[noun],
            "count": int(count),
        }
        for noun, per_frame in counts.items()
        for frame, count in enumerate(per_frame)
    ]


def counts_table(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Build and check the counts table from dicts (or a DataFrame); return a sorted copy.

    Checks: the required columns exist and have no missing values; `target` and `count` are
    non-negative integers; no (prompt_id, seed, method, frame, noun) row is repeated; a (prompt_id,
    noun) has one target everywhere; every frame of a video lists the same nouns. Raises ValueError
    saying what is wrong and where.
    """
    table = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if table.empty:
        raise ValueError("counts table is empty: need one row per (prompt_id, seed, method, frame, noun)")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"counts table lacks column(s) {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)}"
        )
    nulls = [c for c in REQUIRED_COLUMNS if table[c].isna().any()]
    if nulls:
        raise ValueError(f"counts table has missing values in column(s) {', '.join(nulls)}")
    for column in VALUE_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or not np.all(np.asarray(values, dtype=float) % 1 == 0):
            raise ValueError(f"column {column!r} must hold integers")
        table[column] = values.astype(np.int64)
        negative = table[table[column] < 0]
        if not negative.empty:
            row = negative.iloc[0]
            raise ValueError(
                f"column {column!r} has {len(negative)} negative value(s), e.g. {int(row[column])} at "
                f"prompt_id={row['prompt_id']!r}, seed={row['seed']!r}, method={row['method']!r}, "
                f"frame={row['frame']!r}, noun={row['noun']!r}"
            )
    duplicated = table.duplicated(list(KEY_COLUMNS), keep=False)
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise ValueError(
            f"{int(duplicated.sum())} rows repeat a (prompt_id, seed, method, frame, noun) key, e.g. "
            + ", ".join(f"{k}={row[k]!r}" for k in KEY_COLUMNS)
        )
    targets = table.groupby(["prompt_id", "noun"], sort=False)["target"].nunique()
    if (targets > 1).any():
        prompt_id, noun = targets[targets > 1].index[0]
        raise ValueError(f"prompt_id={prompt_id!r}, noun={noun!r} has more than one target in the table")
    shape = table.groupby(VIDEO_KEYS, sort=False).agg(
        rows=("noun", "size"), frames=("frame", "nunique"), nouns=("noun", "nunique")
    )
    ragged = shape[shape["rows"] != shape["frames"] * shape["nouns"]]
    if not ragged.empty:
        key = dict(zip(VIDEO_KEYS, ragged.index[0], strict=True))
        raise ValueError(f"video {key} does not list the same nouns on every frame")
    return table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


def _with_exact(counts: pd.DataFrame) -> pd.DataFrame:
    table = counts_table(counts)
    table["exact"] = table["count"] == table["target"]
    table["abs_error"] = (table["count"] - table["target"]).abs()
    return table


def frame_scores(counts: pd.DataFrame) -> pd.DataFrame:
    """Per (prompt_id, seed, method, frame): `score` (fraction of nouns counted exactly), `all_exact`,
    `n_nouns`."""
    table = _with_exact(counts)
    return (
        table.groupby(FRAME_KEYS, sort=True)
        .agg(score=("exact", "mean"), all_exact=("exact", "all"), n_nouns=("noun", "size"))
        .reset_index()
    )


def video_scores(counts: pd.DataFrame) -> pd.DataFrame:
    """Per (prompt_id, seed, method): `accuracy` (mean frame score, the release's prompt score for one
    video), `all_frames_exact`, `mean_abs_error` (over frames and nouns), `n_categories`, `max_target`,
    `n_frames`."""
    table = _with_exact(counts)
    frames = table.groupby(FRAME_KEYS, sort=True)["exact"].mean().rename("score").reset_index()
    videos = frames.groupby(VIDEO_KEYS, sort=True).agg(accuracy=("score", "mean"), n_frames=("frame", "size"))
    per_video = table.groupby(VIDEO_KEYS, sort=True).agg(
        all_frames_exact=("exact", "all"),
        mean_abs_error=("abs_error", "mean"),
        n_categories=("noun", "nunique"),
        max_target=("target", "max"),
    )
    out = videos.join(per_video).reset_index()
    return out[
        VIDEO_KEYS
        + ["accuracy", "all_frames_exact", "mean_abs_error", "n_categories", "max_target", "n_frames"]
    ]


def _cluster_bootstrap(
    clusters: np.ndarray, values: np.ndarray, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float, float]:
    """Mean of `values` and a percentile CI resampling whole clusters (each keeps all its values)."""
    codes, _ = pd.factorize(pd.Series(clusters), sort=True)
    sums = np.bincount(codes, weights=values)
    sizes = np.bincount(codes).astype(float)
    mean = float(sums.sum() / sizes.sum())
    if n_resamples <= 0:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_resamples, len(sums)))
    boot = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    # Keep the point estimate inside the interval despite floating-point noise when all resamples agree.
    return mean, float(min(low, mean)), float(max(high, mean))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _by_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    names = [by] if isinstance(by, str) else list(by)
    if "method" in names:
        names.remove("method")
    return names


def accuracy_summary(
    counts: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Benchmark accuracy per `method` (and per `by` group) with a prompt-level cluster-bootstrap CI.

    Without "target" in `by`, the unit is a prompt: its score is the mean over its seeds of the video
    accuracy, and a group's value is the mean over its prompts (the release's benchmark number).
    `by` may name `"n_categories"` (number of nouns of the prompt, 1-3) and any extra column of the
    table that is constant within each video.

    With `by` containing `"target"` (the per-count breakdown, 1-8), the unit is a (prompt, noun) pair:
    its score is the mean over seeds and frames of the per-noun exactness (count == target for that
    noun alone, NOT the frame's all-nouns fraction), and each pair goes to the group of its own target,
    so "3 cats and 5 dogs" adds one pair to target 3 and one to target 5. A group's value is the mean
    over its pairs. Extra `by` columns must then be constant within each (prompt, seed, method, noun).

    The CI resamples prompts (with all their seeds and, for "target", all their pairs in the group).
    Columns: method, the `by` columns, accuracy, ci_low, ci_high, n_prompts, n_units (prompts or pairs).
    """
    _check_confidence(confidence)
    names = _by_list(by)
    table = _with_exact(counts)
    per_noun = BY_TARGET in names
    unknown = [n for n in names if n not in table.columns and n != BY_CATEGORIES]
    if unknown:
        raise ValueError(
            f"cannot group by {', '.join(unknown)}: not a column of the counts table nor "
            f"{BY_TARGET!r} / {BY_CATEGORIES!r}"
        )
    if BY_CATEGORIES in names and BY_CATEGORIES not in table.columns:
        n_cat = table.groupby(VIDEO_KEYS)["noun"].nunique().rename(BY_CATEGORIES)
        table = table.join(n_cat, on=VIDEO_KEYS)
    base_keys = VIDEO_KEYS + (["noun"] if per_noun else [])
    extras = [n for n in names if n not in base_keys]
    if extras:
        varying = table.groupby(base_keys)[extras].nunique().max()
        bad = [n for n in extras if varying[n] > 1]
        if bad:
            unit = "(prompt, seed, method, noun)" if per_noun else "video (prompt, seed, method)"
            raise ValueError(f"column(s) {', '.join(bad)} vary within a {unit}; cannot group by them")
    # Per video (or per video-and-noun): mean over frames of exactness.
    if per_noun:
        per_video = table.groupby(base_keys + extras, sort=True)["exact"].mean().rename("score")
    else:
        frames = table.groupby(FRAME_KEYS + extras, sort=True)["exact"].mean().rename("score").reset_index()
        per_video = frames.groupby(base_keys + extras, sort=True)["score"].mean()
    per_video = per_video.reset_index()
    unit_keys = ["method", "prompt_id"] + (["noun"] if per_noun else []) + extras
    units = per_video.groupby(unit_keys, sort=True)["score"].mean().reset_index()
    group_keys = ["method"] + names
    rows = []
    for key, group in units.groupby(group_keys, sort=True):
        mean, low, high = _cluster_bootstrap(
            group["prompt_id"].to_numpy(), group["score"].to_numpy(float), confidence, n_resamples, seed
        )
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            dict(zip(group_keys, key, strict=True))
            | {
                "accuracy": mean,
                "ci_low": low,
                "ci_high": high,
                "n_prompts": int(group["prompt_id"].nunique()),
                "n_units": len(group),
            }
        )
    return pd.DataFrame(rows)


def accuracy_by_target(counts: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    """`accuracy_summary(counts, by="target", ...)`: per target count, per-noun exactness (see there)."""
    return accuracy_summary(counts, by=BY_TARGET, **kwargs)


def accuracy_by_categories(counts: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    """`accuracy_summary(counts, by="n_categories", ...)`: per number of nouns in the prompt (1-3)."""
    return accuracy_summary(counts, by=BY_CATEGORIES, **kwargs)


@dataclass(frozen=True)
class PairedComparison:
    """Result of `paired_comparison`: `difference` = other - baseline accuracy on the shared videos."""

    baseline: str
    other: str
    n_prompts: int
    n_videos: int
    baseline_accuracy: float
    other_accuracy: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    test: str

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for tables and logging)."""
        return asdict(self)


WILCOXON_TEST = "wilcoxon signed-rank over prompt differences (two-sided, zeros dropped)"


def paired_comparison(
    counts: pd.DataFrame,
    baseline: str = "baseline",
    other: str = "numina",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two methods on the (prompt_id, seed) videos both have.

    Each shared prompt gets, per method, the mean over the shared seeds of the video accuracy; the
    difference is the mean over prompts of (other - baseline). The CI is a paired percentile bootstrap
    resampling prompts. The p-value is `scipy.stats.wilcoxon` (signed-rank, two-sided, zero_method
    "wilcox": prompts with no difference are dropped; exact distribution for small samples without
    ties, normal approximation otherwise) on the per-prompt differences; 1.0 when every difference is 0.
    """
    _check_confidence(confidence)
    videos = video_scores(counts)
    methods = set(videos["method"])
    absent = [m for m in (baseline, other) if m not in methods]
    if absent:
        raise ValueError(
            f"method(s) {', '.join(map(repr, absent))} not in the counts table; it has "
            f"{', '.join(map(repr, sorted(methods, key=str)))}"
        )
    left = videos[videos["method"] == baseline][["prompt_id", "seed", "accuracy"]]
    right = videos[videos["method"] == other][["prompt_id", "seed", "accuracy"]]
    shared = left.merge(right, on=["prompt_id", "seed"], suffixes=("_baseline", "_other"))
    if shared.empty:
        only_left = sorted(set(left["prompt_id"]) - set(right["prompt_id"]), key=str)
        only_right = sorted(set(right["prompt_id"]) - set(left["prompt_id"]), key=str)
        raise ValueError(
            f"no shared (prompt_id, seed) videos between {baseline!r} and {other!r}: "
            f"prompts only in {baseline!r}: {only_left[:10]}; only in {other!r}: {only_right[:10]}; "
            f"seeds in {baseline!r}: {sorted(set(left['seed']), key=str)}, "
            f"in {other!r}: {sorted(set(right['seed']), key=str)}"
        )
    prompts = shared.groupby("prompt_id", sort=True)[["accuracy_baseline", "accuracy_other"]].mean()
    diffs = (prompts["accuracy_other"] - prompts["accuracy_baseline"]).to_numpy(float)
    mean, low, high = _cluster_bootstrap(prompts.index.to_numpy(), diffs, confidence, n_resamples, seed)
    nonzero = diffs[np.abs(diffs) > 1e-12]
    p_value = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) else 1.0
    return PairedComparison(
        baseline=baseline,
        other=other,
        n_prompts=len(prompts),
        n_videos=len(shared),
        baseline_accuracy=float(prompts["accuracy_baseline"].mean()),
        other_accuracy=float(prompts["accuracy_other"].mean()),
        difference=mean,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        p_value=p_value,
        test=WILCOXON_TEST,
    )


# The baseline's error classes that `count_changes` sorts the rows into.
CHANGE_CLASSES = ("over", "under", "right")


def count_changes(counts: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """Where each other method moved the counts, against the baseline's, on the rows both have.

    Every (prompt_id, seed, frame, noun) row both methods counted is classed by the baseline's error
    (`over`: count > target, `under`: count < target, `right`) and by the method's absolute error
    against the baseline's: `better` (smaller), `worse` (larger) or `unchanged` (the same; for a row
    the baseline got right, `worse` means made wrong). One row per method (sorted), with `rows` (shared
    rows), `<class>` (how many rows the baseline had in that class) and `<class>_better`,
    `<class>_worse`, `<class>_unchanged` (`right_better` is always 0 and left out).
    """
    table = _with_exact(counts)
    methods = set(table["method"])
    if baseline not in methods:
        present = ", ".join(map(repr, sorted(methods, key=str)))
        raise ValueError(f"method {baseline!r} not in the counts table; it has {present}")
    keys = [key for key in KEY_COLUMNS if key != "method"]
    reference = table[table["method"] == baseline][keys + ["target", "count", "abs_error"]]
    rows = []
    for method in sorted(methods - {baseline}, key=str):
        other = table[table["method"] == method][keys + ["abs_error"]]
        shared = reference.merge(other, on=keys, suffixes=("", "_other"))
        over, under = shared["count"] > shared["target"], shared["count"] < shared["target"]
        error_class = np.select([over, under], ["over", "under"], "right")
        change = np.sign(shared["abs_error_other"] - shared["abs_error"]).map(
            {-1: "better", 0: "unchanged", 1: "worse"}
        )
        row: dict[str, Any] = {"baseline": baseline, "method": method, "rows": len(shared)}
        for name in CHANGE_CLASSES:
            in_class = change[error_class == name]
            row[name] = len(in_class)
            outcomes = ("unchanged", "worse") if name == "right" else ("better", "worse", "unchanged")
            row.update({f"{name}_{outcome}": int((in_class == outcome).sum()) for outcome in outcomes})
        rows.append(row)
    return pd.DataFrame(rows)


FIDELITY_COLUMNS = ("prompt_id", "frame", "noun", "drawn", "count")


def fidelity_summary(
    rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """How well a layout counts what the video shows: its count against the count drawn.

    `rows` has one row per (prompt_id, decoded frame, noun): `drawn` (the counter's count on that
    frame of the walk-through's own video) and `count` (the layout's count in the latent frame that
    frame belongs to). Unlike accuracy against the targets, this does not blame the layout when the
    model drew the wrong number. Each prompt's mean counts once: `fidelity` (fraction exact, with a
    percentile CI resampling prompts), `mean_abs_error` and `mean_signed_error` (count - drawn: > 0
    means the layout finds more instances than were drawn), `n_prompts`.
    """
    _check_confidence(confidence)
    table = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in FIDELITY_COLUMNS if c not in table.columns]
    if table.empty or missing:
        raise ValueError(f"fidelity rows need the columns {', '.join(FIDELITY_COLUMNS)} and at least one row")
    error = table["count"] - table["drawn"]
    table = table.assign(exact=error == 0, abs_error=error.abs(), signed_error=error)
    prompts = table.groupby("prompt_id", sort=True)[["exact", "abs_error", "signed_error"]].mean()
    mean, low, high = _cluster_bootstrap(
        prompts.index.to_numpy(), prompts["exact"].to_numpy(float), confidence, n_resamples, seed
    )
    return {
        "fidelity": mean,
        "ci_low": low,
        "ci_high": high,
        "mean_abs_error": float(prompts["abs_error"].mean()),
        "mean_signed_error": float(prompts["signed_error"].mean()),
        "n_prompts": len(prompts),
    }
