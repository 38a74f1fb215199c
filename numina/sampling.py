"""Running a Wan pipeline: the sampler's settings, a plain generation, and one with attention capture
kept in memory or written to an HDF5 store.

`GenerationSettings` is the sampler call (size, steps, guidance, seed); `plain_generation` is the
baseline video, checked for NaN/inf. `run_with_capture` (TransformerLens' `run_with_cache` in
spirit) returns the video and the capture in memory, read like a stored run. `capture_generation`
runs the pipeline with an `AttentionCapture` whose sink is the store writer, records what the store
needs to stand alone (prompt, token table, geometry, steps and timesteps, model, config, code
version, seed), and leaves a complete store only when the run finished (an interrupted run leaves
`<store>.partial`, which readers refuse). Used by the experiments and by NUMINA's generation loop.
May import numpy, torch, numina.capture, numina.checks, numina.models, numina.prompts and numina.version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from numina.capture import AttentionCapture, CaptureSpec, MemoryStore, open_capture_store
from numina.checks import check_int, check_real, record_fields
from numina.models import Geometry
from numina.prompts import PromptTokens
from numina.version import code_version


@dataclass(frozen=True)
class GenerationSettings:
    """The sampler call: video size, steps, guidance, seed (noise drawn on the CPU: same on any device)."""

    num_frames: int
    height: int
    width: int
    steps: int = 50
    guidance: float = 5.0
    seed: int = 0
    negative_prompt: str = ""
    fps: int = 16

    def __post_init__(self) -> None:
        for name in ("num_frames", "height", "width", "steps", "fps"):
            check_int(f"GenerationSettings.{name}", getattr(self, name), 1)
        check_int("GenerationSettings.seed", self.seed, 0)
        check_real("GenerationSettings.guidance", self.guidance, 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerationSettings:
        """The settings `to_dict` wrote (a stored run's `settings` attribute), every field present."""
        return cls(**record_fields(cls, values, "generation settings"))

    def call(self, prompt: str) -> dict[str, Any]:
        """Keyword arguments of the Wan pipeline call for `prompt`, with a fresh generator at the seed
        (the same noise on every call)."""
        return {
            "prompt": prompt,
            "negative_prompt": self.negative_prompt,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "generator": torch.Generator("cpu").manual_seed(self.seed),
        }


def check_generated(output: Any, prompt: str, seed: int) -> None:
    """Refuse a generated video or latent with NaN/inf before it is written or counted: decoded, a NaN
    becomes a black frame that a counter scores as an honest count of 0."""
    values = output if isinstance(output, torch.Tensor) else torch.from_numpy(np.asarray(output))
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        raise FloatingPointError(
            f"the generation of {prompt!r} at seed {seed} holds {int((~finite).sum())} NaN/inf values of "
            f"{finite.numel()}: the sampler diverged. Nothing was written or counted; check --guidance, "
            "--flow-shift and --steps, or run the transformer in float32 (--dtype float32)."
        )


def plain_generation(
    pipeline: Any,
    prompt: str,
    settings: GenerationSettings,
    output_type: str = "np",
    step_end: Callable[..., dict[str, Any]] | None = None,
) -> Any:
    """The pipeline's own video for `prompt` with these settings and seed: NUMINA's baseline.
    `step_end` is passed as the pipeline's `callback_on_step_end` (e.g. a step cache's switch)."""
    video = pipeline(**settings.call(prompt), output_type=output_type, callback_on_step_end=step_end).frames[
        0
    ]
    check_generated(video, prompt, settings.seed)
    return video


def run_with_capture(
    pipeline: Any, prompt: str, spec: CaptureSpec, settings: GenerationSettings, output_type: str = "np"
) -> tuple[np.ndarray | torch.Tensor, MemoryStore]:
    """The pipeline's video for `prompt` and what `spec` captured during it, in memory:

        video, capture = run_with_capture(pipe, "three cats", spec, GenerationSettings(17, 128, 128, 20))
        capture["cross_attention/probs"].sel(step=8, branch="cond", layer=3).values

    The video is the plain generation's, to the bit (capturing changes nothing)."""
    geometry = Geometry.from_pipeline(pipeline, settings.num_frames, settings.height, settings.width)
    spec = spec.resolved(geometry, settings.steps, pipeline.transformer.device)
    capture = MemoryStore(spec, geometry, {"prompt": prompt, "settings": settings.to_dict()})
    with AttentionCapture(pipeline.transformer, spec, geometry, capture):
        video = plain_generation(pipeline, prompt, settings, output_type)
    return video, capture


def run_attributes(
    tokens: PromptTokens, settings: GenerationSettings, attrs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a stored run says about itself: prompt, token table, targets, settings, seed and code
    version, then `attrs` (e.g. the run's full config and model id)."""
    return {
        "prompt": tokens.prompt,
        "tokens": tokens.to_records(),
        "targets": tokens.targets,
        "settings": settings.to_dict(),
        "seed": settings.seed,
        "code_version": code_version(),
        **(attrs or {}),
    }


def capture_generation(
    pipeline: Any,
    tokens: PromptTokens,
    spec: CaptureSpec,
    settings: GenerationSettings,
    store_path: str | Path,
    attrs: dict[str, Any] | None = None,
    output_type: str = "np",
    overwrite: bool = False,
) -> np.ndarray | torch.Tensor:
    """Generate `tokens.prompt` with `spec` captured into a store at `store_path`; return the video.

    The video is (frames, height, width, 3) in [0, 1] for `output_type="np"`, or the final latents
    for "latent". `attrs` adds root attributes (e.g. the run's full config and model id). An existing
    store is replaced (once the new one is complete) only with `overwrite`.
    """
    geometry = Geometry.from_pipeline(pipeline, settings.num_frames, settings.height, settings.width)
    spec = spec.resolved(geometry, settings.steps, pipeline.transformer.device)
    root = run_attributes(tokens, settings, attrs)
    with open_capture_store(store_path, spec, geometry, root, overwrite=overwrite) as writer:
        with AttentionCapture(pipeline.transformer, spec, geometry, writer):
            output = pipeline(**settings.call(tokens.prompt), output_type=output_type)
        check_generated(output.frames[0], tokens.prompt, settings.seed)
        writer.set_attrs(
            steps=list(range(settings.steps)), timesteps=pipeline.scheduler.timesteps.float().tolist()
        )
    return output.frames[0]
