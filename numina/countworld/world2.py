"""CountWorld 2's world: CountWorld's scenes and captions, rendered in batches on the device.

CountWorld 2 trains a small text-to-video model (128 x 128 frames, one latent token per 4 x 4 pixels)
on fresh clips every step, so its clips are drawn where the model trains: placement and drawing are
batched over all clips with torch on any device, seeded by a `torch.Generator`. The scenes, captions,
shapes, colours and instance masks are CountWorld 1's (`numina.countworld.world`); what differs makes
number the only thing that tells counts apart, and keeps every object visible to a token-sized model:

- at most `MAX_TOTAL` = 10 objects; one radius scale per scene, drawn independently of its counts, so
  area does not stand in for number;
- every instance varies: size (10 %), rotation, a small colour offset and a linear shading gradient, all
  within 0.06 of its kind's colour, half the exact colour counter's tolerance;
- objects stay at least `GAP` = 4 px (one token) apart in every frame;
- the cross's arms are wider (0.6 of its radius, CountWorld 1: 0.4), so the VAE keeps it whole.

May import numpy, torch and numina.countworld.world.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from numina.countworld import world
from numina.countworld.world import (
    BACKGROUNDS,
    COLOURS,
    MAX_COUNT,
    MAX_KINDS,
    MOTIONS,
    SHAPES,
    RenderedBatch,
    Scene,
)

MAX_TOTAL = 10
RADIUS_RANGE = (8.0, 14.0)  # a scene's radius scale, pixels at 128 px
GAP = 4.0  # pixels at 128 px between the bounding discs of two objects, in every frame: one token
RADIUS_JITTER = 0.1  # each instance's radius is the scene's scale times U(0.9, 1.1)
COLOUR_JITTER = 0.03  # each instance's colour offset, per channel
SHADING = 0.03  # colour change of the linear gradient from an object's centre to its bounding disc
# The cross's arms are 0.6 of a radius wide, half-width 0.3 (CountWorld 1: 0.4 wide): rotated crosses
# with thinner arms came apart in the VAE's reconstructions (13 of 96 over-counted; none at 0.5 or 0.6)
# and failed gate G0.
_CROSS_ARM = 0.3
_INSIDE = world._INSIDE | {
    "cross": lambda u, v: (
        ((u.abs() <= _CROSS_ARM) & (v.abs() <= 1)) | ((v.abs() <= _CROSS_ARM) & (u.abs() <= 1))
    )
}
_BOUND = world._BOUND | {"cross": math.hypot(1, _CROSS_ARM)}
_CANDIDATES = 128  # centres drawn at once for one object of each clip
_RESTARTS = 4  # layouts of a clip tried at once after a failure, before its radius scale shrinks
_SHRINKS = 12  # radius scales a clip tries after its first before giving up


@dataclass
class RenderedBatch2(RenderedBatch):
    """A `RenderedBatch` that also tells each clip's radius scale.

    `radius_scale` (B,) float32, in pixels of the rendered frames, after any shrinking; `shrinks` (B,)
    int64, how often the clip's scale was redrawn smaller because its objects did not fit (crowded clips
    only).
    """

    radius_scale: torch.Tensor
    shrinks: torch.Tensor


def check_counts(counts: Sequence[int]) -> None:
    """Raise ValueError unless `counts` (one per kind) fits CountWorld 2's limits."""
    world.check_counts(counts)
    if sum(counts) > MAX_TOTAL:
        raise ValueError(
            f"a CountWorld 2 scene holds at most {MAX_TOTAL} objects, the counts {list(counts)} "
            f"sum to {sum(counts)}"
        )


def _random_counts(rng: np.random.Generator, max_kinds: int) -> list[int]:
    """1..max_kinds kinds, uniformly, with counts 1-8 each and at most MAX_TOTAL objects (by rejection)."""
    n_kinds = int(rng.integers(1, max_kinds + 1))
    counts = rng.integers(1, MAX_COUNT + 1, size=n_kinds)
    while counts.sum() > MAX_TOTAL:
        counts = rng.integers(1, MAX_COUNT + 1, size=n_kinds)
    return [int(count) for count in counts]


