"""Temporally consistent correction: tracks follow objects whose per-frame labels are shuffled."""

from __future__ import annotations

import numpy as np

from numina.method.correct import correct_layout
from numina.method.layout import Layout
from numina.method.tracking import correct_tracked, removal_order, track_instances

FRAMES, H, W = 6, 12, 20
# Object A's size alternates 9/12 (mean 10), B's 12/9 (mean 11), C is 25: the per-frame smallest
# flips between A and B, the smallest on average is always A.
WIDTH_A = [3, 4, 3, 4, 3, 3]
WIDTH_B = [4, 3, 4, 3, 4, 4]
# MeanShift numbers each frame's clusters on its own: the same objects get other labels per frame.
NUMBERING = [(1, 2, 3), (3, 1, 2), (2, 3, 1), (1, 3, 2), (3, 2, 1), (2, 1, 3)]


def _objects() -> np.ndarray:
    """(frame, object, H, W) masks of objects A, B, C."""
    masks = np.zeros((FRAMES, 3, H, W), dtype=bool)
    for frame in range(FRAMES):
        masks[frame, 0, 2:5, 1 : 1 + WIDTH_A[frame]] = True
        masks[frame, 1, 2:5, 8 : 8 + WIDTH_B[frame]] = True
        masks[frame, 2, 6:11, 14:19] = True
    return masks


def _labels(masks: np.ndarray) -> np.ndarray:
    labels = np.zeros((FRAMES, H, W), dtype=np.int32)
    for frame, numbers in enumerate(NUMBERING):
        for obj, number in enumerate(numbers):
            labels[frame][masks[frame, obj]] = number
    return labels


def test_tracks_keep_one_label_per_object() -> None:
    masks = _objects()
    tracked = track_instances(_labels(masks))
    for obj in range(3):
        values = {int(np.unique(tracked[frame][masks[frame, obj]]).item()) for frame in range(FRAMES)}
        assert len(values) == 1  # the same label in every frame
    assert removal_order(tracked)[0] == int(
        np.unique(tracked[0][masks[0, 0]]).item()
    )  # A: smallest on average


def test_tracked_removal_takes_the_same_object_in_every_frame() -> None:
    masks = _objects()
    layout = Layout({"cat": _labels(masks)})
    release, _ = correct_layout(layout, {"cat": 2})
    tracked, edits = correct_tracked(layout, {"cat": 2})
    removed_by_release = [
        int(np.argmax([(release["cat"][f] == -1)[masks[f, o]].all() for o in range(3)]))
        for f in range(FRAMES)
    ]
    assert removed_by_release == [0, 1, 0, 1, 0, 0]  # the release flickers between A and B
    for frame in range(FRAMES):
        np.testing.assert_array_equal(tracked["cat"][frame] == -1, masks[frame, 0])  # always A
    assert tracked.counts("cat").tolist() == [2] * FRAMES
    assert [edit.kind for edit in edits] == ["remove"] * FRAMES and len({edit.label for edit in edits}) == 1


def test_tracked_additions_reach_the_target_and_stay_in_place() -> None:
    layout = Layout({"cat": _labels(_objects())})
    corrected, edits = correct_tracked(layout, {"cat": 4})
    assert corrected.counts("cat").tolist() == [4] * FRAMES
    centres = [edit.centre for edit in edits if edit.kind == "add"]
    assert len(centres) == FRAMES
    spread = np.ptp(np.array(centres), axis=0)
    assert spread.max() <= 2  # C_t keeps the added instance where it was
