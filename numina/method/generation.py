"""The NUMINA generation loop: walk-through with capture, identify, layout, correct, guided run.

    result = run_numina(pipeline, tokens, settings, preset("official"), "run/attention.h5")

1. Walk-through: the pipeline runs with the same seed and noise as the final video (on its own
   shorter or unguided schedule when the options ask, `numina.method.schedule`), capturing the
   reference step (self-attention reductions at the reference block, the nouns' and numerals'
   cross-attention) into memory and the run's HDF5 store at once.
2. At the end of the reference step (a diffusers step-end callback) the in-memory capture gives the
   head choice, the nouns' cross maps and the layout; when every frame's count is right and
   `early_accept` is on, a walk-through on the final run's own schedule simply goes on to the end and
   is the video; otherwise it stops there.
3. The layout is corrected (removals, additions) and the video is generated again from the same noise
   with the cross-attention modulated toward it. With nothing to correct this is the release's plain
   second generation, identical to continuing the walk-through. `generate_with_layout` is this step
   alone, from a layout found another way (the controls of `numina.evaluation.controls`).

The layout before and after correction, counts, chosen heads and edits go into the store (`layout/`
group and attributes), which is complete only when the whole run finished. May import numpy, torch
and numina (capture, compat, method, metrics, models, prompts, sampling, store, version).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from numina.capture import AttentionCapture, MemoryStore, TeeSink, open_capture_store
from numina.compat import interrupt
from numina.method.cache import WARMUP, FirstBlockStepCache, StepCache
from numina.method.correct import Edit, check_correction, correct_layout
from numina.method.identify import HeadChoice, Phase1Data
from numina.method.layout import Layout
from numina.method.modulate import CrossAttentionModulation, ModulationPlan, is_active, schedule_centre
from numina.method.phase1 import counts_are_right, identify_and_layout, method_spec, modulated_positions
from numina.method.presets import NuminaOptions
from numina.method.schedule import check_same_noise_level, options_schedule, transformer_calls
from numina.method.tracking import correct_tracked
from numina.models import Geometry
from numina.prompts import PromptTokens
from numina.sampling import GenerationSettings, check_generated, plain_generation, run_attributes

STAGES = ("walkthrough", "corrected")
PATHS = (
    "guided",
    "regenerated",
    "accepted",
)  # modulated run / plain second run (counts right) / early accept


@dataclass
class NuminaResult:
    """What a NUMINA run produced and decided."""

    video: Any  # (frames, H, W, 3) in [0, 1] for output_type="np"; latents for "latent"
    path: str  # one of PATHS
    targets: dict[str, int]
    head: HeadChoice
    cross_heads: dict[str, int | None]
    layout: Layout  # after the walk-through
    corrected: Layout
    edits: list[Edit]
    timings: dict[str, float] = field(default_factory=dict)
    cached_steps: dict[str, list[int]] = field(default_factory=dict)  # steps that reused a cached output

    def counts(self, stage: str = "walkthrough") -> dict[str, list[int]]:
        """Per noun, the count in every latent frame after the walk-through or after correction."""
        layout = self.layout if stage == "walkthrough" else self.corrected
        return {noun: layout.counts(noun).tolist() for noun in layout.nouns}

    def transformer_calls(self, settings: GenerationSettings, options: NuminaOptions) -> int:
        """The transformer calls this run made for final settings `settings` under `options`: the
        walk-through (its own schedule) to its reference step, or to the end when accepted, plus the
        guided run, less the steps a cache skipped (the cost measure of a cheaper walk-through)."""
        schedule = options_schedule(settings, options)
        accepted = self.path == "accepted"
        walkthrough = (settings.steps if accepted else schedule.reference_step + 1) - len(
            self.cached_steps.get("walkthrough", [])
        )
        guided = (0 if accepted else settings.steps) - len(self.cached_steps.get("guided", []))
        return transformer_calls(schedule.settings, walkthrough) + transformer_calls(settings, guided)

    def summary(self) -> dict[str, Any]:
        """A JSON-able record of the decisions (for the run folder's numina.json)."""
        return {
            "path": self.path,
            "targets": self.targets,
            "counts": {stage: self.counts(stage) for stage in STAGES},
            "head": self.head.to_dict(),
            "cross_heads": self.cross_heads,
            "edits": [asdict(edit) for edit in self.edits],
            "timings": self.timings,
            "cached_steps": self.cached_steps,
        }


def warn_unreached_targets(corrected: Layout, targets: dict[str, int]) -> None:
    """Warn where the corrected layout still miscounts: an addition copies the smallest instance's
    bounding box and may overlap instances (the release's placement), so a copy can cover one whole,
    e.g. when an instance spans the frame. The guided run then follows a layout with the wrong count;
    say so rather than report edits only."""
    for noun, target in targets.items():
        counts = corrected.counts(noun)
        frames = np.flatnonzero(counts != target).tolist()
        if frames:
            warnings.warn(
                f"after correction {noun!r} still counts {counts[frames].tolist()} in latent frame(s) "
                f"{frames}, not {target}: an added copy of an instance covered another one whole (the "
                "release's placement lets copies overlap). The guided run follows this layout.",
                stacklevel=4,  # the caller of run_numina or generate_with_layout
            )


@torch.no_grad()
def decode_latents(pipeline: Any, latents: torch.Tensor, output_type: str = "np") -> Any:
    """Decode final latents exactly as diffusers' Wan pipeline does at the end of its call."""
    if output_type == "latent":
        return latents
    vae = pipeline.vae
    latents = latents.to(vae.device, vae.dtype)
    mean = (
        torch.tensor(vae.config.latents_mean)
        .view(1, vae.config.z_dim, 1, 1, 1)
        .to(latents.device, latents.dtype)
    )
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(
        latents.device, latents.dtype
    )
    video = vae.decode(latents / inverse_std + mean, return_dict=False)[0]
    return pipeline.video_processor.postprocess_video(video, output_type=output_type)[0]


def _declare_layout(writer: Any, nouns: list[str], geometry: Geometry) -> None:
    writer.create_group(
        "layout",
        {
            "stage": list(STAGES),
            "noun": nouns,
            "frame": list(range(geometry.frames)),
            "y": list(range(geometry.height)),
            "x": list(range(geometry.width)),
        },
    )
    writer.create_dataset(
        "layout/labels", ("stage", "noun", "frame", "y", "x"), dtype="int16", chunk_dims=("stage",)
    )
    writer.create_dataset("layout/counts", ("stage", "noun", "frame"), dtype="int16", chunk_dims=("stage",))


def _step_cache(
    pipeline: Any, options: NuminaOptions, run: str, num_steps: int, first: int, always: tuple[int, ...] = ()
) -> Any:
    """The chosen step cache from step `first` when the options cache this run ("walkthrough" or
    "guided"), else a context that yields None."""
    if not getattr(options, f"cache_{run}"):
        return contextlib.nullcontext()
    rule = {"first": first, "always": always}
    if options.cache_method == "first_block":
        return FirstBlockStepCache(pipeline.transformer, num_steps, threshold=options.cache_threshold, **rule)
    return StepCache(pipeline.transformer, num_steps, tau=options.cache_threshold, **rule)


def generate_video(
    pipeline: Any, tokens: PromptTokens, settings: GenerationSettings, options: NuminaOptions | None
) -> tuple[np.ndarray, NuminaResult | None]:
    """One video for an evaluation: the plain pipeline's (`options` None, the baseline) or NUMINA's,
    whose phase 1 stays in memory (no store is written)."""
    if options is None:
        return plain_generation(pipeline, tokens.prompt, settings), None
    result = run_numina(pipeline, tokens, settings, options, None)
    return result.video, result


def correct_to_targets(
    layout: Layout, targets: dict[str, int], options: NuminaOptions
) -> tuple[Layout, list[Edit]]:
    """The layout corrected to `targets` by the options' rule (per frame, or whole tracks), with a
    warning where a copy covered an instance so that the count is still wrong."""
    correct = correct_tracked if options.track_instances else correct_layout
    corrected, edits = correct(layout, targets, options.cost_weights, options.stride, options.disc_radius)
    warn_unreached_targets(corrected, targets)
    return corrected, edits


def modulated_generation(
    pipeline: Any,
    tokens: PromptTokens,
    settings: GenerationSettings,
    options: NuminaOptions,
    corrected: Layout,
    output_type: str = "np",
) -> tuple[str, Any, list[int]]:
    """The final run: the video generated again from the same noise with the cross-attention biased
    toward `corrected` (path "guided"), or plainly when there is nothing to bias ("regenerated"), and
    the steps its cache skipped."""
    columns = modulated_positions(tokens, options)
    plan = ModulationPlan.from_layout(
        corrected.to_dict(),
        columns,
        schedule_centre(settings.steps, options.follow_steps),
        options.modulation_scale,
    )
    modulation_ends = next(
        (step for step in range(settings.steps) if not is_active(step, plan.centre)), settings.steps
    )
    with (
        CrossAttentionModulation(pipeline.transformer, plan, prompt_length=tokens.n_tokens),
        _step_cache(pipeline, options, "guided", settings.steps, modulation_ends) as hook,
    ):
        step_end = hook.step_end if hook else None
        video = plain_generation(pipeline, tokens.prompt, settings, output_type, step_end)
    return ("regenerated" if plan.empty else "guided"), video, list(hook.skipped) if hook else []


@dataclass
class LayoutRun:
    """NUMINA's second half from a given layout: the layout corrected to the targets, its edits, and
    the video generated toward it."""

    video: Any
    path: str  # "guided", "regenerated" (nothing to bias), or "accepted" (the oracle's right baseline)
    layout: Layout
    corrected: Layout
    edits: list[Edit]
    cached_steps: list[int]


def generate_with_layout(
    pipeline: Any,
    tokens: PromptTokens,
    settings: GenerationSettings,
    options: NuminaOptions,
    layout: Layout,
    output_type: str = "np",
) -> LayoutRun:
    """Correct `layout` to `tokens.targets` and generate toward it: what `run_numina` does after its
    walk-through, from a layout found some other way (e.g. the true instances of a video, the control
    that measures correction and modulation apart from the layout: `numina.evaluation.controls`).
    `layout` is on the token grid of `settings` (latent frames x H x W tokens), one map per target."""
    if not tokens.targets:
        raise ValueError(f"no targets for {tokens.prompt!r}: NUMINA needs {{noun: count}} to correct.")
    check_correction(tokens.targets, stride=options.stride, disc_radius=options.disc_radius)
    geometry = Geometry.from_pipeline(pipeline, settings.num_frames, settings.height, settings.width)
    missing = sorted(set(tokens.targets) - set(layout.nouns))
    if missing or layout.shape != (geometry.frames, geometry.height, geometry.width):
        raise ValueError(
            f"the layout has nouns {list(layout.nouns)} on a {layout.shape} grid; this run needs "
            f"{sorted(tokens.targets)} on {(geometry.frames, geometry.height, geometry.width)} "
            "(latent frames, token rows, token columns)"
        )
    corrected, edits = correct_to_targets(layout, tokens.targets, options)
    path, video, skipped = modulated_generation(pipeline, tokens, settings, options, corrected, output_type)
    return LayoutRun(video, path, layout, corrected, edits, skipped)


def run_numina(
    pipeline: Any,
    tokens: PromptTokens,
    settings: GenerationSettings,
    options: NuminaOptions,
    store_path: str | Path | None,
    attrs: dict[str, Any] | None = None,
    output_type: str = "np",
) -> NuminaResult:
    """Generate `tokens.prompt` with NUMINA; the walk-through's capture and the layout go to `store_path`
    (None: nothing is written, phase 1 reads the capture from memory as always)."""
    if not tokens.targets:
        raise ValueError(f"no targets for {tokens.prompt!r}: NUMINA needs {{noun: count}} to correct.")
    check_correction(tokens.targets, stride=options.stride, disc_radius=options.disc_radius)
    geometry = Geometry.from_pipeline(pipeline, settings.num_frames, settings.height, settings.width)
    spec, step, reference_layer = method_spec(
        geometry, tokens, settings, options, pipeline.transformer.device
    )
    schedule = options_schedule(settings, options)
    check_same_noise_level(pipeline.scheduler, schedule, settings)
    # Only a walk-through that is the final run's own beginning can go on to be the video.
    may_accept = options.early_accept and schedule.is_final_run(settings)
    nouns = list(tokens.targets)
    memory = MemoryStore(spec, geometry)
    found: dict[str, Any] = {}
    timings: dict[str, float] = {}

    def at_step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if cache:  # the step cache of the `with` below (first_block: switched off for the reference step)
            cache.step_end(pipe, index, timestep, tensors)
        if index == step:
            started = time.perf_counter()
            data = Phase1Data.from_store(memory, step, reference_layer)
            found["head"], found["cross_heads"], found["layout"] = identify_and_layout(
                data, tokens, geometry, options, reference_layer
            )
            found["right"] = counts_are_right(found["layout"], tokens.targets)
            timings["layout"] = time.perf_counter() - started
            if not (may_accept and found["right"]):
                interrupt(pipe)  # the walk-through ends here
        return {}

    # The store is complete only when the whole run finished (the writer's context); else `.partial`.
    if store_path is None:  # nothing to record: no attributes (code_version runs git) and no file
        store = contextlib.nullcontext()
    else:
        root = run_attributes(tokens, settings, {"numina_options": options.to_dict(), **(attrs or {})})
        store = open_capture_store(store_path, spec, geometry, root)
    with store as writer:
        if writer is not None:
            _declare_layout(writer, nouns, geometry)
        started = time.perf_counter()
        sink = memory if writer is None else TeeSink(memory, writer)
        with (
            AttentionCapture(pipeline.transformer, spec, geometry, sink),
            _step_cache(pipeline, options, "walkthrough", schedule.settings.steps, WARMUP, (step,)) as cache,
        ):
            latents = pipeline(
                **schedule.settings.call(tokens.prompt),
                output_type="latent",
                callback_on_step_end=at_step_end,
            ).frames
        timings["walkthrough"] = time.perf_counter() - started - timings.get("layout", 0.0)
        captured_timesteps = pipeline.scheduler.timesteps.float().tolist()  # the walk-through's schedule
        cached = {"walkthrough": list(cache.skipped) if cache else []}
        memory.clear()
        layout = found["layout"]
        started = time.perf_counter()
        corrected, edits = correct_to_targets(layout, tokens.targets, options)
        timings["correct"] = time.perf_counter() - started
        started = time.perf_counter()
        if may_accept and found["right"]:
            check_generated(latents, tokens.prompt, settings.seed)
            path, video = "accepted", decode_latents(pipeline, latents, output_type)
        else:
            path, video, cached["guided"] = modulated_generation(
                pipeline, tokens, settings, options, corrected, output_type
            )
        timings["final"] = time.perf_counter() - started
        if writer is not None:
            for stage, state in zip(STAGES, (layout, corrected), strict=True):
                writer.write(
                    "layout/labels",
                    {"stage": stage},
                    np.stack([state[noun] for noun in nouns]).astype(np.int16),
                )
                writer.write(
                    "layout/counts",
                    {"stage": stage},
                    np.stack([state.counts(noun) for noun in nouns]).astype(np.int16),
                )
            writer.set_attrs(
                steps=list(range(schedule.settings.steps)),  # the captured walk-through's steps
                timesteps=captured_timesteps,
                walkthrough_settings=schedule.settings.to_dict(),
                numina_path=path,
                head_choice=found["head"].to_dict(),
                cross_heads=found["cross_heads"],
                edits=[asdict(edit) for edit in edits],
                timings=timings,
                cached_steps=cached,
            )
    return NuminaResult(
        video,
        path,
        tokens.targets,
        found["head"],
        found["cross_heads"],
        layout,
        corrected,
        edits,
        timings,
        cached,
    )
