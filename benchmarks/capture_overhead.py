"""Capture overhead at full size: a plain transformer step against one with the default NUMINA capture.

Builds a Wan transformer of a real shape with random weights on the GPU (no checkpoint needed), runs
one denoising step at the release's reference step 20 inside the pipeline's cache context, and times,
side by side in one process (alternating, CUDA events, median):

- plain:          the transformer forward, no hooks;
- capture-memory: the same forward with the default NUMINA capture (self-attention reduced at the
                  reference layer, the chosen tokens' cross-attention at every layer) into memory,
                  in line (`AttentionCapture(background=False)`);
- capture-release: the same with the release's estimators (`estimator="release"`, what `official`
                  captures: scikit-learn-exact layout components in float64 and svd_lowrank scores);
- capture-segments: the same keeping 12 components per token (what the `segments` extraction reads)
                  instead of 3;
- capture-hdf5:   the same into the HDF5 store through its background writer (per-chunk fletcher32
                  checksums on; the file is made when the capture is installed, outside the timing);
- hooks-idle:     capture installed, at a step it does not capture (the cost on the other 49 steps);
- *-background:   the same with `AttentionCapture(background=True)`, the default on CUDA: the
                  self-attention reductions in a worker thread on a side stream, beside the model's
                  later blocks;
- after-hdf5:     the step after an HDF5 capture, while the store's writer thread drains it;
- plain-again:    the plain step once more, elsewhere in the order: how far two identical rows differ.

Only the forward is timed: hooks go on and off outside the timing (their CPU cost, once per
generation, is reported as `install_remove_ms`), and each store is closed before the next variant.
It also checks that the outputs are bit-identical (and the background capture's numbers the inline
one's), times each reduction on its own, reports peak GPU memory and the HDF5 write throughput.
Results go to a JSON file and a printed table, each ratio to plain with its 95% bootstrap interval
(`ratio_interval`). `--memory-trace` adds, last, what holds GPU memory at
the peak of a captured step (in line and in the background), replayed from the caching allocator's
trace; `--profile` adds torch.profiler tables and, per profiled step, what the device did: each
stream's busy time, the model's stream's idle gaps and how long two streams ran at once.

    python benchmarks/capture_overhead.py --variant wan2.1-1.3b \
        --out benchmarks/results/capture_overhead_wan2.1-1.3b.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from numina.arguments import check_output, integer, real

# Profiled with --profile (after-hdf5's window spans the captured step and the timed one after it).
PROFILED = (
    "plain",
    "capture-memory",
    "capture-memory-background",
    "capture-hdf5",
    "capture-hdf5-background",
    "after-hdf5",
)
VARIANTS = (
    "plain",
    "capture-memory",
    "plain-again",
    "capture-memory-background",
    "capture-release",
    "capture-release-background",
    "capture-segments",
    "capture-hdf5",
    "capture-hdf5-background",
    "after-hdf5",
    "hooks-idle",
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without torch, so that --help and argument errors answer at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="wan2.1-1.3b")
    parser.add_argument("--frames", type=integer(1), default=81)
    parser.add_argument("--height", type=integer(1), default=480)
    parser.add_argument("--width", type=integer(1), default=832)
    parser.add_argument("--repeats", type=integer(1), default=10)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="the rows to time (plain always is: the ratios divide by it)",
    )
    parser.add_argument(
        "--map-chunk-bytes",
        type=integer(1),
        default=None,
        help="float32 self-attention maps the capture forms at a time (a huge value: all heads at once; "
        "default: numina.capture.reductions.MAP_CHUNK_BYTES)",
    )
    parser.add_argument(
        "--map-products",
        choices=("tf32", "float16"),
        default=None,
        help="how the capture's power iterations multiply the maps: TF32 products of float32 maps, or "
        "the maps stored in float16 (default: SelfAttentionCapture's `products` on CUDA, float16)",
    )
    parser.add_argument(
        "--rest", type=real(0), default=0.25, help="seconds the GPU idles before each timed variant"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--memory-trace",
        type=Path,
        default=None,
        help="JSON file: what holds GPU memory at the peak of one step of each capture-memory variant "
        "(from the caching allocator's trace), by stream and by the code that allocated it",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="folder for torch.profiler tables (kernels by GPU time, tables.txt) and device timelines "
        "(timeline.json: per stream busy ms, the model's stream's idle gaps, the streams' overlap) of one "
        f"step of each of {', '.join(PROFILED)} that runs",
    )
    return parser


def parse_args() -> argparse.Namespace:
    """The arguments, every output path checked before the model is built: a path that cannot be
    written would otherwise end a paid GPU call after its timings."""
    parser = build_parser()
    args = parser.parse_args()
    outputs = {"--out": args.out, "--memory-trace": args.memory_trace}
    for option, path in outputs.items():
        if path is not None:
            check_output(parser, path.parent, option)
    if args.profile is not None:
        check_output(parser, args.profile, "--profile")
    return args


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    parse_args()


import numpy as np
import scipy.stats
import torch
from diffusers import WanTransformer3DModel

from numina.capture import AttentionCapture, MemoryStore, numina_spec, open_capture_store, reductions
from numina.method.segments import COMPONENTS as SEGMENTS_COMPONENTS
from numina.metrics import top_components
from numina.metrics.lowrank import exact_components, randomized_svd_components, release_score_components
from numina.models import Geometry, get_variant
from numina.store import measure_write_throughput

NUM_STEPS, PROMPT_LENGTH, TOKENS = 50, 16, (2, 3)  # a numeral and a noun among 16 prompt positions
RELEASE = {"estimator": "release"}  # official's capture: the release's estimators
SEGMENTS = {"components": SEGMENTS_COMPONENTS}  # the `segments` extraction's 12 components


def traced_step(run) -> list[dict]:
    """The caching allocator's trace of events (torch.cuda.memory._snapshot's device trace) over one
    call of `run`, on the current device."""
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
    try:
        run()
        torch.cuda.synchronize()
        trace = torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()]
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    return trace


def allocating_code(frames: list[dict]) -> str:
    """The innermost frame of this project's (numina, benchmarks) or diffusers' code that made an
    allocation."""
    for frame in frames:
        name = frame.get("filename", "")
        if "/numina/" in name or "/diffusers/" in name or "/benchmarks/" in name:
            return f"{name.rsplit('/', 1)[-1]}:{frame.get('line')} {frame.get('name')}"
    return "other"


def replay_allocations(trace: list[dict]) -> tuple[dict[int, dict], int, int]:
    """The blocks held after the last event (by address; held from `alloc` until `free_completed`),
    the most bytes held after any event, and that event's index (-1 for an empty trace)."""
    held: dict[int, dict] = {}
    now, peak_bytes, peak_at = 0, 0, -1
    for at, event in enumerate(trace):
        if event["action"] == "alloc":
            held[event["addr"]] = event
            now += event["size"]
        elif event["action"] == "free_completed" and event["addr"] in held:
            now -= held.pop(event["addr"])["size"]
        if now > peak_bytes:
            peak_bytes, peak_at = now, at
    return held, peak_bytes, peak_at


