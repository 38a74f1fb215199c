"""Scoring a sweep of NUMINA settings over stored walk-throughs, usable from a script or a notebook.

A setting is a dict of `NuminaOptions` fields (and `layout.<field>` keys) over a base preset. For every
prompt's stored walk-through, `evaluate_settings` builds each setting's layout and counts it against
the prompt's targets (layout accuracy) and against what the walk-through's own video drew (fidelity:
does the layout see the instances that are there?). `constant_fidelity` is fidelity's chance level,
the best layout that counts one number everywhere; `summarise` gives one row per setting with
intervals. Used by `experiments/ablate_heads.py`. May import numpy, pandas and numina.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from numina.evaluation import accuracy_summary, count_rows, counts_table, fidelity_summary
from numina.method.identify import Phase1Data
from numina.method.phase1 import identify_and_layout, reference_of
from numina.method.presets import NuminaOptions
from numina.models import Geometry
from numina.prompts import PromptTokens
from numina.store import open_store

LAYOUT_PREFIX = "layout."  # a setting's key for a LayoutOptions field


def options_of(base: NuminaOptions, setting: dict) -> NuminaOptions:
    """A setting's options: its NuminaOptions fields, and its `layout.<field>` keys over the layout."""
    layout = {k.removeprefix(LAYOUT_PREFIX): v for k, v in setting.items() if k.startswith(LAYOUT_PREFIX)}
    options = replace(base, **{k: v for k, v in setting.items() if not k.startswith(LAYOUT_PREFIX)})
    return replace(options, layout=replace(options.layout, **layout)) if layout else options


def setting_id(setting: dict) -> str:
    text = json.dumps(setting, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def fidelity_rows(
    prompt_id: int, layout_counts: dict[str, list[int]], drawn: dict[str, list[int]], geometry: Geometry
) -> list[dict]:
    """One row per (decoded frame, noun): the drawn count against the layout count of its latent frame."""
    rows = []
    for noun, per_latent_frame in layout_counts.items():
        if len(drawn[noun]) != geometry.num_frames:
            raise ValueError(
                f"prompt {prompt_id}: {len(drawn[noun])} drawn counts of {noun!r} for a "
                f"{geometry.num_frames}-frame video: they were not counted on this walk-through's video; "
                "count that video again"
            )
        for latent_frame, count in enumerate(per_latent_frame):
            rows += [
                {
                    "prompt_id": prompt_id,
                    "frame": frame,
                    "noun": noun,
                    "drawn": drawn[noun][frame],
                    "count": count,
                }
                for frame in geometry.video_frames(latent_frame)
            ]
    return rows


def evaluate_settings(
    settings: list[dict],
    base: NuminaOptions,
    stores: dict[int, Path],
    drawn: dict[int, dict[str, list[int]]],
    geometry: Geometry,
    num_steps: int,
) -> list[dict]:
    """The layout of every prompt (its stored walk-through, `stores`) under each setting, counted
    against its targets and against what its walk-through drew (`drawn`: per prompt, per noun, per
    decoded frame).

    Settings that share a reference step and block share one read of each prompt's stored data.
    """
    options = [options_of(base, setting) for setting in settings]
    # (step, block, every block's self-attention?): only `per_layer` looks beyond the reference block
    references = [(*reference_of(o, geometry, num_steps), o.head_rule == "per_layer") for o in options]
    rows: list[list[dict]] = [[] for _ in settings]
    fidelity: list[list[dict]] = [[] for _ in settings]
    scores: list[list[float]] = [[] for _ in settings]
    for prompt_id, path in stores.items():
        with open_store(path) as store:
            tokens = PromptTokens.from_records(store.attrs["tokens"])
            stored = {
                (step, layer, every): Phase1Data.from_store(store, step, layer, None if every else [layer])
                for step, layer, every in sorted(set(references))
            }
        # Scores under another variant or weights are recomputed once per prompt, reference and setting.
        scored: dict[tuple, Phase1Data] = {}
        for k, (option, reference) in enumerate(zip(options, references, strict=True)):
            key = (reference, option.score_variant, tuple(option.score_weights))
            if key not in scored:
                scored[key] = stored[reference].scored(
                    geometry.height, geometry.width, option.score_variant, tuple(option.score_weights)
                )
            data, layer = scored[key], reference[1]
            head, _, layout = identify_and_layout(data, tokens, geometry, option, layer)
            scores[k].append(float(np.mean(head.score)))
            counts = {noun: layout.counts(noun).tolist() for noun in tokens.targets}
            rows[k] += count_rows(prompt_id, 0, "layout", tokens.targets, counts)
            fidelity[k] += fidelity_rows(prompt_id, counts, drawn[prompt_id], geometry)
    return [
        {
            "setting": setting,
            "rows": rows[k],
            "fidelity_rows": fidelity[k],
            "mean_head_score": float(np.mean(scores[k])),
        }
        for k, setting in enumerate(settings)
    ]


def constant_fidelity(rows: list[dict]) -> dict:
    """The best fidelity of a layout that counts the same number everywhere, and that number: what a
    setting's fidelity must beat to show that the layout sees instances (the drawn counts are the same
    for every setting)."""
    table = pd.DataFrame(rows)
    best = max(
        range(int(table["drawn"].max()) + 1),
        key=lambda count: fidelity_summary(table.assign(count=count), n_resamples=0)["fidelity"],
    )
    return {"count": best, **fidelity_summary(table.assign(count=best))}


def summarise(results: list[dict]) -> pd.DataFrame:
    """One row per setting: its options, layout accuracy and fidelity with their intervals, mean S of
    the chosen heads and, with --end-to-end, the generated videos' counting accuracy with its interval."""
    rows = []
    for result in results:
        accuracy = accuracy_summary(counts_table(result["rows"])).iloc[0]
        fidelity = fidelity_summary(result["fidelity_rows"])
        row = {
            "setting": setting_id(result["setting"]),
            **result["setting"],
            "accuracy": accuracy["accuracy"],
            "ci_low": accuracy["ci_low"],
            "ci_high": accuracy["ci_high"],
            "n_prompts": accuracy["n_prompts"],
            "fidelity": fidelity["fidelity"],
            "fidelity_ci_low": fidelity["ci_low"],
            "fidelity_ci_high": fidelity["ci_high"],
            "fidelity_mean_abs_error": fidelity["mean_abs_error"],
            "fidelity_mean_signed_error": fidelity["mean_signed_error"],
            "mean_head_score": result["mean_head_score"],
        }
        if result.get("end_to_end_rows"):
            generated = accuracy_summary(counts_table(result["end_to_end_rows"])).iloc[0]
            row.update(
                end_to_end_accuracy=generated["accuracy"],
                end_to_end_ci_low=generated["ci_low"],
                end_to_end_ci_high=generated["ci_high"],
            )
        rows.append(row)
    return pd.DataFrame(rows)