def sample_scenes(
    rng: np.random.Generator, n: int, max_kinds: int = MAX_KINDS, counts: Sequence[int] | None = None
) -> list[Scene]:
    """`n` random scenes for training: random kinds and counts, or every scene with the given `counts`.

    Shapes, colours, background, motion and caption template are drawn as `world.sample_scene` draws them.
    """
    if not 1 <= max_kinds <= MAX_KINDS:
        raise ValueError(f"max_kinds must be in 1..{MAX_KINDS}, got {max_kinds}")
    if counts is not None:
        check_counts(counts)
    return [
        world.sample_scene(rng, _random_counts(rng, max_kinds) if counts is None else counts)
        for _ in range(n)
    ]


def benchmark_scenes(n: int = 160, seed: int = 0) -> list[Scene]:
    """CountWorld 1's balanced prompt set (first kind counts `i % 8 + 1`, `i % 3 + 1` kinds) within
    CountWorld 2's limit of `MAX_TOTAL` objects."""
    return world.benchmark_scenes(n, seed, max_total=MAX_TOTAL)


# -- placement -----------------------------------------------------------------------------------------


@dataclass
class _Objects:
    """Each clip's objects in slot order (kind by kind), as tensors on the device; absent slots -1 or 0."""

    shape: torch.Tensor  # (B, MAX_TOTAL) int64 index into SHAPES
    kind: torch.Tensor  # (B, MAX_TOTAL) int64 index into scene.kinds
    bound: torch.Tensor  # (B, MAX_TOTAL) bounding-disc radius in units of the object's radius
    colour: torch.Tensor  # (B, MAX_TOTAL, 3) the kind's colour
    background: torch.Tensor  # (B, 3)
    direction: torch.Tensor  # (B, 2) (dy, dx) of the caption's motion, zero for "resting"

    @classmethod
    def of(cls, scenes: Sequence[Scene], device: torch.device) -> _Objects:
        """The objects of `scenes`, on `device`."""
        shape = np.full((len(scenes), MAX_TOTAL), -1)
        kind = np.full((len(scenes), MAX_TOTAL), -1)
        bound = np.zeros((len(scenes), MAX_TOTAL))
        colour = np.zeros((len(scenes), MAX_TOTAL, 3))
        for b, scene in enumerate(scenes):
            slots = [(k, item) for k, item in enumerate(scene.kinds) for _ in range(item.count)]
            kind[b, : len(slots)] = [k for k, _ in slots]
            shape[b, : len(slots)] = [SHAPES.index(item.shape) for _, item in slots]
            bound[b, : len(slots)] = [_BOUND[item.shape] for _, item in slots]
            colour[b, : len(slots)] = [COLOURS[item.colour] for _, item in slots]

        def tensor(values: object) -> torch.Tensor:
            return torch.tensor(np.asarray(values), dtype=torch.float32, device=device)

        return cls(
            shape=torch.as_tensor(shape, device=device),
            kind=torch.as_tensor(kind, device=device),
            bound=tensor(bound),
            colour=tensor(colour),
            background=tensor([BACKGROUNDS[scene.background] for scene in scenes]),
            direction=tensor([MOTIONS[scene.motion] for scene in scenes]),
        )


@dataclass
class _Layout:
    """Where each object starts and how it moves (float32 on the device); absent slots have radius 0."""

    start: torch.Tensor  # (B, MAX_TOTAL, 2) centre (y, x) in frame 0
    velocity: torch.Tensor  # (B, MAX_TOTAL, 2) pixels per frame
    radius: torch.Tensor  # (B, MAX_TOTAL) the shape's nominal radius
    scale: torch.Tensor  # (B,) the clip's radius scale
    shrinks: torch.Tensor  # (B,) int64: times the scale was redrawn smaller


