"""The instances a video really shows, on the transformer's token grid: per latent frame and noun, the
exact counter's regions of the decoded frame that the latent frame ends on, as token labels.

What the layout of NUMINA's walk-through tries to find, so it is the truth that a layout is scored
against (gate G3, `analysis.instance_heads`) and the layout of the oracle control (gate G4,
`numina.evaluation.controls`). May import numpy and numina (evaluation.counters, method.layout, models).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from numina.evaluation.counters import ExactColourCounter
from numina.method.layout import Layout, check_detected
from numina.models import Geometry


def token_instances(pixel_labels: np.ndarray, stride: int) -> np.ndarray:
    """(H_px, W_px) instance labels -> (H_px / stride, W_px / stride) token labels: a token takes the
    instance that covers most of its stride x stride pixels if that covers at least half of them, else 0
    (rims and gaps belong to no instance)."""
    return _majority(*_coverage(pixel_labels, stride), stride)


def _coverage(pixel_labels: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The instances of a frame (n,) and how many of each token's pixels each covers (n, H, W)."""
    height, width = pixel_labels.shape
    if height % stride or width % stride:
        raise ValueError(f"a frame of {height}x{width} pixels is not a whole number of {stride}-pixel tokens")
    patches = pixel_labels.reshape(height // stride, stride, width // stride, stride).transpose(0, 2, 1, 3)
    patches = patches.reshape(height // stride, width // stride, stride * stride)
    instances = np.unique(pixel_labels[pixel_labels > 0])
    return instances, (patches[None] == instances[:, None, None, None]).sum(axis=-1)


def _majority(instances: np.ndarray, covered: np.ndarray, stride: int) -> np.ndarray:
    """Each token's label: the instance covering at least half of its pixels, else 0."""
    labels = np.zeros(covered.shape[1:], dtype=np.int32)
    for instance, pixels in zip(instances, covered, strict=True):
        labels[pixels * 2 >= stride * stride] = instance
    return labels


def true_layout(
    video: np.ndarray, counter: ExactColourCounter, nouns: Iterable[str], geometry: Geometry
) -> Layout:
    """The layout of what `video` (frames, H_px, W_px, 3) draws: per noun and latent frame, the
    counter's instances in the last decoded frame the latent frame stands for (`Geometry.video_frames`;
    frame 0 for latent frame 0), labelled 1..n on the token grid (`token_instances`). An instance that
    covers no token by half keeps the free token it covers most, so the layout counts what the counter
    counts (the oracle control must not correct a count the benchmark scores as right)."""
    video = np.asarray(video)
    expected = (geometry.num_frames, geometry.pixel_height, geometry.pixel_width)
    if video.ndim != 4 or video.shape[:3] != expected:
        raise ValueError(
            f"a video of shape {video.shape} is not this geometry's (frames, height, width, 3): "
            f"{(*expected, 3)}"
        )
    stride = geometry.pixel_height // geometry.height
    if stride * geometry.height != geometry.pixel_height or stride * geometry.width != geometry.pixel_width:
        raise ValueError(
            f"tokens are not square: {geometry.pixel_height}x{geometry.pixel_width} pixels on "
            f"{geometry.height}x{geometry.width} tokens"
        )
    sources = [geometry.video_frames(frame)[-1] for frame in range(geometry.frames)]
    labels = {}
    for noun in nouns:
        pixels = counter.instances(video[sources], noun)
        labels[noun] = np.stack([_every_instance(frame, stride) for frame in pixels])
    return Layout(labels)


def _every_instance(pixel_labels: np.ndarray, stride: int) -> np.ndarray:
    """`token_instances`, where an instance that took no token takes the free token it covers most,
    labelled 1..n in the counter's order (a layout's detected instances must be 1..99:
    `check_detected`)."""
    instances, covered = _coverage(pixel_labels, stride)
    labels = _majority(instances, covered, stride)
    for instance, pixels in zip(instances, covered, strict=True):
        if not (labels == instance).any():
            free = np.where(labels == 0, pixels, 0)
            if free.max() > 0:
                labels[np.unravel_index(free.argmax(), free.shape)] = instance
    kept = np.unique(labels[labels > 0])
    lookup = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lookup[kept] = np.arange(1, kept.size + 1)
    return check_detected(lookup[labels])
