"""numina.method.layout and numina.method.correct on planted layouts and hand-built frames."""

from __future__ import annotations

import numpy as np
import pytest

from numina.method.correct import (
    Edit,
    correct_frame,
    correct_layout,
    disc,
    place_template,
    placement_costs,
    remove_smallest,
    template_of,
)
from numina.method.layout import (
    Layout,
    LayoutOptions,
    build_layout,
    focus_mask,
    frame_layout,
    instance_features,
    segment_frame,
)
from numina.method.tracking import correct_tracked

H, W = 30, 52  # the latent grid of Wan2.1 at 832 x 480
# Four well separated 6 x 8 blobs, each with its own component vector (background 0): MeanShift then
# finds each blob as one cluster; with one shared vector it merges them all into one.
BOXES = [(3, 9, 4, 12), (3, 9, 40, 48), (20, 26, 4, 12), (20, 26, 40, 48)]
VECTORS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0)]


def _planted(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Components (H*W, 3) of k planted blobs, and a cross map that is 1 exactly on them."""
    components = np.zeros((H, W, 3))
    cross = np.zeros((H, W))
    for (y0, y1, x0, x1), vector in zip(BOXES[:k], VECTORS, strict=False):
        components[y0:y1, x0:x1] = vector
        cross[y0:y1, x0:x1] = 1.0
    return components.reshape(-1, 3), cross


def _box_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    return mask


# --- layout ---------------------------------------------------------------------------------------------


def test_planted_blobs_are_counted_and_clusters_are_shared_by_nouns() -> None:
    planted = [_planted(k) for k in range(1, 5)]  # frame f holds f + 1 blobs
    components = np.stack([c for c, _ in planted])
    blobs = np.stack([cross for _, cross in planted])
    first_only = np.zeros_like(blobs)
    first_only[:, BOXES[0][0] : BOXES[0][1], BOXES[0][2] : BOXES[0][3]] = 1.0
    layout = build_layout(components, {"blob": blobs, "first": first_only}, H, W)
    assert layout.shape == (4, H, W)
    np.testing.assert_array_equal(layout.counts("blob"), [1, 2, 3, 4])
    np.testing.assert_array_equal(layout.counts("first"), [1, 1, 1, 1])
    for frame in range(4):
        labels = layout["blob"][frame]
        instances = {int(label) for label in np.unique(labels) if label > 0}
        assert instances == set(range(1, frame + 2))  # numbered 1, 2, ... without gaps
        for box in BOXES[: frame + 1]:  # each instance is exactly one planted blob
            label = labels[box[0], box[2]]
            np.testing.assert_array_equal(labels == label, _box_mask(box))
        assert (labels > 0).sum() == 48 * (frame + 1)


def test_wide_cross_map_overcounts_a_background_piece() -> None:
    """The release's known over-count (METHOD.md, "Known weaknesses"), kept as a record of what it does.

    One planted blob, a cross map that is a Gaussian of sigma 5 around it: the focus mask (>= 5% of the
    peak) spreads far beyond the blob, MeanShift splits the background into two spatial pieces, and the
    piece nearest the blob has > 20% of its positions in the focus mask, so it counts as an instance.
    """
    components, _ = _planted(1)
    rows, cols = np.mgrid[:H, :W]
    cross = np.exp(-((rows - 5.5) ** 2 + (cols - 7.5) ** 2) / (2 * 5.0**2))
    clusters = segment_frame(instance_features(components, H, W), H, W)
    focus = focus_mask(cross)
    labels = frame_layout(clusters, focus)
    assert len(np.unique(clusters)) == 3  # the blob and two background pieces
    assert labels.max() == 2  # one blob, counted as two
    blob = _box_mask(BOXES[0])
    blob_label = np.unique(labels[blob])
    assert len(blob_label) == 1 and (labels == blob_label[0]).sum() == blob.sum()
    extra = (labels > 0) & (labels != blob_label[0])
    assert not (extra & blob).any() and extra.sum() > 10 * blob.sum()  # a large stretch of background
    assert 0.2 <= (extra & focus).sum() / extra.sum() < 0.5


def test_instance_features_normalise_components_and_append_half_coordinates() -> None:
    components = np.zeros((4 * 3, 4), dtype=np.float32)
    components[:, 0] = np.arange(12) * 2.0 - 5.0  # spans [-5, 17]
    components[:, 1] = 7.0  # flat: left as it is (the score's grey image would use 0.5)
    components[:, 2] = -np.arange(12)
    components[:, 3] = 99.0  # a 4th component is ignored
    features = instance_features(components, 4, 3)
    assert features.shape == (12, 5) and features.dtype == np.float64
    np.testing.assert_allclose(features[:, 0], np.arange(12) / 11, rtol=1e-6)
    np.testing.assert_array_equal(features[:, 1], 7.0)
    np.testing.assert_allclose(features[:, 2], 1 - np.arange(12) / 11, rtol=1e-6)
    rows, cols = np.meshgrid(np.linspace(0, 1, 4), np.linspace(0, 1, 3), indexing="ij")
    np.testing.assert_array_equal(features[:, 3], 0.5 * rows.ravel())
    np.testing.assert_array_equal(features[:, 4], 0.5 * cols.ravel())
    with pytest.raises(ValueError, match="k >= 3"):
        instance_features(components[:, :2], 4, 3)


def test_focus_mask_keeps_blobs_and_drops_isolated_positions() -> None:
    cross = np.full((20, 20), 0.01)  # below 5% of the peak
    cross[5:8, 5:8] = 1.0  # a 3 x 3 blob: 9 positions, a DBSCAN core
    cross[1, 18] = 0.05  # exactly at the threshold, isolated: noise
    cross[18, 1] = 0.9  # isolated: noise
    cross[15:17, 15] = 0.5  # 2 positions close together, still fewer than min_samples 5: noise
    expected = np.zeros((20, 20), dtype=bool)
    expected[5:8, 5:8] = True
    np.testing.assert_array_equal(focus_mask(cross), expected)
    cross[1:3, 16:19] = 0.05  # the isolated one becomes part of a 6-position group at the threshold
    expected[1:3, 16:19] = True
    np.testing.assert_array_equal(focus_mask(cross), expected)


def test_twenty_percent_rule_and_numbering_order() -> None:
    clusters = np.zeros((10, 50), dtype=np.int64)  # cluster 0: background, never in focus
    clusters[0:2, :] = 7  # 100 positions
    clusters[2:4, :] = 3  # 100 positions
    clusters[4:6, :] = 5  # 100 positions
    clusters[6, :15] = 9  # 15 positions
    focus = np.zeros_like(clusters, dtype=bool)
    focus[0, :21] = True  # cluster 7: 21% -> instance
    focus[2, :19] = True  # cluster 3: 19% -> not
    focus[4, :20] = True  # cluster 5: exactly 20% -> instance
    focus[6, :3] = True  # cluster 9: 3 of 15 = 0.2 (0.2 * 15 would be 3.0000000000000004) -> instance
    labels = frame_layout(clusters, focus)
    assert (labels[clusters == 3] == 0).all() and (labels[clusters == 0] == 0).all()
    # numbered in increasing cluster id: 5 -> 1, 7 -> 2, 9 -> 3
    assert (labels[clusters == 5] == 1).all()
    assert (labels[clusters == 7] == 2).all()
    assert (labels[clusters == 9] == 3).all()
    assert labels.dtype == np.int32


def test_layout_storage_and_validation() -> None:
    labels = np.zeros((2, 4, 5), dtype=np.int64)
    labels[0, 0, 0], labels[0, 1, 1], labels[0, 2, 2], labels[1, 3, 3] = 1, 2, -1, 100
    layout = Layout({"cat": labels})
    np.testing.assert_array_equal(layout.counts("cat"), [2, 1])  # -1 does not count, 100 does
    stored = layout.to_dict()
    stored["cat"][0, 0, 0] = 0  # a writable copy: the layout is untouched
    assert layout["cat"][0, 0, 0] == 1 and not layout["cat"].flags.writeable
    np.testing.assert_array_equal(Layout.from_dict(layout.to_dict())["cat"], labels)
    with pytest.raises(ValueError, match="one"):
        Layout({"cat": labels, "dog": labels[:, :3]})
    with pytest.raises(ValueError, match="integer"):
        Layout({"cat": labels.astype(float)})
    with pytest.raises(KeyError, match="cat"):
        layout["dog"]
    assert LayoutOptions() == LayoutOptions(0.05, 3.0, 5, 0.2, 0.2, 1000, 0.5)


# --- correction -----------------------------------------------------------------------------------------


def _rectangles(height: int, width: int, rects: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.int32)
    for label, y0, y1, x0, x1 in rects:
        labels[y0:y1, x0:x1] = label
    return labels


def test_remove_smallest_ties_to_lower_label_and_repeats_until_count_matches() -> None:
    labels = _rectangles(10, 10, [(1, 0, 2, 0, 2), (2, 4, 5, 0, 2), (3, 4, 5, 5, 7), (4, 7, 9, 5, 8)])
    # sizes: 1 -> 4, 2 -> 2, 3 -> 2, 4 -> 6
    once, removed = remove_smallest(labels)
    assert removed == 2 and (once[4, 0:2] == -1).all() and (once[labels != 2] == labels[labels != 2]).all()
    corrected, added, edits = correct_frame(labels, 1, frame=3, noun="cat")
    assert [edit.label for edit in edits] == [2, 3, 1] and added == []
    assert all(edit.kind == "remove" and edit.frame == 3 and edit.noun == "cat" for edit in edits)
    assert set(np.unique(corrected)) == {-1, 0, 4}
    np.testing.assert_array_equal(corrected == -1, np.isin(labels, [1, 2, 3]))
    with pytest.raises(ValueError, match="no instance"):
        remove_smallest(np.zeros((3, 3), dtype=np.int32))


def _brute_force_costs(
    labels: np.ndarray, template: np.ndarray, previous: tuple[float, float] | None, weights=(1.0, 1.0, 8.0)
) -> dict[tuple[int, int], float]:
    """Every valid centre's cost, written out position by position from METHOD.md."""
    height, width = labels.shape
    th, tw = template.shape
    instance = [(y, x) for y in range(height) for x in range(width) if labels[y, x] > 0]
    if instance:
        cy0 = sum(y for y, _ in instance) / len(instance)
        cx0 = sum(x for _, x in instance) / len(instance)
    else:
        cy0, cx0 = height / 2, width / 2
    costs = {}
    for cy in range(height):
        for cx in range(width):
            if cy < th // 2 or (cy - th // 2) % 2 or cx < tw // 2 or (cx - tw // 2) % 2:
                continue  # not on the stride-2 candidate lattice
            top, left = cy - th // 2, cx - tw // 2
            if top + th > height or left + tw > width:
                continue
            overlap = sum(
                1
                for dy in range(th)
                for dx in range(tw)
                if template[dy, dx] and labels[top + dy, left + dx] > 0
            )
            drift = 0.0 if previous is None else (cy - previous[0]) ** 2 + (cx - previous[1]) ** 2
            spread = (cy - cy0) ** 2 + (cx - cx0) ** 2
            costs[cy, cx] = weights[0] * overlap + weights[1] * spread + weights[2] * drift
    return costs


@pytest.mark.parametrize("seed", range(6))
def test_placement_costs_and_choice_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = 14, 19
    labels = np.zeros((height, width), dtype=np.int32)
    for label in range(1, rng.integers(2, 5)):
        y0, x0 = rng.integers(0, height - 2), rng.integers(0, width - 2)
        labels[y0 : y0 + rng.integers(2, 6), x0 : x0 + rng.integers(2, 7)] = label
    labels[rng.random((height, width)) < 0.05] = -1  # removed positions count as free
    template = rng.random((int(rng.integers(2, 6)), int(rng.integers(2, 6)))) < 0.7
    template[0, 0] = template[-1, -1] = True
    previous = None if seed % 2 else (float(rng.integers(0, height)), float(rng.integers(0, width)))
    expected = _brute_force_costs(labels, template, previous)
    grid = placement_costs(labels, template, previous)
    got = {
        (int(cy), int(cx)): float(grid.cost[i, j])
        for i, cy in enumerate(grid.rows)
        for j, cx in enumerate(grid.cols)
        if np.isfinite(grid.cost[i, j])
    }
    assert got.keys() == expected.keys()
    for centre, cost in expected.items():
        assert got[centre] == pytest.approx(cost, rel=1e-12, abs=1e-12)
    lowest = min(expected.values())
    first = min(centre for centre, cost in expected.items() if cost == lowest)  # row-major first
    placed, centre, cost = place_template(labels, template, 100, previous)
    assert centre == first and cost == pytest.approx(lowest)
    top, left = centre[0] - template.shape[0] // 2, centre[1] - template.shape[1] // 2
    window = placed[top : top + template.shape[0], left : left + template.shape[1]]
    assert (window[template] == 100).all()  # the template's positions overwrite what they land on
    untouched = np.ones_like(labels, dtype=bool)
    untouched[top : top + template.shape[0], left : left + template.shape[1]] = ~template
    np.testing.assert_array_equal(placed[untouched], labels[untouched])


def test_odd_template_skips_the_overhanging_last_candidate() -> None:
    grid = placement_costs(np.zeros((9, 9), dtype=np.int32), np.ones((3, 3), dtype=bool))
    # candidates 1, 3, 5, 7, 9 - 1 = 8 -> range(1, 9, 2); centre 7 puts the template on rows 6..8: fits
    np.testing.assert_array_equal(grid.rows, [1, 3, 5, 7])
    grid = placement_costs(np.zeros((8, 8), dtype=np.int32), np.ones((3, 3), dtype=bool))
    np.testing.assert_array_equal(grid.rows, [1, 3, 5, 7])  # centre 7 -> rows 6..8: outside an 8-row grid
    assert np.isinf(grid.cost[-1]).all() and np.isinf(grid.cost[:, -1]).all()
    assert np.isfinite(grid.cost[:-1, :-1]).all()


def test_empty_frame_gets_a_disc_at_the_grid_centre_then_an_overlapping_copy() -> None:
    shape = disc(5)
    assert shape.shape == (11, 11) and shape.sum() == 81  # dy^2 + dx^2 <= 25
    assert shape[5].all() and shape[:, 5].all() and not shape[0, 0] and not shape[1, 1] and shape[1, 2]
    np.testing.assert_array_equal(shape, shape[::-1])
    np.testing.assert_array_equal(shape, shape.T)
    template, source = template_of(np.zeros((H, W), dtype=np.int32))
    assert source == "disc" and template.shape == (11, 11)

    one, _, edits = correct_frame(np.zeros((H, W), dtype=np.int32), 1)
    # No instance: the centroid is (H / 2, W / 2) = (15, 26). Rows 5, 7, ..., 25 -> 15; columns
    # 5, 7, ..., 47 -> 25 and 27 tie at distance 1, the first wins.
    assert edits == [Edit(0, "", "add", 100, "disc", (15, 25), 1.0)]
    first = np.zeros((H, W), dtype=bool)
    first[10:21, 20:31] = shape
    np.testing.assert_array_equal(one == 100, first)

    two, added, edits = correct_frame(np.zeros((H, W), dtype=np.int32), 2)
    np.testing.assert_array_equal(two == 100, first & (two != 101))
    # The second addition copies the first (now the smallest instance). C_c (squared distance) outweighs
    # C_o (overlapping positions), so it lands partly on the first and overwrites those positions.
    assert edits[1].label == 101 and edits[1].source == 100
    assert edits[1].centre == placement_costs(one, first[10:21, 20:31]).best()[0]
    assert (two == 101).sum() == 81 and 0 < ((two == 101) & first).sum() < 81
    assert added == [(15.0, 25.0), tuple(map(float, edits[1].centre))]
    assert np.unique(two).tolist() == [0, 100, 101]


def test_disc_larger_than_the_grid_falls_back_to_the_centre_clipped() -> None:
    labels, centre, cost = place_template(np.zeros((8, 9), dtype=np.int32), disc(5), 100)
    assert centre == (4, 4) and cost is None
    expected = np.zeros((8, 9), dtype=bool)
    expected[:, :] = disc(5)[1:9, 1:10]  # the disc's top-left lands on (-1, -1)
    np.testing.assert_array_equal(labels == 100, expected)


def test_temporal_term_pulls_an_addition_towards_the_previous_frames() -> None:
    frames = np.zeros((3, H, W), dtype=np.int32)
    frames[0, 2:6, 2:6] = 1  # an instance top left: the addition lands beside it
    frames[1, 24:28, 46:50] = 1  # the instance jumps bottom right
    frames[2, 24:28, 46:50] = 1
    frames[2, 2:6, 2:6] = 2  # frame 2 already has its 2 instances: no addition, so frame 3 has no pull
    frames = np.concatenate([frames, frames[1:2]])  # frame 3 = frame 1
    layout = Layout({"cat": frames})
    with_pull, edits = correct_layout(layout, {"cat": 2})
    without, plain_edits = correct_layout(layout, {"cat": 2}, weights=(1.0, 1.0, 0.0))
    adds = {edit.frame: edit for edit in edits if edit.kind == "add"}
    plain = {edit.frame: edit for edit in plain_edits if edit.kind == "add"}
    assert sorted(adds) == [0, 1, 3] and adds[0].centre == plain[0].centre  # frame 0: nothing before it

    def distance(a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2

    assert distance(adds[1].centre, adds[0].centre) < distance(plain[1].centre, adds[0].centre)
    expected = placement_costs(frames[1], template_of(frames[1])[0], tuple(map(float, adds[0].centre)))
    assert adds[1].centre == expected.best()[0]
    assert adds[3].centre == plain[3].centre  # frame 2 added nothing: no pull on frame 3
    np.testing.assert_array_equal(with_pull.counts("cat"), [2, 2, 2, 2])


def test_corrected_counts_equal_targets_in_every_frame() -> None:
    rng = np.random.default_rng(0)
    frames, height, width = 6, 16, 20
    maps = {}
    for noun in ("cat", "dog", "bird"):
        labels = np.zeros((frames, height, width), dtype=np.int32)
        for frame in range(frames):
            for label in range(1, int(rng.integers(0, 6)) + 1):  # 0..5 instances, frame 0 may be empty
                y0, x0 = rng.integers(0, height - 3), rng.integers(0, width - 3)
                labels[frame, y0 : y0 + int(rng.integers(1, 4)), x0 : x0 + int(rng.integers(1, 4))] = label
        maps[noun] = labels
    layout = Layout(maps)
    before = {noun: layout.counts(noun) for noun in maps}
    targets = {"cat": 3, "dog": 0}
    corrected, edits = correct_layout(layout, targets)
    for noun, target in targets.items():
        np.testing.assert_array_equal(corrected.counts(noun), np.full(frames, target))
        for frame in range(frames):
            done = [edit for edit in edits if edit.noun == noun and edit.frame == frame]
            assert len(done) == abs(before[noun][frame] - target)
            added = sorted(edit.label for edit in done if edit.kind == "add")
            assert added == list(range(100, 100 + len(added)))
    np.testing.assert_array_equal(corrected["bird"], layout["bird"])  # no target: left as it is
    with pytest.raises(ValueError, match="no layout"):
        correct_layout(layout, {"fish": 1})
    for correct in (correct_layout, correct_tracked):  # one check for both corrections
        with pytest.raises(ValueError, match="whole number from 0 to 99"):
            correct(layout, {"cat": -1})
        with pytest.raises(ValueError, match="whole number from 0 to 99"):
            correct(layout, {"cat": 100})