def _uniform(
    generator: torch.Generator, low: float | torch.Tensor, high: float | torch.Tensor, *shape: int
) -> torch.Tensor:
    """U(low, high) of `shape` on the generator's device (low and high broadcast)."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def _closest_approach(offset: torch.Tensor, velocity: torch.Tensor, duration: float) -> torch.Tensor:
    """Smallest length of `offset + velocity * t` over 0 <= t <= duration (linear motion), last axis (y, x).

    Checking the continuous minimum covers every frame with one test instead of one per frame. Zero
    velocity gives t = 0: the clamped denominator meets a numerator of exactly 0.
    """
    speed2 = (velocity * velocity).sum(-1)
    t = (-(offset * velocity).sum(-1) / speed2.clamp_min(1e-12)).clamp(0.0, duration)
    return (offset + velocity * t[..., None]).norm(dim=-1)


def _motion(
    generator: torch.Generator,
    bound: torch.Tensor,
    direction: torch.Tensor,
    scale: torch.Tensor,
    frames: int,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh instance radii (T, S) and velocities (T, S, 2) of T clips of radius scale `scale` (T,).

    `bound` (T, S) are the objects' bound factors (0: absent), `direction` (T, 2) the clips' motions. As in
    CountWorld 1: one speed per clip along the caption's direction, capped so that objects travel at most
    `MAX_TRAVEL` of the free span, with a little per-object jitter of speed and direction.
    """
    n_clips, n_slots = bound.shape
    jitter = _uniform(generator, 1 - RADIUS_JITTER, 1 + RADIUS_JITTER, n_clips, n_slots)
    radius = torch.where(bound > 0, scale[:, None] * jitter, 0.0)
    speed = _uniform(generator, *world.SPEED_RANGE, n_clips) * size / world.REFERENCE_SIZE
    if frames > 1:
        free_span = size - 1 - 2 * world.MARGIN - 2 * (radius * bound).amax(dim=1)
        cap = world.MAX_TRAVEL * free_span / ((frames - 1) * (1 + world.SPEED_JITTER))
        speed = torch.minimum(speed, cap)
    angle = torch.atan2(direction[:, 0], direction[:, 1])[:, None] + _uniform(
        generator, -world.ANGLE_JITTER, world.ANGLE_JITTER, n_clips, n_slots
    )
    object_speed = (speed * direction.norm(dim=1))[:, None] * _uniform(  # zero for "resting"
        generator, 1 - world.SPEED_JITTER, 1 + world.SPEED_JITTER, n_clips, n_slots
    )
    velocity = object_speed[..., None] * torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)
    return radius, velocity


