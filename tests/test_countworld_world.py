"""CountWorld: scenes, captions and prompt sets, and rendered clips whose masks and colours count exactly."""

from __future__ import annotations

import collections
import itertools
import re

import numpy as np
import pytest
import torch

from numina.countworld import (
    BACKGROUNDS,
    COLOURS,
    MAX_KINDS,
    MAX_TOTAL,
    NUMERALS,
    ObjectKind,
    Scene,
    benchmark_scenes,
    palette_from_prompt,
    render_scenes,
    sample_scene,
    vocabulary,
    write_prompt_folder,
)
from numina.evaluation.counters import ExactColourCounter

FRAMES = 9


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    """Random scenes plus the densest ones (MAX_TOTAL objects)."""
    rng = np.random.default_rng(11)
    return [sample_scene(rng) for _ in range(40)] + [sample_scene(rng, [4, 4, 4]) for _ in range(8)]


@pytest.fixture(scope="module")
def batch(scenes: list[Scene]):
    return render_scenes(scenes, seed=3, frames=FRAMES)


def _expected_counts(scenes: list[Scene]) -> torch.Tensor:
    rows = [[kind.count for kind in scene.kinds] + [0] * (MAX_KINDS - len(scene.kinds)) for scene in scenes]
    return torch.tensor(rows)[:, None, :].expand(len(scenes), FRAMES, MAX_KINDS)


def test_batch_shapes_and_types(scenes: list[Scene], batch) -> None:
    n = len(scenes)
    assert batch.videos.shape == (n, FRAMES, 128, 128, 3) and batch.videos.dtype == torch.float32
    assert batch.videos.min() >= 0 and batch.videos.max() <= 1
    assert batch.instances.shape == (n, FRAMES, 128, 128) and batch.instances.dtype == torch.int16
    assert batch.object_kind.shape == (n, MAX_TOTAL) and batch.object_kind.dtype == torch.int64
    for scene, kinds in zip(scenes, batch.object_kind.tolist(), strict=True):
        expected = [k for k, kind in enumerate(scene.kinds) for _ in range(kind.count)]
        assert kinds == expected + [-1] * (MAX_TOTAL - len(expected))


def test_masks_show_every_object_in_every_frame(scenes: list[Scene], batch) -> None:
    assert torch.equal(batch.counts(), _expected_counts(scenes))


def test_exact_colour_counter_counts_the_caption_targets(scenes: list[Scene], batch) -> None:
    as_bytes = (batch.videos * 255).round().to(torch.uint8).numpy()
    for scene, video, video_bytes in zip(scenes, batch.videos.numpy(), as_bytes, strict=True):
        counter = ExactColourCounter(palette_from_prompt(scene.caption, scene.targets))
        for noun, count in scene.targets.items():
            assert counter.count(video, noun).tolist() == [count] * FRAMES, scene.caption
            assert counter.count(video_bytes, noun).tolist() == [count] * FRAMES, scene.caption


def test_objects_never_touch_and_stay_inside_the_frame(batch) -> None:
    instances = batch.instances.numpy()
    padded = np.pad(instances, [(0, 0), (0, 0), (1, 1), (1, 1)])
    height, width = instances.shape[-2:]
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):  # one pixel of 8-connected dilation
        neighbour = padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        touching = (instances > 0) & (neighbour > 0) & (instances != neighbour)
        assert not touching.any(), f"two objects touch at offset {(dy, dx)}"
    border = np.concatenate(
        [instances[..., 0, :], instances[..., -1, :], instances[..., :, 0], instances[..., :, -1]], axis=-1
    )
    assert not border.any(), "an object reaches the 1-pixel margin"


def test_rendering_is_seeded(scenes: list[Scene], batch) -> None:
    again = render_scenes(scenes[:6], seed=3, frames=FRAMES)
    assert torch.equal(again.instances, batch.instances[:6]) and torch.equal(again.videos, batch.videos[:6])
    other = render_scenes(scenes[:6], seed=4, frames=FRAMES)
    assert not torch.equal(other.instances, batch.instances[:6])


def test_smaller_frames_still_count_exactly() -> None:
    rng = np.random.default_rng(2)
    scenes = [sample_scene(rng) for _ in range(24)]
    batch = render_scenes(scenes, seed=0, frames=FRAMES, size=64)
    assert batch.videos.shape[2:4] == (64, 64)
    assert torch.equal(batch.counts(), _expected_counts(scenes))
    with pytest.raises(ValueError, match="size >= 64"):
        render_scenes(scenes, seed=0, size=32)


def _centroids(instances: torch.Tensor, value: int) -> np.ndarray:
    """(frames, 2) mean (y, x) of the pixels of instance `value` in each frame."""
    centres = []
    for frame in instances:
        ys, xs = np.nonzero(frame.numpy() == value)
        centres.append((ys.mean(), xs.mean()))
    return np.array(centres)


