"""analysis.statistics / analysis.separability and the metrics behind them, on planted truth.

Separability: planted instance blocks through the low-rank step, hand-computed S terms (both variants).
Concentration: sharp vs diffuse orderings, exact tiny cases, renormalisation over the prompt.
Analysis: hand-written HDF5 stores with planted cross-attention maps (sharp nouns, diffuse numerals) and
planted self-attention scores, checked against numbers computed here without the modules under test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from analysis.separability import choose_heads, rank_heads, separability_table
from analysis.statistics import compare_types, confidence_interval, summarise, token_table
from numina.capture import CaptureSpec, CrossAttentionCapture, SelfAttentionCapture, open_capture_store
from numina.metrics.concentration import STATS, concentration_stats, renormalise_over_prompt
from numina.metrics.lowrank import top_components
from numina.metrics.separability import grey_image, separability
from numina.models.geometry import Geometry
from numina.models.tokenizer import build_tiny_tokenizer
from numina.prompts import parse_prompt
from numina.store import open_store

SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]


# -- separability ------------------------------------------------------------------------------------


def test_planted_instance_head_scores_highest() -> None:
    side, generator = 16, torch.Generator().manual_seed(0)
    labels = torch.zeros(side, side, dtype=torch.long)  # background 0, three instances 1..3
    labels[2:6, 2:6], labels[9:14, 3:7], labels[4:8, 10:15] = 1, 2, 3
    labels = labels.flatten()
    same = (labels[:, None] == labels[None, :]).double()
    noise = torch.randn(4, side * side, side * side, generator=generator, dtype=torch.float64)
    maps = torch.stack(
        [
            torch.softmax(noise[0], -1),  # random attention
            torch.softmax(0.05 * noise[1], -1),  # nearly uniform
            torch.softmax(6.0 * same + 0.1 * noise[2], -1),  # planted: block structure by instance
            torch.softmax(2.0 * noise[3], -1),  # sharp but random
        ]
    )
    components, _ = top_components(maps, k=3)
    for variant in ("official", "normalised"):
        scores = separability(components, side, side, variant)
        assert scores[:, 3].argmax().item() == 2, (variant, scores)
    grey = grey_image(components[2], side, side).flatten()
    for instance in range(4):  # the planted head's grey image is flat within each instance
        assert grey[labels == instance].std() < 1e-2 * grey.std()


def _sample_var(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def _hand_scores(grey: np.ndarray, block: tuple[int, int]) -> dict[str, float]:
    """S1, S2 (block sums and block means), S3 written out without the module."""
    height, width = grey.shape
    values = grey.ravel().tolist()
    s1 = math.sqrt(_sample_var(values))
    bh, bw = block
    sums = [
        float(grey[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw].sum())
        for r in range(height // bh)
        for c in range(width // bw)
    ]
    padded = np.zeros((height + 2, width + 2))
    padded[1:-1, 1:-1] = grey
    total = 0.0
    for i in range(height):
        for j in range(width):
            gx = sum(SOBEL_X[a][b] * padded[i + a, j + b] for a in range(3) for b in range(3))
            gy = sum(SOBEL_X[b][a] * padded[i + a, j + b] for a in range(3) for b in range(3))
            total += math.sqrt(gx * gx + gy * gy)
    return {
        "S1": s1,
        "S2_official": _sample_var(sums),
        "S2_normalised": _sample_var([s / (bh * bw) for s in sums]),
        "S3": total / (height * width),
    }


def _check_against_hand(components: torch.Tensor, grey: np.ndarray, block: tuple[int, int]) -> None:
    hand = _hand_scores(grey, block)
    height, width = grey.shape
    for variant in ("official", "normalised"):
        s1, s2, s3, total = separability(components, height, width, variant).tolist()
        expected_s2 = hand[f"S2_{variant}"]
        assert s1 == pytest.approx(hand["S1"], rel=1e-10)
        assert s2 == pytest.approx(expected_s2, rel=1e-10)
        assert s3 == pytest.approx(hand["S3"], rel=1e-10)
        assert total == pytest.approx(hand["S1"] + expected_s2 + 0.1 * hand["S3"], rel=1e-10)
    official = separability(components, height, width, "official")[1].item()
    normalised = separability(components, height, width, "normalised")[1].item()
    assert official == pytest.approx(normalised * (block[0] * block[1]) ** 2, rel=1e-10)


def test_hand_computed_terms_two_instances_16x8() -> None:
    # 16 x 8 grid -> blocks of (16//8) x (8//8) = 2 x 1, 64 blocks. Two rectangles of ones (12 + 15).
    pattern = np.zeros((16, 8))
    pattern[2:6, 1:4], pattern[9:14, 4:7] = 1, 1
    flat = torch.from_numpy(pattern.ravel())
    # c0 = 2p + 5 -> p, c1 = -p -> 1 - p, c2 constant -> 0.5: grey = 0.644 - 0.288 p.
    components = torch.stack([2 * flat + 5, -flat, torch.full_like(flat, 7.0)], dim=-1)
    grey = 0.299 * pattern + 0.587 * (1 - pattern) + 0.114 * 0.5
    np.testing.assert_allclose(grey_image(components, 16, 8).numpy(), grey, rtol=1e-12)
    np.testing.assert_allclose(grey, 0.644 - 0.288 * pattern, rtol=1e-12)
    _check_against_hand(components, grey, (2, 1))
    # Closed forms: k = 27 ones of n = 128 -> var(p) = k (n - k) / (n (n - 1)); block sums of p are
    # 12 twos, 3 ones (row 9 alone in its block) and 49 zeros -> sample var (51 - 27^2/64) / 63.
    s1, s2, _, _ = separability(components, 16, 8, "official").tolist()
    assert s1 == pytest.approx(0.288 * math.sqrt(27 * 101 / (128 * 127)), rel=1e-10)
    assert s2 == pytest.approx(0.288**2 * (51 - 27**2 / 64) / 63, rel=1e-10)
    assert separability(components, 16, 8, "normalised")[1].item() == pytest.approx(s2 / 4, rel=1e-10)


def test_hand_computed_terms_random_components_cropped_grid() -> None:
    # 17 x 19 -> blocks 2 x 2, 8 x 9 of them: S2 sees the 16 x 18 crop, S1 and S3 the whole grid.
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(17 * 19, 3)) * [1.0, 5.0, 0.1] + [0.0, -2.0, 3.0]
    scaled = (raw - raw.min(axis=0)) / (raw.max(axis=0) - raw.min(axis=0))
    grey = (0.299 * scaled[:, 0] + 0.587 * scaled[:, 1] + 0.114 * scaled[:, 2]).reshape(17, 19)
    _check_against_hand(torch.from_numpy(raw), grey, (2, 2))


# -- concentration -----------------------------------------------------------------------------------


def test_concentration_orders_sharp_to_diffuse() -> None:
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    distance = (ys - 7.3) ** 2 + (xs - 8.1) ** 2
    maps = [torch.exp(-distance / (2 * sigma**2)) for sigma in (0.7, 2.0, 5.0)] + [torch.ones(16, 16)]
    maps = torch.stack([m / m.sum() for m in maps]).double()  # sharpest first, same total mass
    stats = dict(zip(STATS, concentration_stats(maps).T, strict=True))
    torch.testing.assert_close(stats["mean_attention"], torch.full((4,), 1 / 256, dtype=torch.float64))
    for name in ("entropy", "spread"):
        assert (stats[name].diff() > 0).all(), (name, stats[name])
    for name in ("top_mass", "peak_to_mean", "gini"):
        assert (stats[name].diff() < 0).all(), (name, stats[name])


def test_concentration_exact_tiny_cases() -> None:
    n = 35  # a 5 x 7 map: top_mass keeps ceil(0.05 * 35) = 2 positions
    uniform = torch.full((2, 5, 7), 3.0, dtype=torch.float64)  # batched; scale does not matter
    one_hot = torch.zeros(5, 7, dtype=torch.float64)
    one_hot[4, 1] = 0.25
    mean, entropy, top, peak, spread, gini = concentration_stats(torch.cat([uniform, one_hot[None]])).T
    torch.testing.assert_close(mean, torch.tensor([3.0, 3.0, 0.25 / n], dtype=torch.float64))
    torch.testing.assert_close(entropy, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(gini, torch.tensor([0.0, 0.0, (n - 1) / n], dtype=torch.float64))
    torch.testing.assert_close(peak, torch.tensor([1.0, 1.0, n], dtype=torch.float64))
    torch.testing.assert_close(top, torch.tensor([2 / n, 2 / n, 1.0], dtype=torch.float64))
    assert spread[2].item() == pytest.approx(0.0, abs=1e-15)
    # [[1, 2], [3, 4]]: p = (.1, .2, .3, .4); y marginal (.3, .7) about .7 -> .21; x (.4, .6) about .6
    # -> .24; gini = (-3 * .1 - .2 + .3 + 3 * .4) / 4 = .25.
    m = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    expected = [2.5, -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4)) / math.log(4), 0.4, 1.6, 0.45, 0.25]
    np.testing.assert_allclose(concentration_stats(m).numpy(), expected, rtol=1e-12)


def test_renormalise_over_prompt_masks_padding() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=generator, dtype=torch.float64)  # 2 x 3 queries, 7 text
    logits[..., 4:] += 1.5  # positions 0-3 the prompt, 4-6 padding (a good share of the mass)
    probs = torch.softmax(logits, dim=-1)
    mass = probs[..., 0] + probs[..., 1] + probs[..., 2] + probs[..., 3]
    assert (mass < 0.6).all()
    renormalised = torch.stack([renormalise_over_prompt(probs[..., t], mass) for t in range(4)])
    for t in range(4):
        torch.testing.assert_close(renormalised[t], probs[..., t] / mass)
    torch.testing.assert_close(renormalised.sum(0), torch.ones(2, 3, dtype=torch.float64))
    # ... which is the softmax the padding-masked attention would give.
    torch.testing.assert_close(renormalised.permute(1, 2, 0), torch.softmax(logits[..., :4], dim=-1))
    zero = renormalise_over_prompt(probs[..., 0], torch.zeros(2, 3, dtype=torch.float64))
    assert (zero == 0).all()


# -- analysis.statistics on hand-written stores --------------------------------------------------------

TOKENIZER = build_tiny_tokenizer()
TEXT = 16  # text positions (the prompt's tokens, then padding)
STEP = 7
CROSS = Geometry(2, 4, 6, 2, 2, 8, 5, 32, 48, TEXT)  # frames, y, x, layers, heads, dim, pixels


def _np_entropy(maps: np.ndarray) -> np.ndarray:
    p = maps / maps.sum(axis=(-2, -1), keepdims=True)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=(-2, -1)) / math.log(maps.shape[-2] * maps.shape[-1])


def _cross_store(path, prompt: str, sharpness: float, seed: int) -> dict:
    """A store whose every layer/head has a softmax over the TEXT positions per video position: noun
    tokens get a sharp Gaussian blob, numerals a constant logit, padding a raised one. Returns what
    was planted, rounded as stored."""
    tokens = parse_prompt(prompt, TOKENIZER, max_length=TEXT, tagger="lexicon")
    n, types = tokens.n_tokens, tokens.token_types()
    positions = tuple(range(n + 1))  # every prompt token (EOS included) and the first padding position
    rng = np.random.default_rng(seed)
    shape = (CROSS.layers, CROSS.heads, CROSS.frames, CROSS.height, CROSS.width)
    ys, xs = np.meshgrid(np.arange(CROSS.height), np.arange(CROSS.width), indexing="ij")
    logits = 0.3 * rng.normal(size=(*shape, TEXT))
    for t in range(TEXT):
        if types[t] == "noun":
            centre = rng.uniform([0, 0], [CROSS.height - 1, CROSS.width - 1], size=(*shape[:3], 2))
            d2 = (ys - centre[..., 0, None, None]) ** 2 + (xs - centre[..., 1, None, None]) ** 2
            logits[..., t] = sharpness * np.exp(-d2 / 1.0)
        elif types[t] == "numeral":
            logits[..., t] = 0.0
        elif types[t] == "padding":
            logits[..., t] += 0.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    prompt_mass = probs[..., :n].sum(axis=-1)  # (layer, head, frame, y, x)
    padding = 1 - prompt_mass.mean(axis=(-2, -1))
    text_mass = np.stack([1 - padding, padding], axis=-1).astype(np.float32)
    maps = np.moveaxis(probs[..., list(positions)], -1, 2)  # (layer, head, token, frame, y, x)
    spec = CaptureSpec(
        steps=(STEP,),
        heads=(0, 1),
        cross_attention=CrossAttentionCapture(layers=(0, 1), tokens=positions, prompt_length=n, stats=False),
    )
    writer = open_capture_store(path, spec, CROSS, {"prompt": prompt, "tokens": tokens.to_records()})
    writer.write("capture/timestep", {"step": STEP, "branch": "cond"}, np.float32(500.0))
    for layer in range(CROSS.layers):
        index = {"step": STEP, "branch": "cond", "layer": layer}
        writer.write("cross_attention/probs", index, maps[layer])
        writer.write("cross_attention/prompt_mass", index, prompt_mass[layer])
        writer.write("cross_attention/text_mass", index, text_mass[layer])
    writer.close()
    as_stored = {"maps": maps.astype(np.float16).astype(np.float32), "text_mass": text_mass}
    as_stored["prompt_mass"] = prompt_mass.astype(np.float16).astype(np.float32)
    return {"types": [types[p] for p in positions], "positions": positions, **as_stored}


PROMPTS = ("three red cats on a sofa", "two dog in a park", "three cat and two dog", "four small bird")


@pytest.fixture(scope="module")
def cross_stores(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict]]:
    folder = tmp_path_factory.mktemp("cross")
    return [
        (str(folder / f"p{i}.h5"), _cross_store(folder / f"p{i}.h5", prompt, 3.0 + i, seed=i))
        for i, prompt in enumerate(PROMPTS)
    ]


def _by_key(table: pd.DataFrame, column: str) -> np.ndarray:
    """A (layer, head, token[, frame]) column as an array in that order."""
    keys = [k for k in ("layer", "head", "token", "frame") if k in table.columns]
    return table.sort_values(keys)[column].to_numpy()


def test_token_table_types_entropy_and_padding(cross_stores) -> None:
    path, planted = cross_stores[0]
    with open_store(path) as store:
        table = token_table(store, prompt_id="p0")
        each = token_table(store, frames="each")
    assert len(table) == CROSS.layers * CROSS.heads * 9 and (table["step"] == STEP).all()
    types = dict(zip(planted["positions"], planted["types"], strict=True))
    assert types == dict(
        enumerate(["numeral", "adjective", "noun", "noun", "other", "other", "other", "eos", "padding"])
    )
    assert (table["token_type"] == table["token"].map(types)).all()
    assert (table["prompt_id"] == "p0").all() and set(table["normalisation"]) == {"all"}
    assert set(table.loc[table["token"] == 2, "token_text"]) == {"▁cat"}
    expected = _np_entropy(planted["maps"])  # (layer, head, token, frame)
    np.testing.assert_allclose(_by_key(each, "entropy"), expected.ravel(), rtol=1e-5)
    np.testing.assert_allclose(_by_key(table, "entropy"), expected.mean(-1).ravel(), rtol=1e-5)
    noun = table.loc[table["token_type"] == "noun", "entropy"]
    numeral = table.loc[table["token_type"] == "numeral", "entropy"]
    assert noun.max() < numeral.min()
    padding = np.broadcast_to(planted["text_mass"][:, :, None, :, 1], expected.shape)
    np.testing.assert_allclose(_by_key(each, "padding_mass"), padding.ravel(), rtol=1e-6)
    np.testing.assert_allclose(_by_key(table, "padding_mass"), padding.mean(-1).ravel(), rtol=1e-6)
    assert (table["padding_mass"] > 0.1).all()


def test_token_table_prompt_normalisation(cross_stores) -> None:
    path, planted = cross_stores[0]
    with open_store(path) as store:
        table = token_table(store, normalisation="prompt", frames="each")
        raw = token_table(store, frames="each")
    renormalised = planted["maps"] / planted["prompt_mass"][:, :, None]  # (layer, head, token, frame, y, x)
    np.testing.assert_allclose(_by_key(table, "entropy"), _np_entropy(renormalised).ravel(), rtol=1e-5)
    means = renormalised.mean(axis=(-2, -1))
    np.testing.assert_allclose(_by_key(table, "mean_attention"), means.ravel(), rtol=1e-5)
    assert not np.allclose(_by_key(table, "entropy"), _by_key(raw, "entropy"), rtol=1e-4)
    # Every prompt token (positions 0..7) captured: their renormalised maps share each position.
    prompt = table[table["token_type"] != "padding"]
    totals = prompt.groupby(["layer", "head", "frame"])["mean_attention"].sum()
    np.testing.assert_allclose(totals.to_numpy(), 1.0, rtol=3e-3)


@pytest.fixture(scope="module")
def prompts_table(cross_stores) -> pd.DataFrame:
    tables = []
    for i, (path, _) in enumerate(cross_stores):
        with open_store(path) as store:
            tables.append(token_table(store, prompt_id=f"p{i}"))
    return pd.concat(tables, ignore_index=True)


def _planted_means(cross_stores, kind: str, layer: int | None = None) -> np.ndarray:
    """Per-prompt mean entropy of the planted maps of one token type (optionally one layer)."""
    means = []
    for _, planted in cross_stores:
        entropy = _np_entropy(planted["maps"])  # (layer, head, token, frame)
        entropy = entropy if layer is None else entropy[layer : layer + 1]
        means.append(entropy[:, :, np.asarray(planted["types"]) == kind].mean())
    return np.asarray(means)


def test_summarise_counts_each_prompt_once(prompts_table, cross_stores) -> None:
    summary = summarise(prompts_table, by=("token_type",), measures=["entropy"])
    for kind in ("noun", "numeral"):
        values = _planted_means(cross_stores, kind)
        row = summary[(summary["token_type"] == kind) & (summary["measure"] == "entropy")].iloc[0]
        low, high = scipy_stats.t.interval(
            0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values)
        )
        assert row["n_prompts"] == len(PROMPTS)
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-5)
        assert (row["ci_low"], row["ci_high"]) == (
            pytest.approx(low, rel=1e-4),
            pytest.approx(high, rel=1e-4),
        )
    # Pooling the rows would weigh "cats" (2 noun tokens) double; the per-prompt mean does not.
    pooled = prompts_table.loc[prompts_table["token_type"] == "noun", "entropy"].mean()
    assert pooled != pytest.approx(_planted_means(cross_stores, "noun").mean(), rel=1e-6)


def test_compare_types_paired_difference(prompts_table, cross_stores) -> None:
    result = compare_types(prompts_table, "numeral", "noun", by=("layer",), measures=["entropy"])
    assert len(result) == CROSS.layers
    for layer in range(CROSS.layers):
        numeral = _planted_means(cross_stores, "numeral", layer)
        noun = _planted_means(cross_stores, "noun", layer)
        difference = numeral - noun
        row = result[result["layer"] == layer].iloc[0]
        low, high = confidence_interval(difference)
        assert row["mean"] == pytest.approx(difference.mean(), rel=1e-5) and row["mean"] > 0
        assert row["numeral"] == pytest.approx(numeral.mean(), rel=1e-5)
        assert row["noun"] == pytest.approx(noun.mean(), rel=1e-5)
        assert (row["ci_low"], row["ci_high"]) == (
            pytest.approx(low, rel=1e-4),
            pytest.approx(high, rel=1e-4),
        )
        assert row["n_prompts"] == len(PROMPTS)


def test_confidence_intervals() -> None:
    values = np.array([0.3, 0.9, 0.4, 1.2, 0.8, 0.5, 0.7])
    sem = values.std(ddof=1) / math.sqrt(len(values))
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * sem
    assert confidence_interval(values) == (
        pytest.approx(values.mean() - half),
        pytest.approx(values.mean() + half),
    )
    first = confidence_interval(values, method="bootstrap", n_resamples=500)
    assert first == confidence_interval(values, method="bootstrap", n_resamples=500)
    assert first[0] < values.mean() < first[1]
    assert first != confidence_interval(values, method="bootstrap", seed=1)
    assert all(math.isnan(v) for v in confidence_interval([1.0]))


# -- analysis.separability on a hand-written store -------------------------------------------------------

SELF = Geometry(3, 16, 16, 2, 3, 8, 9, 128, 128, TEXT)  # 3 frames of 16 x 16, 2 layers, 3 heads
# Planted S per layer (head x frame). Layer 0: per-frame winners 0, 2, 2; best mean head 1 (3.83).
# Layer 1: head 0 has the best mean of all (4.9), though head 2 wins frame 1 there.
PLANTED_S = np.array(
    [[[5.0, 1.0, 1.0], [4.0, 4.5, 3.0], [1.0, 5.0, 4.0]], [[4.9, 4.9, 4.9], [0.0, 0.0, 0.0], [2.0, 6.0, 2.0]]]
)


@pytest.fixture(scope="module")
def self_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    path = tmp_path_factory.mktemp("self") / "self.h5"
    rng = np.random.default_rng(0)
    components = rng.normal(size=(2, 3, 3, 16, 16, 3)).astype(np.float32)  # layer, head, frame, y, x, c
    blobs = np.zeros((16, 16, 3), dtype=np.float32)
    blobs[2:6, 2:7], blobs[9:14, 8:14] = 4.0, 4.0
    for frame, head in enumerate((0, 2, 2)):  # layer 0: blob structure in the planted winner only
        components[0, head, frame] = blobs + 0.1 * components[0, head, frame]
    terms = np.stack([0.5 * PLANTED_S, 0.4 * PLANTED_S, PLANTED_S, PLANTED_S], axis=-1).astype(np.float32)
    spec = CaptureSpec(steps=(STEP,), heads=(0, 1, 2), self_attention=SelfAttentionCapture(layers=(0, 1)))
    writer = open_capture_store(path, spec, SELF)
    writer.write("capture/timestep", {"step": STEP, "branch": "cond"}, np.float32(500.0))
    for layer in range(2):
        index = {"step": STEP, "branch": "cond", "layer": layer}
        writer.write("self_attention/components", index, components[layer])
        writer.write("self_attention/scores", index, terms[layer])
    writer.close()
    return str(path), components.astype(np.float32)  # components are stored in float32


def test_separability_table_reads_and_recomputes(self_store) -> None:
    path, components = self_store
    with open_store(path) as store:
        official = separability_table(store)
        normalised = separability_table(store, variant="normalised")
        weighted = separability_table(store, weights=(1.0, 1.0, 0.2))
    keys = ["layer", "head", "frame"]
    np.testing.assert_array_equal(
        official.sort_values(keys)["S"].to_numpy(), PLANTED_S.astype(np.float32).ravel()
    )
    flat = torch.from_numpy(components).flatten(3, 4)  # (layer, head, frame, 256, 3)
    for table, variant, weights in (
        (normalised, "normalised", (1.0, 1.0, 0.1)),
        (weighted, "official", (1.0, 1.0, 0.2)),
    ):
        expected = separability(flat, 16, 16, variant, weights).reshape(-1, 4).numpy()
        got = table.sort_values(keys)[["S1", "S2", "S3", "S"]].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        assert set(table["variant"]) == {variant}
    chosen = choose_heads(normalised, "per_frame", layer=0)  # the blob head wins on real components too
    assert chosen["head"].tolist() == [0, 2, 2]


def test_head_choice_rules_and_ranking(self_store) -> None:
    with open_store(self_store[0]) as store:
        table = separability_table(store)
    per_frame = choose_heads(table, "per_frame", layer=0)
    assert per_frame[["frame", "layer", "head"]].values.tolist() == [[0, 0, 0], [1, 0, 2], [2, 0, 2]]
    assert per_frame["S"].tolist() == [5.0, 5.0, 4.0]
    assert choose_heads(table, "per_frame", layer=1)["head"].tolist() == [0, 2, 0]
    per_video = choose_heads(table, "per_video", layer=0)
    assert per_video["head"].tolist() == [1, 1, 1] and per_video["S"].tolist() == [4.0, 4.5, 3.0]
    per_layer = choose_heads(table, "per_layer")
    assert per_layer[["layer", "head"]].drop_duplicates().values.tolist() == [[1, 0]]
    with pytest.raises(ValueError, match="layer="):
        choose_heads(table, "per_frame")
    ranks = rank_heads(table)
    for layer in range(2):
        part = ranks[ranks["layer"] == layer]
        assert part["head"].tolist() == np.argsort(-PLANTED_S[layer].mean(axis=1)).tolist()
        np.testing.assert_allclose(part["S"], np.sort(PLANTED_S[layer].mean(axis=1))[::-1], rtol=1e-6)
