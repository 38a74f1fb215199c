"""Token-type attention statistics: how concentrated each prompt token's cross-attention is, as tables.

`token_table(store)` turns one stored run into a tidy pandas table with one row per
(step, layer, head, token[, frame]): the token's text, word and type (numeral, noun, adjective, other,
eos, padding), every concentration measure of `numina.metrics.concentration`, and the share of that
head's attention that went to the text padding. `summarise` aggregates a table of many prompts by any
columns with confidence intervals over prompts (each prompt counts once, whatever its number of
tokens); `compare_types` gives the paired per-prompt difference between two token types (numeral minus
noun, say) with its interval. May import numpy, pandas, scipy, torch, numina and analysis.maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats

from analysis.maps import over_prompt, token_maps
from numina.capture.names import CROSS_PROBS, CROSS_STATS, CROSS_TEXT_MASS, TIMESTEP
from numina.metrics.concentration import STATS, concentration_stats
from numina.prompts import PromptTokens
from numina.store import AttentionStore

Normalisation = Literal["all", "prompt"]
NORMALISATIONS = ("all", "prompt")  # as the model computes it (all 512 text positions) / prompt tokens only
MEASURES = (*STATS, "padding_mass")
IntervalMethod = Literal["t", "bootstrap"]


def prompt_tokens_of(store: AttentionStore) -> PromptTokens:
    """The prompt's token map as the capture recorded it (root attribute `tokens`)."""
    if "tokens" not in store.attrs:
        raise KeyError(
            f"{store} has no `tokens` attribute: it was not written by numina's capture_generation."
        )
    return PromptTokens.from_records(store.attrs["tokens"])


def captured_steps(store: AttentionStore, branch: str = "cond") -> list[int]:
    """The denoising steps the store holds for `branch`, in order."""
    timesteps = store[TIMESTEP].sel(branch=branch)
    steps, values = timesteps.coords["step"], timesteps.values
    return [int(step) for step, value in zip(steps, values, strict=True) if np.isfinite(value)]


def token_table(
    store: AttentionStore,
    normalisation: Normalisation | Sequence[Normalisation] = "all",
    steps: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    branch: str = "cond",
    frames: Literal["mean", "each"] = "mean",
    prompt_id: str | int | None = None,
) -> pd.DataFrame:
    """Concentration measures of every captured token's cross-attention map, one row per map.

    A map is what one text token receives from one latent frame's video positions, for one head of
    one block at one step. `normalisation="prompt"` renormalises it over the prompt's own tokens first
    (needs stored maps); several normalisations give their rows together from one read of the maps.
    `frames="mean"` averages each measure over the frames (one row per step/layer/head/token), `"each"`
    keeps a `frame` column. Statistics come from the stored maps when present, else from the statistics
    the capture computed on the device (`normalisation="all"` only).
    """
    normalisations = [normalisation] if isinstance(normalisation, str) else list(normalisation)
    unknown = [n for n in normalisations if n not in NORMALISATIONS]
    if unknown or not normalisations:
        raise ValueError(f"normalisation must be one or more of {NORMALISATIONS}, got {normalisation!r}.")
    if frames not in ("mean", "each"):
        raise ValueError(f"frames must be 'mean' or 'each', got {frames!r}.")
    has_maps = CROSS_PROBS in store
    if not has_maps and CROSS_STATS not in store:
        raise KeyError(f"{store} holds no cross-attention maps or statistics; capture cross_attention first.")
    if not has_maps and "prompt" in normalisations:
        raise ValueError(
            "Maps renormalised over the prompt need the stored cross-attention maps, but this store has "
            "statistics only; capture with CrossAttentionCapture(maps=True) or use normalisation='all'."
        )
    tokens = prompt_tokens_of(store)
    source = store[CROSS_PROBS if has_maps else CROSS_STATS]
    steps = captured_steps(store, branch) if steps is None else list(steps)
    layers = [int(layer) for layer in source.coords["layer"]] if layers is None else list(layers)
    heads = np.asarray(source.coords["head"], dtype=int)
    positions = np.asarray(source.coords["token"], dtype=int)
    frame_ids = np.asarray(source.coords["frame"], dtype=int)
    text_mass = store[CROSS_TEXT_MASS]
    pieces: dict[str, list[pd.DataFrame]] = {n: [] for n in normalisations}
    for step in steps:
        for layer in layers:
            index = {"step": step, "branch": branch, "layer": layer}
            padding = text_mass.sel(index, part="padding").values  # (head, frame)
            raw = token_maps(store, step, layer, branch=branch) if has_maps else None
            for name in normalisations:
                if raw is None:
                    measures = source.sel(index).values.astype(np.float32)  # (head, token, frame, stat)
                else:
                    maps = over_prompt(store, raw, step, layer, branch) if name == "prompt" else raw
                    measures = concentration_stats(torch.from_numpy(maps)).numpy()
                measures = np.concatenate(
                    [measures, np.broadcast_to(padding[:, None, :, None], (*measures.shape[:3], 1))], axis=-1
                )
                pieces[name].append(_rows(measures, step, layer, heads, positions, frame_ids, frames))
    tables = []
    for name, parts in pieces.items():
        table = pd.concat(parts, ignore_index=True) if parts else _rows_empty(frames)
        table = table.dropna(subset=list(STATS), how="all").reset_index(drop=True)
        _describe_tokens(table, tokens)
        table.insert(table.columns.get_loc("token_type") + 1, "normalisation", name)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table.insert(
        0, "prompt_id", prompt_id if prompt_id is not None else store.attrs.get("prompt_id", tokens.prompt)
    )
    table["branch"] = branch
    return table


