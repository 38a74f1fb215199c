"""The CountWorld video world: seeded clips of coloured shapes moving over a plain background.

A small text-to-video model can only learn to count if its training clips show exactly what their
captions say. This module makes such clips: a `Scene` (which shapes, in which colours, how many, on
which background, moving which way) has a caption in the style of a counting benchmark ("three red
circles and two blue squares drifting left on a grey floor"), and `render_scenes` draws a batch of
scenes with torch, on any device, together with exact per-frame instance masks. Objects never touch and
never leave the frame, so the exact colour counter (connected regions of a noun's colour) sees every
instance separately. The same scenes make benchmark prompt sets in the CountBench folder format. May
import numpy and torch only.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

RGB = tuple[float, float, float]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
# No two colours, nor a colour and a background, are within 0.3 of each other in every channel, so the
# exact counter's tolerance (0.12) never mixes them up.
COLOURS: dict[str, RGB] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.7, 0.2),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "orange": (1.0, 0.5, 0.0),
    "purple": (0.55, 0.15, 0.75),
    "pink": (1.0, 0.45, 0.8),
    "cyan": (0.1, 0.85, 0.9),
}
BACKGROUNDS: dict[str, RGB] = {
    "grey": (0.5, 0.5, 0.5),
    "black": (0.05, 0.05, 0.05),
    "white": (0.95, 0.95, 0.95),
    "beige": (0.85, 0.8, 0.6),
}
NUMERALS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight")
_DIAGONAL = 1 / math.sqrt(2)
# Caption phrase -> (dy, dx) unit direction of motion in image coordinates (y points down).
MOTIONS: dict[str, tuple[float, float]] = {
    "drifting left": (0.0, -1.0),
    "drifting right": (0.0, 1.0),
    "floating up": (-1.0, 0.0),
    "sinking down": (1.0, 0.0),
    "sliding diagonally": (_DIAGONAL, _DIAGONAL),
    "resting": (0.0, 0.0),
}
# No caption starts with an article: the project's target derivation would count a leading "a grey
# background" as one background.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{objects} {motion} on a {background} floor",
    "{objects} {motion} in front of a {background} wall",
    "on a plain {background} background, {objects} {motion}",
    "{objects} {motion} over a {background} backdrop",
    "{objects} {motion} across a flat {background} surface",
    "against a {background} backdrop, {objects} {motion}",
)
MAX_COUNT = 8
MAX_KINDS = 3
MAX_TOTAL = 12

_WORD = re.compile(r"[a-z]+")
# What a prompt may hold: words of any letters and digits ("café", "3"), or one other sign (an emoji).
_PROMPT_PIECE = re.compile(r"[^\W_]+|[^\w\s]")


def plural(shape: str) -> str:
    """The plural of a shape noun ("circle" -> "circles", "cross" -> "crosses")."""
    return shape + "es" if shape.endswith(("s", "x", "sh", "ch")) else shape + "s"


def check_counts(counts: Sequence[int]) -> None:
    """Raise ValueError unless `counts` (one per kind) fits the world's limits."""
    counts = list(counts)
    if not 1 <= len(counts) <= MAX_KINDS:
        raise ValueError(f"a scene has 1 to {MAX_KINDS} kinds of object, got {len(counts)} counts {counts}")
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or not 1 <= count <= MAX_COUNT:
            raise ValueError(f"each count must be an int from 1 to {MAX_COUNT}, got {count!r} in {counts}")
    if sum(counts) > MAX_TOTAL:
        raise ValueError(
            f"a scene holds at most {MAX_TOTAL} objects, the counts {counts} sum to {sum(counts)}"
        )