def _place(
    generator: torch.Generator,
    bound: torch.Tensor,
    velocity: torch.Tensor,
    frames: int,
    size: int,
    gap: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start centres (T, S, 2) of T clips' objects, and which clips (T,) found a place for every object.

    `bound` (T, S) are the bounding-disc radii in pixels (0: absent). Objects go largest first; each takes
    the first of `_CANDIDATES` random centres (inside the frame along all its travel) whose bounding disc
    stays `gap` from those of the clip's objects placed so far, in every frame.
    """
    n_clips, n_slots = bound.shape
    rows = torch.arange(n_clips, device=bound.device)
    travel = velocity * (frames - 1)
    low = world.MARGIN + bound[..., None] - travel.clamp(max=0)
    high = size - 1 - world.MARGIN - bound[..., None] - travel.clamp(min=0)
    order = torch.argsort(bound, dim=1, descending=True, stable=True)  # absent slots (bound 0) last
    start = torch.zeros(n_clips, n_slots, 2, device=bound.device)
    placed = torch.zeros(n_clips, n_slots, dtype=torch.bool, device=bound.device)
    fitted = torch.ones(n_clips, dtype=torch.bool, device=bound.device)
    for i in range(n_slots):
        slot = order[:, i]
        present = bound[rows, slot] > 0
        span = high[rows, slot] - low[rows, slot]
        candidates = low[rows, slot, None] + span[:, None] * _uniform(
            generator, 0.0, 1.0, n_clips, _CANDIDATES, 2
        )
        offset = candidates[:, :, None, :] - start[:, None, :, :]  # (T, K, S, 2) in frame 0
        closing = (velocity[rows, slot, None, :] - velocity)[:, None]  # (T, 1, S, 2)
        needed = (bound[rows, slot, None] + bound + gap)[:, None]  # (T, 1, S)
        apart = _closest_approach(offset, closing, frames - 1) >= needed
        fits = (apart | ~placed[:, None, :]).all(dim=2)  # (T, K)
        found = fits.any(dim=1)
        chosen = candidates[rows, fits.int().argmax(dim=1)]  # argmax gives the first fitting candidate
        take = present & found
        start[rows, slot] = torch.where(take[:, None], chosen, start[rows, slot])
        placed[rows, slot] |= take
        fitted &= found | ~present
    return start, fitted


def _layout(
    generator: torch.Generator, objects: _Objects, scenes: Sequence[Scene], frames: int, size: int
) -> _Layout:
    """Seeded layouts of all clips; whole layouts are redrawn for the clips whose objects did not fit.

    A clip that does not fit at first is retried `_RESTARTS` times at once (copies side by side, the first
    that fits wins: one round of kernels instead of four on a GPU). Each time all of them fail, its radius
    scale r is redrawn from U(8, r) and it is retried again, so only clips too crowded for their first
    scale come out smaller. Over 8,192 random training scenes of 17 frames at 128 px, the share of clips
    that shrank was 0 up to 6 objects, 0.1 % at 7, 1.7 % at 8, 8.8 % at 9 and 19 % at 10 objects (0, 0,
    0.2 %, 1.1 % and 6.9 % for single frames): ten objects of radius 14 px barely fit a frame.
    """
    n_clips, n_slots = objects.shape.shape
    device = objects.shape.device
    pixel = size / world.REFERENCE_SIZE
    gap = max(GAP * pixel, world.MIN_GAP)
    layout = _Layout(
        start=torch.zeros(n_clips, n_slots, 2, device=device),
        velocity=torch.zeros(n_clips, n_slots, 2, device=device),
        radius=torch.zeros(n_clips, n_slots, device=device),
        scale=_uniform(generator, *RADIUS_RANGE, n_clips) * pixel,
        shrinks=torch.zeros(n_clips, dtype=torch.int64, device=device),
    )
    todo = torch.arange(n_clips, device=device)
    for copies in [1] + [_RESTARTS] * _SHRINKS:
        rows = todo.repeat_interleave(copies)
        bound = objects.bound[rows]
        radius, velocity = _motion(
            generator, bound, objects.direction[rows], layout.scale[rows], frames, size
        )
        start, fitted = _place(generator, radius * bound, velocity, frames, size, gap)
        fitted = fitted.view(len(todo), copies)
        found = fitted.any(dim=1)
        first = (torch.arange(len(todo), device=device) * copies + fitted.int().argmax(dim=1))[found]
        done = todo[found]
        layout.start[done] = start[first]
        layout.velocity[done] = velocity[first]
        layout.radius[done] = radius[first]
        todo = todo[~found]
        if len(todo) == 0:
            return layout
        if copies > 1:
            layout.scale[todo] = _uniform(generator, RADIUS_RANGE[0] * pixel, layout.scale[todo], len(todo))
            layout.shrinks[todo] += 1
    raise RuntimeError(
        f"could not place the objects of {len(todo)} clips in {1 + _RESTARTS * _SHRINKS} layouts of "
        f"{frames} frames of {size} px, the first: {scenes[int(todo[0])].caption!r}"
    )


# -- drawing -------------------------------------------------------------------------------------------


def _stamp(
    shape: str,
    rows: dict[str, torch.Tensor],
    size: int,
    half: int,
    instances: torch.Tensor,
    videos: torch.Tensor,
) -> None:
    """Draw n object-frames of one shape into the flat `instances` (pixels,) and `videos` (pixels, 3).

    `rows` holds per object-frame: `plane` (n,) clip * frames + frame, `value` (n,) slot + 1, `centre`
    (n, 2), `radius` (n,), `turn` (n, 2) cosine and sine of the rotation, `colour` (n, 3) and `gradient`
    (n, 2) colour change per pixel along (y, x). The inside-test runs on a window of pixels around each
    centre; objects never overlap, so the order of writes does not matter.
    """
    window = torch.arange(-half, half + 1, device=instances.device)
    centre = rows["centre"]
    ys = centre[:, 0:1].round().long() + window  # (n, w) pixel rows around each centre
    xs = centre[:, 1:2].round().long() + window
    dy = (ys - centre[:, 0:1])[:, :, None]  # (n, w, 1)
    dx = (xs - centre[:, 1:2])[:, None, :]  # (n, 1, w)
    cos, sin = (rows["turn"][:, i, None, None] for i in (0, 1))
    radius = rows["radius"][:, None, None]
    inside = _INSIDE[shape]((cos * dx + sin * dy) / radius, (cos * dy - sin * dx) / radius)
    pixel = (rows["plane"][:, None, None] * size + ys[:, :, None]) * size + xs[:, None, :]
    shade = dy * rows["gradient"][:, 0, None, None] + dx * rows["gradient"][:, 1, None, None]
    row = torch.arange(len(centre), device=instances.device)[:, None, None].expand_as(inside)[inside]
    instances[pixel[inside]] = rows["value"][row]
    videos[pixel[inside]] = (rows["colour"][row] + shade[inside][:, None]).clamp(0.0, 1.0)


def _draw(
    generator: torch.Generator, objects: _Objects, layout: _Layout, frames: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos (B, F, H, W, 3) and instance masks (B, F, H, W) of the laid-out clips.

    Each instance gets a rotation, a colour offset within `COLOUR_JITTER` of its kind's colour and a
    linear shading in a random direction that reaches `SHADING` at the bounding disc (not at the nominal
    radius, which a square's corners pass), so no pixel is further than 0.06 from its kind's colour.
    """
    n_clips, n_slots = objects.shape.shape
    device = objects.shape.device
    rotation = _uniform(generator, 0.0, 2 * math.pi, n_clips, n_slots)
    offset = _uniform(generator, -COLOUR_JITTER, COLOUR_JITTER, n_clips, n_slots, 3)
    shading = _uniform(generator, 0.0, 2 * math.pi, n_clips, n_slots)
    bound_radius = (layout.radius * objects.bound).clamp_min(1e-6)  # absent slots are never drawn
    per_object = {
        "start": layout.start,
        "velocity": layout.velocity,
        "radius": layout.radius,
        "turn": torch.stack([torch.cos(rotation), torch.sin(rotation)], dim=-1),
        "colour": objects.colour + offset,
        "gradient": SHADING
        * torch.stack([torch.sin(shading), torch.cos(shading)], dim=-1)
        / bound_radius[..., None],
    }
    instances = torch.zeros(n_clips * frames * size * size, dtype=torch.int16, device=device)
    videos = objects.background.repeat_interleave(frames * size * size, dim=0)
    clip, slot = torch.nonzero(objects.shape >= 0, as_tuple=True)
    frame = torch.arange(frames, device=device)
    for shape_index, shape in enumerate(SHAPES):
        chosen = objects.shape[clip, slot] == shape_index
        b = clip[chosen].repeat_interleave(frames)  # one row per object and frame
        o = slot[chosen].repeat_interleave(frames)
        f = frame.repeat(int(chosen.sum()))
        largest = RADIUS_RANGE[1] * (1 + RADIUS_JITTER) * size / world.REFERENCE_SIZE * _BOUND[shape]
        half = math.ceil(largest) + 1  # of the window of pixels around each centre
        for first, stop in world._chunks(len(b), (2 * half + 1) ** 2):
            part = {name: values[b[first:stop], o[first:stop]] for name, values in per_object.items()}
            part["centre"] = part.pop("start") + part.pop("velocity") * f[first:stop, None]
            part["plane"] = b[first:stop] * frames + f[first:stop]
            part["value"] = (o[first:stop] + 1).to(torch.int16)
            _stamp(shape, part, size, half, instances, videos)
    return videos.view(n_clips, frames, size, size, 3), instances.view(n_clips, frames, size, size)


def render_scenes(
    scenes: Sequence[Scene], seed: int, frames: int = 17, size: int = 128, device: str | torch.device = "cpu"
) -> RenderedBatch2:
    """Render scenes as clips of `frames` square frames of `size` pixels on `device`, with instance masks.

    Everything is drawn with one `torch.Generator` on `device` seeded with `seed`: the same scenes, seed
    and device give identical tensors. The draws are batched, so a clip depends on the whole batch (a
    subset of the scenes gives other clips), and another device draws other numbers.
    """
    if not scenes:
        raise ValueError("render_scenes needs at least one scene")
    if frames < 1 or size < world.MIN_SIZE:
        raise ValueError(f"need frames >= 1 and size >= {world.MIN_SIZE}, got frames={frames}, size={size}")
    for scene in scenes:
        check_counts([kind.count for kind in scene.kinds])
    device = torch.device(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    objects = _Objects.of(scenes, device)
    layout = _layout(generator, objects, scenes, frames, size)
    videos, instances = _draw(generator, objects, layout, frames, size)
    object_kind = torch.full((len(scenes), world.MAX_TOTAL), -1, dtype=torch.int64, device=device)
    object_kind[:, :MAX_TOTAL] = objects.kind
    return RenderedBatch2(
        videos=videos,
        instances=instances,
        object_kind=object_kind,
        radius_scale=layout.scale,
        shrinks=layout.shrinks,
    )
