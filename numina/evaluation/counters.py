"""Counters: how many instances of a noun each frame of a video shows.

Every counter takes decoded frames (frames, H, W, 3), floats in [0, 1] or uint8, and a noun, and
returns one count per frame, so the evaluation can score any counter the same way. This module has
the exact counter for synthetic videos of coloured shapes on a plain background (the ground truth of
the tests and of the small built-in model): an instance is a connected region of pixels within
`tolerance` of the noun's colour. The open-vocabulary detectors (GroundingDINO, OWLv2) come with the
evaluation issue. May import numpy and scipy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
from scipy import ndimage

# Colours handed out to a prompt's nouns in order when no palette is given (synthetic worlds).
DEFAULT_COLOURS = ((0.9, 0.1, 0.1), (0.1, 0.2, 0.9), (0.1, 0.7, 0.2), (0.95, 0.85, 0.1), (0.6, 0.2, 0.8))


def palette_for(nouns: list[str] | tuple[str, ...] | dict) -> dict[str, tuple[float, float, float]]:
    """Each noun's colour from `DEFAULT_COLOURS`, in order (cycling after five nouns)."""
    return {noun: DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i, noun in enumerate(nouns)}


class Counter(Protocol):
    """Counts a noun's instances in every frame: (frames, H, W, 3) -> (frames,) ints."""

    def count(self, frames: np.ndarray, noun: str) -> np.ndarray: ...


def as_float_frames(frames: np.ndarray) -> np.ndarray:
    """Frames as float32 in [0, 1], whatever they came as (uint8 or float)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (frames, H, W, 3), got {frames.shape}")
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    return frames.astype(np.float32)


class ExactColourCounter:
    """Connected components of the noun's colour, per frame.

    `palette` maps a noun (any form the prompts use: "circle", "circles") to an RGB colour in [0, 1].
    A pixel belongs to the noun when every channel is within `tolerance` of that colour; regions
    smaller than `min_area` pixels (edge pixels blended by the decoder) are not counted; pixels touch
    through edges and corners (8-connectivity) unless `connectivity=4`.
    """

    def __init__(
        self,
        palette: Mapping[str, tuple[float, float, float]],
        tolerance: float = 0.12,
        min_area: int = 4,
        connectivity: int = 8,
    ) -> None:
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        if not palette:
            raise ValueError("the palette is empty: give each noun its RGB colour")
        self.palette = {
            noun.lower(): np.asarray(colour, dtype=np.float32) for noun, colour in palette.items()
        }
        self.tolerance, self.min_area = tolerance, min_area
        self.structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)

    def colour_of(self, noun: str) -> np.ndarray:
        key = noun.lower()
        if key not in self.palette:
            raise KeyError(f"no colour for noun {noun!r}; the palette has {sorted(self.palette)}")
        return self.palette[key]

    def masks(self, frames: np.ndarray, noun: str) -> np.ndarray:
        """(frames, H, W) bool: the pixels of the noun's colour."""
        frames = as_float_frames(frames)
        return (np.abs(frames - self.colour_of(noun)) <= self.tolerance).all(axis=-1)

    def instances(self, frames: np.ndarray, noun: str) -> np.ndarray:
        """(frames, H, W) int: the counted regions of the noun's colour labelled 1..n per frame, 0
        elsewhere (regions under `min_area` pixels are 0): the instances a video shows."""
        masks = self.masks(frames, noun)
        labels = np.zeros(masks.shape, dtype=np.int32)
        for frame, mask in enumerate(masks):
            regions, number = ndimage.label(mask, structure=self.structure)
            sizes = np.bincount(regions.ravel(), minlength=number + 1)
            kept = sizes >= self.min_area
            kept[0] = False
            renumbered = np.zeros(number + 1, dtype=np.int32)
            renumbered[kept] = np.arange(1, kept.sum() + 1)
            labels[frame] = renumbered[regions]
        return labels

    def count(self, frames: np.ndarray, noun: str) -> np.ndarray:
        labels = self.instances(frames, noun)
        return labels.reshape(len(labels), -1).max(axis=1).astype(np.int64)
