"""CountWorld 2's world: batched rendering whose masks and colours count exactly, and the world's rules."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from numina.countworld import world, world2
from numina.countworld.world import COLOURS, MAX_KINDS, MOTIONS, ObjectKind, Scene, palette_from_prompt
from numina.evaluation.counters import ExactColourCounter

FRAMES = 17


def _total(scene: Scene) -> int:
    return sum(kind.count for kind in scene.kinds)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    """Random scenes plus crowded ones: ten objects of three kinds, and eight of one kind."""
    rng = np.random.default_rng(11)
    return (
        world2.sample_scenes(rng, 20)
        + world2.sample_scenes(rng, 4, counts=[4, 3, 3])
        + world2.sample_scenes(rng, 4, counts=[8, 1, 1])
        + world2.sample_scenes(rng, 12, counts=[8])
    )


@pytest.fixture(scope="module")
def batch(scenes: list[Scene]) -> world2.RenderedBatch2:
    return world2.render_scenes(scenes, seed=3, frames=FRAMES)


def _expected_counts(scenes: list[Scene], frames: int = FRAMES) -> torch.Tensor:
    rows = [[kind.count for kind in scene.kinds] + [0] * (MAX_KINDS - len(scene.kinds)) for scene in scenes]
    return torch.tensor(rows)[:, None, :].expand(len(scenes), frames, MAX_KINDS)


def test_batch_shapes_types_and_scales(scenes: list[Scene], batch: world2.RenderedBatch2) -> None:
    n = len(scenes)
    assert batch.videos.shape == (n, FRAMES, 128, 128, 3) and batch.videos.dtype == torch.float32
    assert batch.videos.min() >= 0 and batch.videos.max() <= 1
    assert batch.instances.shape == (n, FRAMES, 128, 128) and batch.instances.dtype == torch.int16
    assert batch.object_kind.shape == (n, world.MAX_TOTAL) and batch.object_kind.dtype == torch.int64
    for scene, kinds in zip(scenes, batch.object_kind.tolist(), strict=True):
        expected = [k for k, kind in enumerate(scene.kinds) for _ in range(kind.count)]
        assert kinds == expected + [-1] * (world.MAX_TOTAL - len(expected))
    low, high = world2.RADIUS_RANGE
    assert batch.radius_scale.shape == batch.shrinks.shape == (n,)
    assert ((batch.radius_scale >= low) & (batch.radius_scale <= high)).all()


def test_masks_show_every_object_in_every_frame(scenes: list[Scene], batch: world2.RenderedBatch2) -> None:
    assert torch.equal(batch.counts(), _expected_counts(scenes))


def test_exact_colour_counter_counts_every_frame(scenes: list[Scene], batch: world2.RenderedBatch2) -> None:
    as_bytes = (batch.videos * 255).round().to(torch.uint8).numpy()
    for scene, video, video_bytes in zip(scenes, batch.videos.numpy(), as_bytes, strict=True):
        counter = ExactColourCounter(palette_from_prompt(scene.caption, scene.targets))
        for noun, count in scene.targets.items():
            assert counter.count(video, noun).tolist() == [count] * FRAMES, scene.caption
            assert counter.count(video_bytes, noun).tolist() == [count] * FRAMES, scene.caption


def test_objects_keep_a_token_apart_and_inside_the_frame(batch: world2.RenderedBatch2) -> None:
    instances = batch.instances.numpy()
    reach = int(world2.GAP)
    padded = np.pad(instances, [(0, 0), (0, 0), (reach, reach), (reach, reach)])
    height, width = instances.shape[-2:]
    occupied = instances > 0
    # Pixels of two objects are >= GAP apart; half of the offsets suffice, the other half are mirrors.
    offsets = [
        (dy, dx)
        for dy in range(0, reach + 1)
        for dx in range(-reach, reach + 1)
        if (dy, dx) > (0, 0) and dy * dy + dx * dx < world2.GAP**2
    ]
    for dy, dx in offsets:
        neighbour = padded[..., reach + dy : reach + dy + height, reach + dx : reach + dx + width]
        close = occupied & (neighbour > 0) & (instances != neighbour)
        assert not close.any(), f"two objects are closer than {world2.GAP} px at offset {(dy, dx)}"
    border = np.concatenate(
        [instances[..., 0, :], instances[..., -1, :], instances[..., :, 0], instances[..., :, -1]], axis=-1
    )
    assert not border.any(), "an object reaches the 1-pixel margin"


def _centroids(instances: torch.Tensor, value: int) -> np.ndarray:
    """(frames, 2) mean (y, x) of the pixels of instance `value` in each frame."""
    return np.array([np.argwhere(frame.numpy() == value).mean(axis=0) for frame in instances])


def test_objects_move_as_the_caption_says() -> None:
    kinds = (ObjectKind("square", "red", 2), ObjectKind("star", "blue", 1))
    motions = list(MOTIONS)
    batch = world2.render_scenes([Scene(kinds, "grey", motion, 0) for motion in motions], seed=5)
    for motion, instances, video in zip(motions, batch.instances, batch.videos, strict=True):
        direction = np.array(MOTIONS[motion])
        for value in (1, 2, 3):
            centres = _centroids(instances, value)
            moved = centres[-1] - centres[0]
            if not direction.any():
                assert np.abs(moved).max() == 0, motion
                continue
            along = moved @ direction
            assert along > 16 * 0.3, motion  # at least ~0.3 px per frame along the caption's direction
            assert np.linalg.norm(moved - along * direction) < 0.3 * along, motion
            assert (np.diff(centres, axis=0) @ direction > -0.5).all(), motion
        if not direction.any():
            assert all(torch.equal(frame, video[0]) for frame in video), "a resting clip changes"


def test_radius_scale_is_independent_of_the_count() -> None:
    rng = np.random.default_rng(0)
    counts = [i % world.MAX_COUNT + 1 for i in range(400)]
    scenes = [world2.sample_scenes(rng, 1, counts=[count])[0] for count in counts]
    batch = world2.render_scenes(scenes, seed=1, frames=FRAMES)
    assert torch.equal(batch.counts(), _expected_counts(scenes))
    scale = batch.radius_scale.numpy()
    crowded_and_large = (np.array(counts) == 8) & (scale > 13) & (batch.shrinks.numpy() == 0)
    assert crowded_and_large.sum() >= 3, "too few scenes of eight objects kept a radius scale above 13 px"
    assert abs(np.corrcoef(counts, scale)[0, 1]) < 0.15
    first = batch.instances[:, 0].reshape(len(scenes), -1).numpy()
    area = (first > 0).sum(axis=1) / np.array(counts)  # mean pixels per object in frame 0
    assert abs(np.corrcoef(counts, area)[0, 1]) < 0.15
    assert np.corrcoef(scale**2, area)[0, 1] > 0.5  # the scale is what sets the objects' size
    shrunk = np.array(counts)[batch.shrinks.numpy() > 0]
    assert shrunk.size < 0.02 * len(scenes) and (shrunk >= 7).all(), "only crowded scenes shrink"


def test_instances_vary_in_colour_shading_and_rotation() -> None:
    kinds = (ObjectKind("square", "orange", 6), ObjectKind("star", "cyan", 4))
    scenes = [Scene(kinds, "black", "resting", 0)] * 4
    batch = world2.render_scenes(scenes, seed=2, frames=1)
    fill, means = [], []
    for instances, video in zip(batch.instances[:, 0].numpy(), batch.videos[:, 0].numpy(), strict=True):
        for value in range(1, 11):
            colour = np.array(COLOURS["orange" if value <= 6 else "cyan"])
            pixels = video[instances == value]
            assert np.abs(pixels - colour).max() <= 0.06 + 1e-6  # offset + shading, clamped to [0, 1]
            assert pixels.std(axis=0).max() > 1e-3, "no shading inside an object"
            means.append(pixels.mean(axis=0))
            if value <= 6:
                ys, xs = np.nonzero(instances == value)
                fill.append(len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    means = np.array(means)
    assert np.abs(means[1:] - means[:-1]).max(axis=1).min() > 1e-3, "two instances share a colour"
    # An upright square fills its bounding box, one turned by 45 degrees half of it.
    assert min(fill) < 0.7 and max(fill) > 0.85


def test_rendering_is_seeded(scenes: list[Scene]) -> None:
    first = world2.render_scenes(scenes[:6], seed=3, frames=3)
    again = world2.render_scenes(scenes[:6], seed=3, frames=3)
    assert torch.equal(again.instances, first.instances) and torch.equal(again.videos, first.videos)
    other = world2.render_scenes(scenes[:6], seed=4, frames=3)
    assert not torch.equal(other.instances, first.instances)
    assert not torch.equal(other.videos, first.videos)


def test_smaller_frames_still_count_exactly() -> None:
    scenes = world2.sample_scenes(np.random.default_rng(2), 16)
    batch = world2.render_scenes(scenes, seed=0, frames=5, size=64)
    assert batch.videos.shape[2:4] == (64, 64)
    assert torch.equal(batch.counts(), _expected_counts(scenes, frames=5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rendering_on_cuda_counts_exactly_and_is_seeded(scenes: list[Scene]) -> None:
    first = world2.render_scenes(scenes, seed=3, frames=FRAMES, device="cuda")
    assert torch.equal(first.counts().cpu(), _expected_counts(scenes))
    again = world2.render_scenes(scenes, seed=3, frames=FRAMES, device="cuda")
    assert torch.equal(again.instances, first.instances) and torch.equal(again.videos, first.videos)


def test_sampled_scenes_respect_the_limits() -> None:
    rng = np.random.default_rng(1)
    scenes = world2.sample_scenes(rng, 300)
    assert {len(scene.kinds) for scene in scenes} == {1, 2, 3}
    assert max(_total(scene) for scene in scenes) == world2.MAX_TOTAL
    assert {kind.count for scene in scenes for kind in scene.kinds} == set(range(1, 9))
    assert {len(scene.kinds) for scene in world2.sample_scenes(rng, 50, max_kinds=1)} == {1}
    given = world2.sample_scenes(rng, 5, counts=[8, 1, 1])
    assert all([kind.count for kind in scene.kinds] == [8, 1, 1] for scene in given)
    assert len({scene.caption for scene in given}) > 1


def test_benchmark_is_balanced_and_within_the_limit() -> None:
    scenes = world2.benchmark_scenes(160)
    assert collections.Counter(scene.kinds[0].count for scene in scenes) == {c: 20 for c in range(1, 9)}
    assert {len(scene.kinds) for scene in scenes} == {1, 2, 3}
    assert max(_total(scene) for scene in scenes) == world2.MAX_TOTAL
    assert world2.benchmark_scenes(160) == scenes and world2.benchmark_scenes(160, seed=1) != scenes


@pytest.mark.parametrize("counts", [[0], [9], [8, 3], [4, 4, 3], [1, 1, 1, 1]])
def test_bad_counts_are_refused(counts: list[int]) -> None:
    with pytest.raises(ValueError, match="count"):
        world2.sample_scenes(np.random.default_rng(0), 1, counts=counts)


def test_bad_renders_are_refused() -> None:
    eleven = Scene((ObjectKind("circle", "red", 8), ObjectKind("star", "blue", 3)), "grey", "resting", 0)
    with pytest.raises(ValueError, match="at most 10 objects"):
        world2.render_scenes([eleven], seed=0)
    fine = world2.sample_scenes(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="size >= 64"):
        world2.render_scenes(fine, seed=0, size=48)
    with pytest.raises(ValueError, match="frames >= 1"):
        world2.render_scenes(fine, seed=0, frames=0)
    with pytest.raises(ValueError, match="at least one scene"):
        world2.render_scenes([], seed=0)
    with pytest.raises(ValueError, match="max_kinds"):
        world2.sample_scenes(np.random.default_rng(0), 2, max_kinds=4)