def _rows(
    measures: np.ndarray,
    step: int,
    layer: int,
    heads: np.ndarray,
    positions: np.ndarray,
    frame_ids: np.ndarray,
    frames: str,
) -> pd.DataFrame:
    """A tidy block from (head, token, frame, measure) values."""
    if frames == "mean":
        with np.errstate(all="ignore"):
            measures = np.nanmean(measures, axis=2) if measures.size else measures[:, :, 0]
        grid = np.meshgrid(heads, positions, indexing="ij")
        columns = {"head": grid[0].ravel(), "token": grid[1].ravel()}
    else:
        grid = np.meshgrid(heads, positions, frame_ids, indexing="ij")
        columns = {"head": grid[0].ravel(), "token": grid[1].ravel(), "frame": grid[2].ravel()}
    values = measures.reshape(-1, measures.shape[-1])
    table = pd.DataFrame({"step": step, "layer": layer, **columns})
    for k, name in enumerate(MEASURES):
        table[name] = values[:, k]
    return table


def _rows_empty(frames: str) -> pd.DataFrame:
    keys = ["step", "layer", "head", "token"] + (["frame"] if frames == "each" else [])
    return pd.DataFrame(columns=[*keys, *MEASURES])


def _describe_tokens(table: pd.DataFrame, tokens: PromptTokens) -> None:
    """Add token_text, word and token_type columns after `token`, from the prompt's token map."""
    types = tokens.token_types()
    text = {p: tokens.tokens[p] for p in set(table["token"].tolist())}
    words = {p: " ".join(word.text for word in tokens.words_at(p)) for p in text}
    where = table.columns.get_loc("token") + 1
    table.insert(where, "token_text", table["token"].map(text))
    table.insert(where + 1, "word", table["token"].map(words))
    table.insert(where + 2, "token_type", table["token"].map(lambda p: types[p]))


def confidence_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    method: IntervalMethod = "t",
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval for the mean of `values`: Student t, or a seeded percentile bootstrap. NaN for n < 2."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    if method == "t":
        sem = scipy_stats.sem(values)
        if sem == 0:
            return float(values.mean()), float(values.mean())
        low, high = scipy_stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=sem)
    elif method == "bootstrap":
        if np.ptp(values) == 0:
            return float(values[0]), float(values[0])
        result = scipy_stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval
    else:
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}.")
    return float(low), float(high)


def _measure_columns(table: pd.DataFrame, measures: Sequence[str] | None) -> list[str]:
    chosen = [m for m in MEASURES if m in table.columns] if measures is None else list(measures)
    missing = [m for m in chosen if m not in table.columns]
    if missing:
        raise KeyError(f"measures {missing} are not columns of the table; it has {list(table.columns)}")
    return chosen


def _interval_table(
    long: pd.DataFrame, keys: list[str], value: str, confidence: float, method: IntervalMethod, seed: int
) -> pd.DataFrame:
    """mean, ci_low, ci_high and n_prompts of `value` per group of `keys` (one value per prompt)."""
    rows = []
    for group_keys, group in long.groupby(keys, sort=True, observed=True, dropna=False):
        values = group[value].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        low, high = confidence_interval(values, confidence, method, seed=seed)
        group_keys = group_keys if isinstance(group_keys, tuple) else (group_keys,)
        rows.append(
            {
                **dict(zip(keys, group_keys, strict=True)),
                "mean": values.mean() if len(values) else np.nan,
                "ci_low": low,
                "ci_high": high,
                "n_prompts": len(values),
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n_prompts"])


def summarise(
    table: pd.DataFrame,
    by: Sequence[str] = ("token_type", "layer"),
    measures: Sequence[str] | None = None,
    confidence: float = 0.95,
    method: IntervalMethod = "t",
    seed: int = 0,
) -> pd.DataFrame:
    """Mean of each measure per group of `by`, with a confidence interval over prompts (long format).

    Each prompt is first averaged within the group (so a prompt with many nouns counts once), then
    the prompts' values are averaged, with a Student-t or bootstrap interval. Columns:
    `*by, measure, mean, ci_low, ci_high, n_prompts`.
    """
    measures = _measure_columns(table, measures)
    by = list(by)
    per_prompt = table.groupby(["prompt_id", *by], observed=True)[measures].mean().reset_index()
    long = per_prompt.melt(id_vars=["prompt_id", *by], value_vars=measures, var_name="measure")
    return _interval_table(long, [*by, "measure"], "value", confidence, method, seed)


def compare_types(
    table: pd.DataFrame,
    first: str = "numeral",
    second: str = "noun",
    by: Sequence[str] = ("layer",),
    measures: Sequence[str] | None = None,
    confidence: float = 0.95,
    method: IntervalMethod = "t",
    seed: int = 0,
) -> pd.DataFrame:
    """Paired difference `first - second` of each measure within each prompt, with its interval.

    Only prompts that have both token types count. Columns: `*by, measure, first, second, mean
    (the mean difference), ci_low, ci_high, n_prompts`.
    """
    measures = _measure_columns(table, measures)
    by = list(by)
    present = set(table["token_type"].unique())
    for kind in (first, second):
        if kind not in present:
            raise ValueError(f"token type {kind!r} not in the table; it has {sorted(present)}")
    chosen = table[table["token_type"].isin([first, second])]
    means = chosen.groupby(["prompt_id", *by, "token_type"], observed=True)[measures].mean()
    wide = means.unstack("token_type").dropna()
    long = []
    for measure in measures:
        part = wide[measure].reset_index()
        part["measure"] = measure
        part["difference"] = part[first] - part[second]
        long.append(part)
    long = pd.concat(long, ignore_index=True)
    intervals = _interval_table(long, [*by, "measure"], "difference", confidence, method, seed)
    levels = long.groupby([*by, "measure"], observed=True)[[first, second]].mean().reset_index()
    return levels.merge(intervals, on=[*by, "measure"])