@dataclass(frozen=True)
class ObjectKind:
    """`count` objects of one shape and colour, as one phrase of a caption names them."""

    shape: str
    colour: str
    count: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; the shapes are {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; the colours are {tuple(COLOURS)}")
        check_counts([self.count])

    @property
    def noun(self) -> str:
        """The noun as the caption writes it: singular for one object, plural otherwise."""
        return self.shape if self.count == 1 else plural(self.shape)

    @property
    def phrase(self) -> str:
        """Numeral, colour and noun: "three red circles", "one green star"."""
        return f"{NUMERALS[self.count - 1]} {self.colour} {self.noun}"


@dataclass(frozen=True)
class Scene:
    """What one clip shows; `template` picks the caption's sentence from `CAPTION_TEMPLATES`."""

    kinds: tuple[ObjectKind, ...]
    background: str
    motion: str
    template: int

    def __post_init__(self) -> None:
        check_counts([kind.count for kind in self.kinds])
        for field in ("shape", "colour"):
            values = [getattr(kind, field) for kind in self.kinds]
            if len(set(values)) != len(values):
                raise ValueError(f"the kinds of a scene need distinct {field}s, got {values}")
        if self.background not in BACKGROUNDS:
            raise ValueError(
                f"unknown background {self.background!r}; the backgrounds are {tuple(BACKGROUNDS)}"
            )
        if self.motion not in MOTIONS:
            raise ValueError(f"unknown motion {self.motion!r}; the motions are {tuple(MOTIONS)}")
        if not 0 <= self.template < len(CAPTION_TEMPLATES):
            raise ValueError(f"template must be in 0..{len(CAPTION_TEMPLATES) - 1}, got {self.template}")

    @property
    def caption(self) -> str:
        """The scene's sentence, lower case, kinds joined as "A and B" or "A, B and C"."""
        phrases = [kind.phrase for kind in self.kinds]
        objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        template = CAPTION_TEMPLATES[self.template]
        return template.format(objects=objects, motion=self.motion, background=self.background)

    @property
    def targets(self) -> dict[str, int]:
        """`{noun: count}` in caption order, each noun as the caption writes it."""
        return {kind.noun: kind.count for kind in self.kinds}

    @property
    def palette(self) -> dict[str, RGB]:
        """`{noun: rgb}`: the colour the exact counter looks for, per noun."""
        return {kind.noun: COLOURS[kind.colour] for kind in self.kinds}


def sample_scene(rng: np.random.Generator, counts: Sequence[int] | None = None) -> Scene:
    """A random scene with the given per-kind `counts` (None: random kinds and counts within the limits).

    Shapes and colours are distinct within a scene, so every noun has its own colour.
    """
    if counts is None:
        n_kinds = int(rng.integers(1, MAX_KINDS + 1))
        counts = rng.integers(1, MAX_COUNT + 1, size=n_kinds)
        while counts.sum() > MAX_TOTAL:
            counts = rng.integers(1, MAX_COUNT + 1, size=n_kinds)
        counts = [int(c) for c in counts]
    check_counts(counts)
    shapes = rng.choice(len(SHAPES), size=len(counts), replace=False)
    colours = rng.choice(len(COLOURS), size=len(counts), replace=False)
    colour_names = list(COLOURS)
    kinds = tuple(
        ObjectKind(SHAPES[s], colour_names[c], int(n))
        for s, c, n in zip(shapes, colours, counts, strict=True)
    )
    return Scene(
        kinds=kinds,
        background=list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))],
        motion=list(MOTIONS)[int(rng.integers(len(MOTIONS)))],
        template=int(rng.integers(len(CAPTION_TEMPLATES))),
    )


def vocabulary() -> list[str]:
    """Every word a caption can contain (sorted, lower case), for building a tokenizer."""
    template_words = [_WORD.findall(re.sub(r"\{\w+\}", " ", template)) for template in CAPTION_TEMPLATES]
    words = {
        *NUMERALS,
        *COLOURS,
        *BACKGROUNDS,
        *SHAPES,
        *map(plural, SHAPES),
        *(word for motion in MOTIONS for word in motion.split()),
        *(word for words in template_words for word in words),
        "and",
    }
    return sorted(words)


def words_outside_vocabulary(prompt: str) -> list[str]:
    """The words of `prompt` that no caption contains, in order (any letters, digits, and signs such as
    emoji; punctuation aside): a model trained on the world's captions only ever saw its own words, so
    these reach it as letters that mean nothing to it."""
    known = set(vocabulary())
    pieces = _PROMPT_PIECE.findall(prompt.lower())
    return [piece for piece in pieces if piece not in known and piece not in string.punctuation]