def test_objects_move_along_the_caption_direction() -> None:
    kinds = (ObjectKind("circle", "red", 2), ObjectKind("star", "blue", 1))
    moves = {
        motion: render_scenes([Scene(kinds, "grey", motion, 0)], seed=5, frames=17).instances[0]
        for motion in ("drifting right", "floating up", "resting")
    }
    for value in (1, 2, 3):
        right = _centroids(moves["drifting right"], value)
        assert right[-1, 1] - right[0, 1] > 16 * 0.3  # at least ~0.3 px per frame to the right
        assert abs(right[-1, 0] - right[0, 0]) < 0.3 * (right[-1, 1] - right[0, 1])
        assert (np.diff(right[:, 1]) > -0.5).all()
        up = _centroids(moves["floating up"], value)
        assert up[-1, 0] - up[0, 0] < -16 * 0.3
    resting = moves["resting"]
    assert all(torch.equal(frame, resting[0]) for frame in resting)


def test_captions_name_every_kind_in_the_vocabulary() -> None:
    words = set(vocabulary())
    assert vocabulary() == sorted(words)
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng)
        caption = scene.caption
        assert caption == caption.lower() and not caption.endswith(".")
        caption_words = re.findall(r"[a-z]+", caption)
        assert set(caption_words) <= words, caption
        for kind in scene.kinds:
            assert kind.phrase in caption
            assert {NUMERALS[kind.count - 1], kind.colour, kind.noun} <= set(caption_words)
        assert list(scene.targets) == [kind.noun for kind in scene.kinds]
        assert palette_from_prompt(caption, scene.targets) == scene.palette
    assert len({sample_scene(rng).template for _ in range(100)}) >= 5


def test_phrases_plurals_and_joins() -> None:
    three = ObjectKind("cross", "red", 3)
    one = ObjectKind("star", "green", 1)
    assert (three.noun, three.phrase) == ("crosses", "three red crosses")
    assert (one.noun, one.phrase) == ("star", "one green star")
    scene = Scene((three, one, ObjectKind("circle", "blue", 2)), "grey", "drifting left", 0)
    caption = "three red crosses, one green star and two blue circles drifting left on a grey floor"
    assert scene.caption == caption
    assert scene.targets == {"crosses": 3, "star": 1, "circles": 2}
    two_kinds = Scene((three, one), "black", "resting", 0)
    assert two_kinds.caption.startswith("three red crosses and one green star")


def test_colours_are_far_apart_for_the_counter() -> None:
    tolerance = 0.12  # ExactColourCounter's default
    for (a, rgb_a), (b, rgb_b) in itertools.combinations({**COLOURS, **BACKGROUNDS}.items(), 2):
        if a in BACKGROUNDS and b in BACKGROUNDS:
            continue
        assert np.abs(np.subtract(rgb_a, rgb_b)).max() > 2 * tolerance, (a, b)


def test_palette_from_prompt_needs_a_colour_before_each_noun() -> None:
    palette = palette_from_prompt("two red circles and one blue star on a grey floor", ["circles", "star"])
    assert palette == {"circles": COLOURS["red"], "star": COLOURS["blue"]}
    with pytest.raises(ValueError, match="'star' is not preceded by a colour word"):
        palette_from_prompt("two red circles and one star", ["star"])
    with pytest.raises(ValueError, match="'square' does not occur"):
        palette_from_prompt("two red circles", ["square"])


@pytest.mark.parametrize("counts", [[], [0], [9], [1, 1, 1, 1], [8, 5], [2.0]])
def test_bad_counts_are_refused(counts: list) -> None:
    with pytest.raises(ValueError, match="count"):
        sample_scene(np.random.default_rng(0), counts)


def test_scenes_refuse_repeated_shapes_or_colours() -> None:
    with pytest.raises(ValueError, match="distinct shapes"):
        Scene((ObjectKind("star", "red", 1), ObjectKind("star", "blue", 2)), "grey", "resting", 0)
    with pytest.raises(ValueError, match="distinct colours"):
        Scene((ObjectKind("star", "red", 1), ObjectKind("circle", "red", 2)), "grey", "resting", 0)


def test_sampled_scenes_respect_the_limits() -> None:
    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng) for _ in range(300)]
    assert {len(scene.kinds) for scene in scenes} == {1, 2, 3}
    assert all(sum(scene.targets.values()) <= MAX_TOTAL for scene in scenes)
    assert {kind.count for scene in scenes for kind in scene.kinds} == set(range(1, 9))
    given = sample_scene(rng, [8, 3, 1])
    assert [kind.count for kind in given.kinds] == [8, 3, 1]


def test_benchmark_is_balanced_and_deterministic() -> None:
    scenes = benchmark_scenes(160)
    assert collections.Counter(scene.kinds[0].count for scene in scenes) == {c: 20 for c in range(1, 9)}
    assert {len(scene.kinds) for scene in scenes} == {1, 2, 3}
    assert all(sum(scene.targets.values()) <= MAX_TOTAL for scene in scenes)
    assert benchmark_scenes(160) == scenes
    assert benchmark_scenes(160, seed=1) != scenes


def test_prompt_folders_load_as_countbench(tmp_path) -> None:
    from numina.evaluation.countbench import load_countbench
    from numina.prompts import validate_targets

    scenes = benchmark_scenes(48, seed=2)
    folder = write_prompt_folder(scenes, tmp_path / "countworld")
    loaded = load_countbench(folder, expected=None)
    assert [prompt.prompt for prompt in loaded] == [scene.caption for scene in scenes]
    assert [prompt.targets for prompt in loaded] == [validate_targets(scene.targets) for scene in scenes]
