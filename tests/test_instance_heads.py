"""Gate G3's measure: how many nats a head keeps on a query's own instance over another instance of the
same kind (and over its background ring), on hand-computed maps; the counter's instance labels; and the
script's per-prompt rows read from a store written by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from experiment_scripts import load_experiment

from analysis.instance_heads import (
    DENSITY_FLOOR,
    edge_separation,
    instance_separation,
    latent_frame_sources,
    separation_summary,
)
from numina.evaluation.counters import ExactColourCounter
from numina.evaluation.true_instances import token_instances
from numina.store import AttentionStoreWriter

# One row of six tokens: instance 1, instance 1, gap, gap, instance 2, instance 2.
ROW = np.array([[1, 1, 0, 0, 2, 2]])


def rows_of(own: float, other: float, gap: float) -> np.ndarray:
    """A (6, 6) map whose query rows give `own` to each own-instance token, `other` to each token of the
    other instance and `gap` to each gap token (each row sums to 1 when 2 own + 2 other + 2 gap = 1)."""
    attention = np.zeros((6, 6))
    for query in range(6):
        mine = ROW[0] == ROW[0, query]
        attention[query] = np.where(mine, own, np.where(ROW[0] == 0, gap, other))
    attention[2:4] = 1 / 6  # gap queries are not measured
    return attention


def test_separation_is_the_log_ratio_of_per_token_densities():
    instance_head = rows_of(own=0.4, other=0.05, gap=0.05)
    uniform = np.full((6, 6), 1 / 6)
    measured = instance_separation(np.stack([instance_head, uniform]), ROW)
    assert measured["nats"] == pytest.approx([math.log(8), 0.0])  # 0.4 / 0.05 on both sides
    assert measured["ring_nats"] == pytest.approx([math.log(8), 0.0])  # the gap is both rings
    assert measured["pairs"] == 2 and measured["floored"] == 0


def test_area_does_not_count_only_density():
    labels = np.array([[1, 1, 1, 0, 2, 0]])  # a large and a small instance, equal densities
    attention = np.full((1, 6, 6), 1 / 6)
    assert instance_separation(attention, labels)["nats"] == pytest.approx([0.0])


def test_a_locality_head_separates_instances_but_not_from_their_ring():
    # Two 3x3 instances far apart on a 12x12 grid; head 0 attends by distance only, head 1 by instance.
    labels = np.zeros((12, 12), dtype=int)
    labels[1:4, 1:4], labels[8:11, 8:11] = 1, 2
    y, x = np.divmod(np.arange(144), 12)
    distance = np.hypot(y[:, None] - y[None], x[:, None] - x[None])
    locality = np.exp(-distance / 3)  # a neighbourhood of about an instance's width
    same = labels.reshape(-1)[:, None] == labels.reshape(-1)[None]
    instance = np.where(same & (labels.reshape(-1)[None] > 0), 1.0, 1e-3)
    maps = np.stack([m / m.sum(axis=1, keepdims=True) for m in (locality, instance)])
    measured = instance_separation(maps, labels)
    assert measured["nats"][0] > 2 and measured["ring_nats"][0] < 1  # near, not an instance
    assert measured["nats"][1] == pytest.approx(math.log(1000)) == pytest.approx(measured["ring_nats"][1])


@pytest.mark.parametrize("reach", [1.0, 3.0])
def test_at_equal_distance_a_locality_head_scores_zero_and_an_instance_bonus_scores_itself(reach: float):
    """Logits -|q - k|_1 / reach + b [k in q's instance]: at one distance from the query the positional
    part and the normaliser cancel, so edge_nats is b (1.5 here) whatever the reach; 0 without the bonus,
    while the far-apart instances give a locality head a large `nats` and a sharp one a ring win too."""
    labels = np.zeros((12, 12), dtype=int)
    labels[1:5, 1:4], labels[7:11, 7:10] = 1, 2
    y, x = np.divmod(np.arange(144), 12)
    distance = np.abs(y[:, None] - y[None]) + np.abs(x[:, None] - x[None])
    flat = labels.reshape(-1)
    same = (flat[:, None] == flat[None]) & (flat[:, None] > 0)
    logits = np.stack([-distance / reach, -distance / reach + 1.5 * same])
    maps = np.exp(logits - logits.max(axis=-1, keepdims=True))
    maps /= maps.sum(axis=-1, keepdims=True)
    measured = instance_separation(maps, labels)
    assert measured["edge_nats"] == pytest.approx([0.0, 1.5], abs=1e-9)
    assert measured["nats"][0] > 2  # far-apart instances: locality alone wins `nats`
    assert np.isnan(edge_separation(maps, np.array([[1] * 12] * 12))).all()  # nothing outside the instance


def test_nan_maps_are_refused_and_a_walled_in_instance_has_no_ring():
    with pytest.raises(ValueError, match="NaN or inf"):
        instance_separation(np.full((1, 6, 6), np.nan), ROW)
    touching = np.array([[1, 2]])  # two instances and no background: no ring to compare with
    measured = instance_separation(np.full((1, 2, 2), 0.5), touching)
    assert measured["nats"] == pytest.approx([0.0]) and np.isnan(measured["ring_nats"]).all()


def test_nothing_to_separate_and_bad_shapes():
    assert instance_separation(np.full((1, 6, 6), 1 / 6), np.array([[1, 1, 0, 0, 0, 0]])) is None
    with pytest.raises(ValueError, match="do not fit"):
        instance_separation(np.full((1, 6, 6), 1 / 6), np.zeros((2, 4), dtype=int))


def test_zeros_of_float16_maps_are_floored_and_reported():
    attention = rows_of(own=0.5, other=0.0, gap=0.0)[None]
    measured = instance_separation(attention, ROW)
    assert measured["nats"][0] == pytest.approx(math.log(0.5 / DENSITY_FLOOR))
    assert measured["floored"] == pytest.approx(0.5)  # each query's other-instance density


def test_tokens_take_the_instance_covering_half_their_pixels():
    pixels = np.zeros((8, 8), dtype=int)
    pixels[0:2, 0:4] = 1  # half of token (0, 0): taken
    pixels[4:7, 4:6] = 2  # 6 of 16 pixels of token (1, 1): not taken
    assert token_instances(pixels, 4).tolist() == [[1, 0], [0, 0]]
    with pytest.raises(ValueError, match="whole number"):
        token_instances(np.zeros((6, 8), dtype=int), 4)
    assert latent_frame_sources(5) == [0, 4, 8, 12, 16]


def test_counter_labels_the_instances_it_counts():
    frame = np.zeros((1, 16, 16, 3), dtype=np.float32)
    frame[0, 1:4, 1:4] = frame[0, 8:12, 8:12] = (1.0, 0.0, 0.0)
    frame[0, 14, 14:17] = (1.0, 0.0, 0.0)  # a 2-pixel speck, under min_area
    counter = ExactColourCounter({"circles": (1.0, 0.0, 0.0)})
    labels = counter.instances(frame, "circles")
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2] and labels[0, 14, 14] == 0
    assert (labels == 1).sum() == 9 and (labels == 2).sum() == 16
    assert counter.count(frame, "circles").tolist() == [2]


def test_summary_weighs_each_prompt_once():
    rows = [{"layer": 5, "head": 0, "prompt_id": 0, "nats": 1.0, "ring_nats": 0.5, "edge_nats": 0.1}] * 3 + [
        {"layer": 5, "head": 0, "prompt_id": 1, "nats": 3.0, "ring_nats": 1.5, "edge_nats": 0.3}
    ]
    summary = separation_summary(pd.DataFrame(rows))
    assert summary.loc[0, "nats"] == pytest.approx(2.0) and summary.loc[0, "prompts"] == 2
    assert summary.loc[0, "edge_nats"] == pytest.approx(0.2)


def test_script_rows_follow_the_stored_maps_and_the_video(tmp_path: Path):
    """A hand-written store (two heads at one block: head 1 separates, head 0 is uniform; S picks head 1)
    and a video of two red squares: the script's rows measure log(8) and 0, and mark S's choice."""
    prompt_rows = load_experiment("instance_heads").prompt_rows
    labels = np.zeros((2, 3), dtype=int)
    labels[0, 0], labels[1, 2] = 1, 2
    flat = labels.reshape(-1)
    separating = np.where(flat[:, None] == flat[None], 0.5, 0.1)
    separating[flat == 0] = 1 / 6
    separating /= separating.sum(axis=1, keepdims=True)
    maps = np.stack([np.full((6, 6), 1 / 6), separating])[:, None]  # (head, frame, query, key)
    path = tmp_path / "attention.h5"
    with AttentionStoreWriter(path) as writer:
        writer.create_group("self_attention", {"step": [3], "branch": ["cond"], "layer": [2], "head": [0, 1],
                                               "frame": [0], "query": range(6), "key": range(6),
                                               "term": ["S1", "S2", "S3", "S"]})  # fmt: skip
        dims = ("step", "branch", "layer", "head", "frame")
        writer.create_dataset("self_attention/maps", (*dims, "query", "key"), dtype="float32",
                              chunk_dims=("step", "branch", "layer"))  # fmt: skip
        writer.create_dataset("self_attention/scores", (*dims, "term"), dtype="float32",
                              chunk_dims=("step", "branch", "layer"))  # fmt: skip
        index = {"step": 3, "branch": "cond", "layer": 2}
        writer.write("self_attention/maps", index, maps)
        writer.write("self_attention/scores", index, np.array([[[0, 0, 0, 0.1]], [[0, 0, 0, 0.9]]]))
    video = np.zeros((1, 8, 12, 3), dtype=np.float32)
    video[0, 0:4, 0:4] = video[0, 4:8, 8:12] = (1.0, 0.0, 0.0)
    counter = ExactColourCounter({"squares": (1.0, 0.0, 0.0)})
    rows = prompt_rows(path, video, counter, {"squares": 2}, stride=4)
    assert [row["head"] for row in rows] == [0, 1]
    assert rows[0]["nats"] == pytest.approx(0.0) and rows[1]["nats"] == pytest.approx(math.log(5))
    assert [row["chosen_by_s"] for row in rows] == [False, True]
    assert {row["layer"] for row in rows} == {2} and all(isinstance(row["frame"], int) for row in rows)


def test_a_job_from_before_edge_nats_is_measured_again(tmp_path: Path):
    job_done = load_experiment("instance_heads").job_done
    old, new, empty = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "empty.json"
    old.write_text(json.dumps([{"prompt_id": 0, "nats": 1.0, "ring_nats": 0.5}]))
    new.write_text(json.dumps([{"prompt_id": 1, "nats": 1.0, "ring_nats": 0.5, "edge_nats": 0.2}]))
    empty.write_text("[]")  # a prompt with nothing to separate is done
    assert [job_done(path) for path in (old, new, empty, tmp_path / "absent.json")] == [
        False,
        True,
        True,
        False,
    ]