def palette_from_prompt(prompt: str, nouns: Iterable[str]) -> dict[str, RGB]:
    """Each noun's colour: the `COLOURS` word directly before the noun's first occurrence in the prompt.

    This lets the exact counter score a generated video from its prompt alone. A noun that is missing
    from the prompt, or not preceded by a colour word, is a ValueError naming it.
    """
    words = _WORD.findall(prompt.lower())
    palette = {}
    for noun in nouns:
        key = noun.lower()
        if key not in words:
            raise ValueError(f"noun {noun!r} does not occur in the prompt {prompt!r}")
        before = words.index(key) - 1
        if before < 0 or words[before] not in COLOURS:
            raise ValueError(
                f"noun {noun!r} is not preceded by a colour word ({', '.join(COLOURS)}) "
                f"in the prompt {prompt!r}"
            )
        palette[noun] = COLOURS[words[before]]
    return palette


def benchmark_scenes(n: int = 160, seed: int = 0, max_total: int = MAX_TOTAL) -> list[Scene]:
    """A balanced prompt set: scene i counts `i % 8 + 1` objects of its first kind and has `i % 3 + 1` kinds.

    Every (first count, number of kinds) pair occurs equally often over 24 scenes; the other kinds'
    counts are random within the limits (at most `max_total` objects in all, for worlds with a lower
    limit). Deterministic in `seed`.
    """
    if not MAX_COUNT + MAX_KINDS - 1 <= max_total <= MAX_TOTAL:
        raise ValueError(f"max_total must be in {MAX_COUNT + MAX_KINDS - 1}..{MAX_TOTAL}, got {max_total}")
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        first, n_kinds = i % MAX_COUNT + 1, i % MAX_KINDS + 1
        others = rng.integers(1, MAX_COUNT + 1, size=n_kinds - 1)
        while first + others.sum() > max_total:
            others = rng.integers(1, MAX_COUNT + 1, size=n_kinds - 1)
        scenes.append(sample_scene(rng, [first, *(int(c) for c in others)]))
    return scenes


def write_prompt_folder(scenes: Sequence[Scene], folder: str | Path) -> Path:
    """Write scenes as a CountBench-format folder (`prompts.txt`, `noun_counts.jsonl`); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("".join(scene.caption + "\n" for scene in scenes), encoding="utf-8")
    rows = "".join(json.dumps(scene.targets) + "\n" for scene in scenes)
    (folder / "noun_counts.jsonl").write_text(rows, encoding="utf-8")
    return folder


# -- rendering -----------------------------------------------------------------------------------------

MIN_SIZE = 64  # below it (radius under 3 px) thin shapes (cross, triangle) can break up or vanish
REFERENCE_SIZE = 128  # the pixel sizes below are for 128 x 128 frames and scale with the frame size
RADIUS_RANGE = (6.0, 9.0)
SPEED_RANGE = (0.4, 1.2)  # pixels per frame, shared by a clip's objects
GAP = 3.0  # between two objects' bounding discs, in every frame
MIN_GAP = 2.0  # at any size: more than the sqrt(2) px at which pixels of two objects touch diagonally
MARGIN = 1.0  # between a bounding disc and the frame's edge
SPEED_JITTER = 0.15  # per-object relative speed change
ANGLE_JITTER = 0.15  # per-object change of direction, radians
MAX_TRAVEL = 0.5  # of the free span of the frame: long clips move slower, so objects stay inside
_CANDIDATES = 256  # placements drawn at once for one object
_ATTEMPTS = 8  # batches of candidates for one object before the clip's layout starts over
_RESTARTS = 100  # layouts tried for one clip (one is almost always enough)
_CHUNK_ELEMENTS = 1 << 22  # pixels processed at once: bounds memory at tens of MB per tensor

_STAR_INNER = 0.45  # inner radius of the five-pointed star
_STAR_TIP = math.radians(36)  # half the angle between two tips
_CROSS_ARM = 0.2  # half the arm width of the plus sign
_SQUARE_HALF = 0.8


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside a five-pointed star pointing up: fold the angle into the half-sector between a tip (P) and
    the next inner corner (Q) and test the side of the edge PQ."""
    angle = torch.atan2(u, -v)
    folded = torch.remainder(angle + _STAR_TIP, 2 * _STAR_TIP).sub(_STAR_TIP).abs()
    rho = torch.sqrt(u * u + v * v)
    px, py = rho * torch.cos(folded), rho * torch.sin(folded)
    qx, qy = _STAR_INNER * math.cos(_STAR_TIP), _STAR_INNER * math.sin(_STAR_TIP)
    return (qx - 1) * py - qy * (px - 1) >= 0