def held_at_peak(trace: list[dict], top: int = 15) -> dict:
    """Replays an allocator trace (blocks held from `alloc` until `free_completed`, so a block a side
    stream still uses counts until that stream is done) and tells, at the moment most bytes were held
    within the trace: the GiB held, and the largest holders by stream and by allocating code."""
    _, peak_bytes, peak_at = replay_allocations(trace)
    # replayed again up to the peak, so that the blocks are not copied at every new high of a long trace
    peak_blocks, _, _ = replay_allocations(trace[: peak_at + 1])
    by_stream, by_code = Counter(), Counter()
    for block in peak_blocks.values():
        stream = str(block.get("stream", "?"))
        by_stream[stream] += block["size"]
        by_code[f"stream {stream}: {allocating_code(block.get('frames', []))}"] += block["size"]
    return {
        "peak_gib_over_trace_start": peak_bytes / 2**30,
        "by_stream_gib": {stream: size / 2**30 for stream, size in by_stream.items()},
        "by_code_gib": {code: size / 2**30 for code, size in by_code.most_common(top)},
    }


GPU_EVENTS = ("kernel", "gpu_memcpy", "gpu_memset")  # the chrome trace's categories of device work


def merged_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of (start, end) intervals, as sorted disjoint intervals."""
    union: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if union and start <= union[-1][1]:
            union[-1] = (union[-1][0], max(union[-1][1], end))
        else:
            union.append((start, end))
    return union


def gpu_timeline(events: list[dict], gap_ms: float = 0.05, top: int = 10) -> dict:
    """What the device did over one profiled step, from a torch.profiler chrome trace's events.

    Per CUDA stream: kernels (copies and memsets included) and ms busy. For the busiest stream (the
    model's): its idle ms over the window from the first to the last device event of any stream, the
    gaps longer than `gap_ms` (count, ms) and the `top` longest with the kernels on either side; and
    the ms during which two or more streams were busy at once (the overlap a side stream buys).
    """
    work = [event for event in events if event.get("cat") in GPU_EVENTS and event.get("ph") == "X"]
    if not work:
        raise ValueError("the trace holds no device events: profile with ProfilerActivity.CUDA")
    by_stream: dict[str, list[dict]] = {}
    for event in work:
        by_stream.setdefault(str(event.get("args", {}).get("stream", event.get("tid"))), []).append(event)
    begin = min(event["ts"] for event in work)
    finish = max(event["ts"] + event["dur"] for event in work)
    spans = {
        stream: merged_spans([(e["ts"], e["ts"] + e["dur"]) for e in events])
        for stream, events in by_stream.items()
    }
    busy = {stream: sum(end - start for start, end in union) for stream, union in spans.items()}
    main = max(busy, key=busy.get)
    ends = {e["ts"] + e["dur"]: e["name"] for e in by_stream[main]}
    starts = {e["ts"]: e["name"] for e in by_stream[main]}
    gaps = [
        {
            "at_ms": (left[1] - begin) / 1000,
            "ms": (right[0] - left[1]) / 1000,
            "after": ends.get(left[1], "?")[:80],
            "before": starts.get(right[0], "?")[:80],
        }
        for left, right in itertools.pairwise(spans[main])
        if right[0] - left[1] > gap_ms * 1000
    ]
    changes = sorted(
        [(start, 1) for union in spans.values() for start, _ in union]
        + [(end, -1) for union in spans.values() for _, end in union]
    )
    overlap, running, since = 0.0, 0, begin
    for at, change in changes:
        if running >= 2:
            overlap += at - since
        running, since = running + change, at
    return {
        "window_ms": (finish - begin) / 1000,
        "streams": {s: {"events": len(by_stream[s]), "busy_ms": busy[s] / 1000} for s in by_stream},
        "main_stream": main,
        "main_idle_ms": (finish - begin - busy[main]) / 1000,
        "main_gaps_over_threshold": {
            "threshold_ms": gap_ms,
            "count": len(gaps),
            "ms": sum(g["ms"] for g in gaps),
        },
        "main_longest_gaps": sorted(gaps, key=lambda gap: -gap["ms"])[:top],
        "two_or_more_streams_busy_ms": overlap / 1000,
    }


def build_model(variant: str) -> WanTransformer3DModel:
    config = get_variant(variant).transformer
    with torch.device("cuda"):
        model = WanTransformer3DModel(**config)
    return model.to(torch.bfloat16).eval()


def make_inputs(geometry: Geometry, channels: int, text_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator("cuda").manual_seed(seed)
    latent_shape = (1, channels, geometry.frames, geometry.height * 2, geometry.width * 2)
    text = torch.randn(1, geometry.text_length, text_dim, generator=generator, device="cuda")
    text[:, PROMPT_LENGTH:] = 0  # the pipeline zero-pads the prompt embedding to 512 positions
    return {
        "hidden_states": torch.randn(latent_shape, generator=generator, device="cuda").to(torch.bfloat16),
        "timestep": torch.tensor([600.0], device="cuda"),
        "encoder_hidden_states": text.to(torch.bfloat16),
    }


def forward(model: WanTransformer3DModel, inputs: dict[str, torch.Tensor], step: int) -> torch.Tensor:
    with torch.no_grad(), model.cache_context("cond", step_index=step):
        return model(**inputs, return_dict=False)[0]


def time_call(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def ratio_interval(
    row: list[float], plain: list[float], confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(row) / median(plain), each row's repeats resampled on
    their own: how far the ratio a few repeats give can be trusted (is a step within x1.05?)."""
    result = scipy.stats.bootstrap(
        (np.asarray(row), np.asarray(plain)),
        lambda a, b, axis: np.median(a, axis=axis) / np.median(b, axis=axis),
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def reduction_breakdown(geometry: Geometry, spec, repeats: int) -> dict[str, float]:
    """Median ms of each reduction alone on random bf16 queries and keys of the real shape."""
    heads, dim = geometry.heads, geometry.head_dim
    q = torch.randn(geometry.tokens, heads, dim, device="cuda", dtype=torch.bfloat16)
    k_text = torch.randn(geometry.text_length, heads, dim, device="cuda", dtype=torch.bfloat16)
    k_text[PROMPT_LENGTH:] = k_text[PROMPT_LENGTH]  # zero-padded prompts give one padding key
    tokens = torch.tensor(TOKENS, device="cuda")
    part = spec.self_attention

    def self_maps():
        return reductions.frame_local_attention(q, q, geometry.frames)

    def self_all(**changes):
        """What the hook runs (maps and components a chunk of heads at a time), with `changes` to the
        capture's self-attention settings."""
        changed = dataclasses.replace(part, **changes)
        return lambda: reductions.self_attention_reductions(
            q, q, geometry.frames, geometry.height, geometry.width, changed
        )

    maps_once = self_maps()

    def self_components(products: str = "tf32"):
        return lambda: top_components(
            maps_once, part.components, part.oversample, part.iterations, 0, products=products
        )

    def release_components():  # official's layout components: scikit-learn's algorithm in float64
        return randomized_svd_components(maps_once, part.components, part.oversample, part.seed)

    def release_scores():  # official's head-score components: seeded torch.svd_lowrank(q=3)
        return release_score_components(maps_once, part.score_seed)

    def cross_one_layer():
        probs, mass = reductions.cross_attention_probabilities(q, k_text, tokens, PROMPT_LENGTH, True)
        return reductions.reduce_cross_attention(
            probs, mass, geometry.frames, geometry.height, geometry.width, spec.cross_attention.stats
        )

    results = {}
    for name, fn in [
        ("self_maps", self_maps),
        ("self_components", self_components()),
        ("self_components_float16", self_components("float16")),
        ("self_total", self_all()),
        ("self_total_float16", self_all(products="float16")),
        ("self_total_release", self_all(**RELEASE)),
        ("release_components", release_components),
        ("release_scores", release_scores),
        ("self_total_segments", self_all(**SEGMENTS)),
        ("cross_one_layer", cross_one_layer),
    ]:
        time_call(fn, 2)
        results[name] = statistics.median(time_call(fn, repeats))
    return results


def accuracy_check(geometry: Geometry, spec) -> dict[str, float]:
    """The device path (bf16 inputs, float32/TF32 products, and float16 maps) against float64 references.

    Self-attention: queries/keys with planted structure (each frame's positions fall in 4 quadrant
    groups sharing a direction, plus noise), so the top 3 components are well separated; the
    components of 2 heads x 3 frames are compared with a float64 SVD. Cross-attention: the
    zero-padding shortcut against a float64 softmax over all 512 keys.
    """
    generator = torch.Generator("cuda").manual_seed(2)
    heads, dim, frames = 2, geometry.head_dim, 3
    rows = torch.arange(geometry.height, device="cuda")[:, None] * 2 >= geometry.height
    cols = torch.arange(geometry.width, device="cuda")[None, :] * 2 >= geometry.width
    group = (rows.long() * 2 + cols.long()).flatten()  # quadrant of each position
    directions = torch.randn(4, dim, device="cuda", generator=generator) * 0.6
    noise = torch.randn(frames * geometry.tokens_per_frame, heads, dim, device="cuda", generator=generator)
    q = (directions[group].repeat(frames, 1)[:, None, :] + 0.5 * noise).to(torch.bfloat16)
    maps = reductions.frame_local_attention(q, q, frames)
    part = spec.self_attention
    components, _ = top_components(maps, part.components, part.oversample, part.iterations, 0)
    half, _ = top_components(maps, part.components, part.oversample, part.iterations, 0, products="float16")
    reference_maps = torch.softmax(
        (
            q.double().transpose(0, 1).unflatten(1, (frames, -1))
            @ q.double().transpose(0, 1).unflatten(1, (frames, -1)).transpose(-1, -2)
        )
        / dim**0.5,
        dim=-1,
    )
    exact, s = exact_components(reference_maps, k=4)  # the 4th singular value for the gap below
    exact = exact[..., :3]

    def component_error(estimate: torch.Tensor) -> float:
        return ((estimate.double() - exact).norm(dim=(-2, -1)) / exact.norm(dim=(-2, -1))).max().item()

    map_error = (maps.double() - reference_maps).abs().max() / reference_maps.abs().max()

    k = torch.randn(geometry.text_length, geometry.heads, dim, device="cuda", generator=generator)
    k[PROMPT_LENGTH:] = k[PROMPT_LENGTH]
    k = k.to(torch.bfloat16)
    query = torch.randn(4096, geometry.heads, dim, device="cuda", generator=generator).to(torch.bfloat16)
    tokens = torch.tensor(TOKENS, device="cuda")
    probs, _ = reductions.cross_attention_probabilities(query, k, tokens, PROMPT_LENGTH, True)
    logits = query.double().transpose(0, 1) @ k.double().transpose(0, 1).transpose(-1, -2) / dim**0.5
    reference = torch.softmax(logits, dim=-1)[..., list(TOKENS)].transpose(-1, -2)
    cross_error = (probs.double() - reference).abs().max() / reference.abs().max()
    return {
        "self_maps_max_rel_error": map_error.item(),
        "self_components_max_rel_error": component_error(components),
        "self_components_float16_max_rel_error": component_error(half),
        "self_singular_value_gap": (s[..., 2] / s[..., 3]).min().item(),
        "cross_probs_max_rel_error": cross_error.item(),
    }


def main() -> None:
    args = parse_args()
    if args.map_chunk_bytes is not None:
        reductions.MAP_CHUNK_BYTES = args.map_chunk_bytes  # read by the hooks at every capture

    model = build_model(args.variant)
    variant = get_variant(args.variant)
    geometry = Geometry.from_configs(
        model.config, 4, variant.vae["scale_factor_spatial"], args.frames, args.height, args.width
    )
    spec = numina_spec(geometry, TOKENS, PROMPT_LENGTH, NUM_STEPS).resolved(geometry, NUM_STEPS, "cuda")
    if args.map_products is not None:
        products = dataclasses.replace(spec.self_attention, products=args.map_products)
        spec = dataclasses.replace(spec, self_attention=products)
    step = spec.steps[0]
    inputs = make_inputs(geometry, model.config.in_channels, model.config.text_dim)
    tmp = Path(tempfile.mkdtemp())

    plain_out = forward(model, inputs, step)
    inline_sink, background_sink = MemoryStore(spec, geometry), MemoryStore(spec, geometry)
    with AttentionCapture(model, spec, geometry, inline_sink, background=False):
        capture_out = forward(model, inputs, step)
    with AttentionCapture(model, spec, geometry, background_sink, background=True):
        background_out = forward(model, inputs, step)
    identical = bool(torch.equal(plain_out, capture_out)) and bool(torch.equal(plain_out, background_out))
    background_identical = all(
        np.array_equal(inline_sink[name].values, background_sink[name].values, equal_nan=True)
        for name in inline_sink.datasets
    )
    del plain_out, capture_out, background_out, inline_sink, background_sink

    def timed_forward(at_step: int) -> float:
        """GPU ms of one forward; hooks are installed and removed outside it."""
        return time_call(lambda: forward(model, inputs, at_step), 1)[0]

    def plain():
        return timed_forward(step)

    def capture_memory(background: bool = False, **changes):
        """The capture into memory, with `changes` to its self-attention settings."""
        part = dataclasses.replace(spec.self_attention, **changes)
        changed = dataclasses.replace(spec, self_attention=part)

        def run():
            with AttentionCapture(model, changed, geometry, MemoryStore(changed, geometry), background):
                return timed_forward(step)

        return run

    writers = []
    close_seconds = []
    queue_wait_ms: dict[str, list[float]] = {}

    def capture_hdf5(name: str, background: bool = False, timed_step: int = step):
        """The capture into the HDF5 store, its writer closed (drained) after the timing. With
        `timed_step` after `step`: the capture step runs untimed and the next (uncaptured) step is
        timed, while the writer thread turns the capture into the file beside it."""

        def run():
            writer = open_capture_store(tmp / f"run{len(writers)}.h5", spec, geometry, {"benchmark": True})
            with AttentionCapture(model, spec, geometry, writer, background):
                if timed_step != step:
                    forward(model, inputs, step)
                elapsed = timed_forward(timed_step)
            closing = time.perf_counter()
            writer.close()
            close_seconds.append(time.perf_counter() - closing)
            writers.append(writer)
            queue_wait_ms.setdefault(name, []).append(writer.stats["wait_seconds"] * 1000)
            return elapsed

        return run

    def hooks_idle():
        with AttentionCapture(model, spec, geometry, MemoryStore(spec, geometry), background=False):
            return timed_forward(step + 1)

    every_variant = {
        "plain": plain,
        "capture-memory": capture_memory(),
        "plain-again": plain,  # the same step again, elsewhere in the order: the timing's own noise
        "capture-memory-background": capture_memory(background=True),
        "capture-release": capture_memory(**RELEASE),
        "capture-release-background": capture_memory(background=True, **RELEASE),
        "capture-segments": capture_memory(**SEGMENTS),
        "capture-hdf5": capture_hdf5("capture-hdf5"),
        "capture-hdf5-background": capture_hdf5("capture-hdf5-background", background=True),
        "after-hdf5": capture_hdf5("after-hdf5", timed_step=step + 1),
        "hooks-idle": hooks_idle,
    }
    variants = {name: every_variant[name] for name in VARIANTS if name == "plain" or name in args.variants}
    peak = {}
    for name, fn in variants.items():  # warm-up, and peak memory of each variant on its own
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak[name] = torch.cuda.max_memory_allocated() / 2**30
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(args.repeats):
        # each round starts one variant further on, so that drift and order hit every variant alike,
        # and each variant after the same rest (the GPU's clocks follow its recent load)
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            time.sleep(args.rest)
            times[name].append(variants[name]())
    install_ms = []
    for _ in range(args.repeats):
        capture = AttentionCapture(model, spec, geometry, MemoryStore(spec, geometry))
        started = time.perf_counter()
        capture.install()
        capture.remove()
        install_ms.append((time.perf_counter() - started) * 1000)
    # the HDF5 runs so far (the profiled ones below would add to them)
    store_bytes = sum(path.stat().st_size for path in tmp.glob("run*.h5"))
    store_mb_per_run = store_bytes / len(writers) / 2**20 if writers else None
    store_queue_wait_ms = {name: list(values) for name, values in queue_wait_ms.items()}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiled = [name for name in PROFILED if name in variants]
        tables, timelines = [], {}
        for name in profiled:
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with torch.profiler.profile(activities=activities) as profile:
                variants[name]()
            table = profile.key_averages().table(
                sort_by="cuda_time_total", row_limit=60, max_name_column_width=90
            )
            tables.append(f"== {name}\n{table}")
            trace = tmp / f"{name}.trace.json"
            profile.export_chrome_trace(str(trace))
            timelines[name] = gpu_timeline(json.loads(trace.read_text())["traceEvents"])
        (args.profile / "tables.txt").write_text("\n\n".join(tables))
        (args.profile / "timeline.json").write_text(json.dumps(timelines, indent=1))

    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "variant": args.variant,
        "geometry": geometry.to_dict(),
        "tokens": geometry.tokens,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "rest_seconds": args.rest,
        "map_chunk_bytes": args.map_chunk_bytes,
        "map_products": spec.self_attention.products,
        "identical_output": identical,
        "background_capture_identical": background_identical,
        "median_ms": median,
        "ratio_to_plain": {name: value / median["plain"] for name, value in median.items()},
        "ratio_interval_95": {name: ratio_interval(values, times["plain"]) for name, values in times.items()},
        "all_ms": times,
        "peak_memory_gib": peak,
        "reduction_ms": reduction_breakdown(geometry, spec, args.repeats),
        "accuracy": accuracy_check(geometry, spec),
        "store_mb_per_run": store_mb_per_run,
        "store_close_seconds_total": sum(close_seconds),
        # per HDF5 run, how long the model's thread waited on the writer's full queue (it holds 16
        # writes, each waiting for its GPU copy: a full queue keeps the model's thread near the GPU)
        "store_queue_wait_ms": store_queue_wait_ms,
        "install_remove_ms": statistics.median(install_ms),
        "hdf5_write_throughput": measure_write_throughput(tmp / "throughput.h5"),
    }
    print(json.dumps(result, indent=1))
    print(f"\n{'variant':<28}{'median ms':>12}{'x plain':>10}{'95% interval':>18}{'peak GiB':>10}")
    for name in variants:
        low, high = result["ratio_interval_95"][name]
        interval = f"[{low:.3f}, {high:.3f}]"
        print(
            f"{name:<28}{median[name]:>12.1f}{result['ratio_to_plain'][name]:>10.3f}{interval:>18}{peak[name]:>10.1f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    if args.memory_trace:  # last: the timings above are saved whatever happens here
        traced = [name for name in ("capture-memory", "capture-memory-background") if name in variants]
        held = {name: held_at_peak(traced_step(variants[name])) for name in traced}
        args.memory_trace.parent.mkdir(parents=True, exist_ok=True)
        args.memory_trace.write_text(json.dumps(held, indent=1))
        print(json.dumps(held, indent=1))


if __name__ == "__main__":
    main()
