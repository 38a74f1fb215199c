"""The exact colour counter on drawn frames with known counts."""

from __future__ import annotations

import numpy as np
import pytest

from numina.evaluation.counters import ExactColourCounter

RED, BLUE, GREY = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9), (0.5, 0.5, 0.5)


def _frame(discs: list[tuple[int, int, int, tuple[float, float, float]]], size: int = 64) -> np.ndarray:
    frame = np.empty((size, size, 3), dtype=np.float32)
    frame[:] = GREY
    yy, xx = np.mgrid[:size, :size]
    for y, x, radius, colour in discs:
        frame[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = colour
    return frame


def test_counts_discs_of_each_colour_in_every_frame() -> None:
    frames = np.stack(
        [
            _frame([(10, 10, 4, RED), (10, 40, 4, RED), (40, 20, 5, BLUE)]),
            _frame([(10, 10, 4, RED), (40, 20, 5, BLUE), (40, 45, 5, BLUE), (20, 30, 3, BLUE)]),
            _frame([]),
        ]
    )
    counter = ExactColourCounter({"cats": RED, "dog": BLUE})
    assert counter.count(frames, "cats").tolist() == [2, 1, 0]
    assert counter.count(frames, "Dog").tolist() == [1, 3, 0]
    as_bytes = (frames * 255).round().astype(np.uint8)
    assert counter.count(as_bytes, "cats").tolist() == [2, 1, 0]


def test_touching_regions_of_other_colours_stay_apart_and_specks_are_ignored() -> None:
    frame = _frame([(30, 20, 6, RED), (30, 32, 6, BLUE)])  # the discs touch
    frame[5, 5] = RED  # a one-pixel speck, e.g. decoder noise
    frame[50:53, 50:53] = RED  # an overlap of two red discs drawn as one region
    counter = ExactColourCounter({"cat": RED, "dog": BLUE}, min_area=4)
    assert counter.count(frame[None], "cat").tolist() == [2]
    assert counter.count(frame[None], "dog").tolist() == [1]
    two = _frame([(20, 20, 5, RED), (20, 32, 5, RED)])  # a one-pixel gap: two instances
    assert counter.count(two[None], "cat").tolist() == [2]


def test_bad_input_is_explained() -> None:
    counter = ExactColourCounter({"cat": RED})
    with pytest.raises(KeyError, match="no colour for noun 'dog'"):
        counter.count(np.zeros((1, 8, 8, 3)), "dog")
    with pytest.raises(ValueError, match=r"\(frames, H, W, 3\)"):
        counter.count(np.zeros((8, 8, 3)), "cat")
    with pytest.raises(ValueError, match="connectivity"):
        ExactColourCounter({"cat": RED}, connectivity=6)