# Inside-tests in units of the radius (u right, v down, origin at the centre; the triangle and the star
# point up) and the radius of each shape's bounding disc in the same units.
_INSIDE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": lambda u, v: u * u + v * v <= 1,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= _SQUARE_HALF,
    "triangle": lambda u, v: (math.sqrt(3) * u.abs() - v <= 1) & (v <= 0.5),
    "star": _star,
    "diamond": lambda u, v: u.abs() + v.abs() <= 1,
    "cross": lambda u, v: (
        ((u.abs() <= _CROSS_ARM) & (v.abs() <= 1)) | ((v.abs() <= _CROSS_ARM) & (u.abs() <= 1))
    ),
}
_BOUND = {shape: 1.0 for shape in SHAPES} | {
    "square": _SQUARE_HALF * math.sqrt(2),
    "cross": math.hypot(1, _CROSS_ARM),
}


@dataclass
class RenderedBatch:
    """Rendered clips with their exact instance masks.

    `videos` (B, F, H, W, 3) float32 in [0, 1]; `instances` (B, F, H, W) int16, 0 for the background and
    i + 1 for the scene's i-th object (objects ordered kind by kind); `object_kind` (B, MAX_TOTAL) int64,
    the kind index of object i, -1 for absent slots.
    """

    videos: torch.Tensor
    instances: torch.Tensor
    object_kind: torch.Tensor

    def counts(self) -> torch.Tensor:
        """(B, F, MAX_KINDS) int64: instances of each kind visible in each frame, read off the masks."""
        n_clips, n_frames = self.instances.shape[:2]
        device = self.instances.device
        slots = torch.arange(MAX_KINDS, device=device)
        # (B, MAX_TOTAL + 1, MAX_KINDS): which kind each instance value belongs to (value 0: none).
        membership = torch.cat(
            [
                torch.zeros(n_clips, 1, MAX_KINDS, dtype=torch.bool, device=device),
                self.object_kind[:, :, None] == slots,
            ],
            dim=1,
        )
        counts = torch.empty(n_clips, n_frames, MAX_KINDS, dtype=torch.int64, device=device)
        for start, stop in _chunks(n_clips, self.instances[0].numel()):
            values = self.instances[start:stop].reshape(stop - start, n_frames, -1).long()
            present = torch.zeros(stop - start, n_frames, MAX_TOTAL + 1, dtype=torch.bool, device=device)
            present.scatter_(2, values, True)
            counts[start:stop] = (present[:, :, :, None] & membership[start:stop, None]).sum(dim=2)
        return counts


