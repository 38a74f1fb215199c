"""Temporally consistent layouts, an improvement over the release: one instance, one label, every frame.

The release lays out and corrects each latent frame on its own. MeanShift numbers a frame's clusters
independently, and "the smallest instance" can be a different object from frame to frame, so
removals flicker between objects. This module makes the correction follow objects over time:

    track     each frame's detected instances (labels 1..99) take the label of the previous frame's
              instance they overlap most (IoU >= `min_iou`, one-to-one by the Hungarian assignment,
              scipy); unmatched instances get new labels
    remove    per frame, present tracks are removed in one order for the whole video: smallest mean
              size over the frames where the track appears first (ties to the lower label)
    add       as the release (template of the smallest instance present, placement by cost, C_t
              pulling each addition towards the previous frame's), on the tracked labels

May import numpy, scipy and numina.method (correct, layout).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from numina.method.correct import DEFAULT_WEIGHTS, Edit, Weights, check_correction, correct_frame
from numina.method.layout import ADDED_BASE, BACKGROUND, REMOVED, Layout


def _instances(labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(labels) if BACKGROUND < v < ADDED_BASE]


def track_instances(labels: np.ndarray, min_iou: float = 0.1) -> np.ndarray:
    """(frames, H, W) labels with each detected instance relabelled to follow the previous frame's."""
    labels = np.asarray(labels)
    tracked = np.zeros_like(labels)
    tracked[labels < BACKGROUND] = labels[labels < BACKGROUND]
    tracked[labels >= ADDED_BASE] = labels[labels >= ADDED_BASE]
    next_label = 1
    for frame in range(labels.shape[0]):
        current = _instances(labels[frame])
        previous = _instances(tracked[frame - 1]) if frame else []
        assigned: dict[int, int] = {}
        if current and previous:
            iou = np.zeros((len(current), len(previous)))
            for i, label in enumerate(current):
                mask = labels[frame] == label
                for j, track in enumerate(previous):
                    other = tracked[frame - 1] == track
                    iou[i, j] = (mask & other).sum() / (mask | other).sum()
            for i, j in zip(*linear_sum_assignment(-iou), strict=True):
                if iou[i, j] >= min_iou:
                    assigned[current[i]] = previous[j]
        for label in current:
            if label not in assigned:  # a new track: labels are never reused
                if next_label >= ADDED_BASE:
                    raise ValueError(f"more than {ADDED_BASE - 1} instance tracks in one video")
                assigned[label] = next_label
                next_label += 1
            tracked[frame][labels[frame] == label] = assigned[label]
    return tracked


def removal_order(tracked: np.ndarray) -> list[int]:
    """Tracks from first to last removed: smallest mean size over the frames they appear in."""
    sizes: dict[int, list[int]] = {}
    for frame in tracked:
        labels, counts = np.unique(frame[(frame > BACKGROUND) & (frame < ADDED_BASE)], return_counts=True)
        for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
            sizes.setdefault(label, []).append(count)
    return sorted(sizes, key=lambda label: (np.mean(sizes[label]), label))


def correct_tracked(
    layout: Layout,
    targets: Mapping[str, int],
    weights: Weights = DEFAULT_WEIGHTS,
    stride: int = 2,
    disc_radius: int = 5,
    min_iou: float = 0.1,
) -> tuple[Layout, list[Edit]]:
    """Like `correct.correct_layout`, on tracked labels, removing whole tracks in one order."""
    check_correction(targets, layout.nouns, stride, disc_radius)
    labels = layout.to_dict()
    edits: list[Edit] = []
    for noun, target in targets.items():
        tracked = track_instances(labels[noun], min_iou)
        order = removal_order(tracked)
        previous: list[tuple[float, float]] = []
        for frame in range(tracked.shape[0]):
            present = _instances(tracked[frame]) + [
                int(v) for v in np.unique(tracked[frame]) if v >= ADDED_BASE
            ]
            excess = len(present) - int(target)
            for track in [t for t in order if t in present][: max(excess, 0)]:
                tracked[frame][tracked[frame] == track] = REMOVED
                edits.append(Edit(frame, noun, "remove", track))
            tracked[frame], previous, added = correct_frame(
                tracked[frame], int(target), previous, weights, stride, disc_radius, frame, noun
            )
            edits.extend(added)
        labels[noun] = tracked
    return Layout(labels), edits