def _chunks(n_items: int, elements_per_item: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of items holding at most `_CHUNK_ELEMENTS` elements each."""
    step = max(1, _CHUNK_ELEMENTS // max(1, elements_per_item))
    return [(start, min(start + step, n_items)) for start in range(0, n_items, step)]


@dataclass
class _Layout:
    """Where each object of each clip starts and how it moves (numpy, float64), slot by slot."""

    start: np.ndarray  # (B, MAX_TOTAL, 2) centre (y, x) in frame 0
    velocity: np.ndarray  # (B, MAX_TOTAL, 2) pixels per frame
    radius: np.ndarray  # (B, MAX_TOTAL) the shape's nominal radius
    shape: np.ndarray  # (B, MAX_TOTAL) index into SHAPES, -1 for absent slots
    kind: np.ndarray  # (B, MAX_TOTAL) index into scene.kinds, -1 for absent slots


def _objects(scene: Scene) -> list[tuple[int, ObjectKind]]:
    """The scene's objects in slot order, kind by kind, as (kind index, kind)."""
    return [(k, kind) for k, kind in enumerate(scene.kinds) for _ in range(kind.count)]


def _closest_approach(offset: np.ndarray, velocity: np.ndarray, duration: float) -> np.ndarray:
    """Smallest length of `offset + velocity * t` over 0 <= t <= duration (linear motion), last axis (y, x).

    Checking the continuous minimum covers every frame with one test instead of one per frame.
    """
    speed2 = (velocity**2).sum(axis=-1)
    moving = speed2 > 0
    t = -(offset * velocity).sum(axis=-1) / np.where(moving, speed2, 1.0)
    t = np.clip(np.where(moving, t, 0.0), 0.0, duration)
    return np.sqrt(((offset + velocity * t[..., None]) ** 2).sum(axis=-1))


def _place_clip(
    rng: np.random.Generator, scene: Scene, frames: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start centres, velocities and radii of a scene's objects: inside the frame and apart in every frame.

    Objects are placed one after another (largest first), each at the first of many candidate positions
    that keeps its distance from those already placed; a clip whose objects do not fit starts over.
    """
    shapes = [kind.shape for _, kind in _objects(scene)]
    bound_factor = np.array([_BOUND[shape] for shape in shapes])
    scale = size / REFERENCE_SIZE
    gap = max(GAP * scale, MIN_GAP)
    direction = np.array(MOTIONS[scene.motion])
    for _ in range(_RESTARTS):
        radius = rng.uniform(*RADIUS_RANGE, size=len(shapes)) * scale
        bound = radius * bound_factor
        free_span = size - 1 - 2 * MARGIN - 2 * bound.max()
        speed = rng.uniform(*SPEED_RANGE) * scale
        if frames > 1:
            speed = min(speed, MAX_TRAVEL * free_span / ((frames - 1) * (1 + SPEED_JITTER)))
        angle = math.atan2(direction[0], direction[1]) + rng.uniform(-ANGLE_JITTER, ANGLE_JITTER, len(shapes))
        object_speed = (  # zero for "resting"
            speed * np.hypot(*direction) * rng.uniform(1 - SPEED_JITTER, 1 + SPEED_JITTER, len(shapes))
        )
        velocity = object_speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)
        travel = velocity * (frames - 1)
        low = MARGIN + bound[:, None] - np.minimum(travel, 0)
        high = size - 1 - MARGIN - bound[:, None] - np.maximum(travel, 0)
        start = np.zeros((len(shapes), 2))
        placed: list[int] = []
        for i in np.argsort(-bound, kind="stable"):
            for _ in range(_ATTEMPTS):
                candidates = low[i] + rng.random((_CANDIDATES, 2)) * (high[i] - low[i])
                offset = candidates[:, None, :] - start[placed]  # (candidates, placed, 2) in frame 0
                closing = velocity[i] - velocity[placed]  # (placed, 2) relative velocity
                distance = _closest_approach(offset, closing, frames - 1)
                fits = (distance >= bound[i] + bound[placed] + gap).all(axis=1)
                if fits.any():
                    start[i] = candidates[np.argmax(fits)]
                    placed.append(int(i))
                    break
            else:
                break
        if len(placed) == len(shapes):
            return start, velocity, radius
    raise RuntimeError(f"could not place the objects of {scene.caption!r} in {frames} frames of {size} px")


def _layout(scenes: Sequence[Scene], seed: int, frames: int, size: int) -> _Layout:
    """Seeded layouts of all clips, in the order of `scenes`."""
    rng = np.random.default_rng(seed)
    layout = _Layout(
        start=np.zeros((len(scenes), MAX_TOTAL, 2)),
        velocity=np.zeros((len(scenes), MAX_TOTAL, 2)),
        radius=np.ones((len(scenes), MAX_TOTAL)),
        shape=np.full((len(scenes), MAX_TOTAL), -1),
        kind=np.full((len(scenes), MAX_TOTAL), -1),
    )
    for b, scene in enumerate(scenes):
        start, velocity, radius = _place_clip(rng, scene, frames, size)
        n = len(radius)
        layout.start[b, :n], layout.velocity[b, :n], layout.radius[b, :n] = start, velocity, radius
        layout.shape[b, :n] = [SHAPES.index(kind.shape) for _, kind in _objects(scene)]
        layout.kind[b, :n] = [k for k, _ in _objects(scene)]
    return layout


def _draw_instances(layout: _Layout, frames: int, size: int, device: torch.device) -> torch.Tensor:
    """(B, F, H, W) int16 instance masks: each object's inside-test on a window of pixels around it."""
    n_clips = len(layout.shape)
    instances = torch.zeros(n_clips * frames * size * size, dtype=torch.int16, device=device)
    present = layout.shape >= 0
    half = math.ceil(RADIUS_RANGE[1] * size / REFERENCE_SIZE * max(_BOUND.values())) + 1
    window = torch.arange(-half, half + 1, device=device)
    clip, slot = np.nonzero(present)
    for shape_index, shape in enumerate(SHAPES):
        chosen = layout.shape[clip, slot] == shape_index
        # One row per object and frame.
        b, o = np.repeat(clip[chosen], frames), np.repeat(slot[chosen], frames)
        f = np.tile(np.arange(frames), int(chosen.sum()))
        centres = layout.start[b, o] + layout.velocity[b, o] * f[:, None]
        for start, stop in _chunks(len(b), len(window) ** 2):
            centre = torch.as_tensor(centres[start:stop], dtype=torch.float32, device=device)
            radius = torch.as_tensor(
                layout.radius[b[start:stop], o[start:stop]], dtype=torch.float32, device=device
            )
            plane = torch.as_tensor(b[start:stop] * frames + f[start:stop], device=device)
            ys = centre[:, 0:1].round().long() + window  # (n, w) pixel rows around each centre
            xs = centre[:, 1:2].round().long() + window
            v = ((ys - centre[:, 0:1]) / radius[:, None])[:, :, None]
            u = ((xs - centre[:, 1:2]) / radius[:, None])[:, None, :]
            inside = _INSIDE[shape](u, v)
            pixel = (plane[:, None, None] * size + ys[:, :, None]) * size + xs[:, None, :]
            value = torch.as_tensor(o[start:stop] + 1, dtype=torch.int16, device=device)
            instances[pixel[inside]] = value[:, None, None].expand_as(inside)[inside]
    return instances.view(n_clips, frames, size, size)


def _paint(instances: torch.Tensor, scenes: Sequence[Scene], layout: _Layout) -> torch.Tensor:
    """Colour the instance masks: the background's colour at 0, the object's kind colour elsewhere."""
    colours = np.zeros((len(scenes), MAX_TOTAL + 1, 3))
    for b, scene in enumerate(scenes):
        colours[b, 0] = BACKGROUNDS[scene.background]
        for slot in np.nonzero(layout.kind[b] >= 0)[0]:
            colours[b, slot + 1] = COLOURS[scene.kinds[layout.kind[b, slot]].colour]
    device = instances.device
    table = torch.as_tensor(colours, dtype=torch.float32, device=device).view(-1, 3)
    videos = torch.empty(*instances.shape, 3, dtype=torch.float32, device=device)
    for start, stop in _chunks(len(scenes), instances[0].numel()):
        offset = torch.arange(start, stop, dtype=torch.int32, device=device).view(-1, 1, 1, 1) * (
            MAX_TOTAL + 1
        )
        rows = (instances[start:stop].int() + offset).view(-1)
        torch.index_select(table, 0, rows, out=videos[start:stop].view(-1, 3))
    return videos


def render_scenes(
    scenes: Sequence[Scene], seed: int, frames: int = 17, size: int = 128, device: str | torch.device = "cpu"
) -> RenderedBatch:
    """Render scenes as clips of `frames` square frames of `size` pixels on `device`, with instance masks.

    Layouts are drawn with `np.random.default_rng(seed)`: the same scenes and seed give identical tensors.
    """
    if not scenes:
        raise ValueError("render_scenes needs at least one scene")
    if frames < 1 or size < MIN_SIZE:
        raise ValueError(f"need frames >= 1 and size >= {MIN_SIZE}, got frames={frames}, size={size}")
    device = torch.device(device)
    layout = _layout(scenes, seed, frames, size)
    instances = _draw_instances(layout, frames, size, device)
    return RenderedBatch(
        videos=_paint(instances, scenes, layout),
        instances=instances,
        object_kind=torch.as_tensor(layout.kind, dtype=torch.int64, device=device),
    )
