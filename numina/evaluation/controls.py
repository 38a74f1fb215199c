"""The controls that measure NUMINA apart from its layout (gate G4 of the counting model organism).

- `oracle`: the layout is the true instances of the baseline's video (`true_instances.true_layout`:
  what the walk-through's layout tries to find, since the walk-through is the baseline's first steps),
  corrected to the targets and followed by the modulated run as NUMINA does. It is what correction and
  modulation can do at best on a model: if the oracle does not count better than the baseline, no
  layout can make NUMINA help there.
- `random_head`: NUMINA whose self-attention head is one drawn at random from the reference block
  (seeded by the video's seed) instead of the best-scoring one: what the head choice is worth.

Both take every other option from the NUMINA options they are given (CountBench: `official` with
`--options`). May import numpy and numina (evaluation.counters, evaluation.true_instances, method,
models, prompts, sampling).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from numina.evaluation.counters import ExactColourCounter
from numina.evaluation.true_instances import true_layout
from numina.method.generation import LayoutRun, generate_video, generate_with_layout
from numina.method.phase1 import counts_are_right
from numina.method.presets import NuminaOptions
from numina.models import Geometry
from numina.prompts import PromptTokens
from numina.sampling import GenerationSettings, plain_generation

CONTROLS = ("oracle", "random_head")
CONTROL_PRESET = "official"  # the NUMINA options a control starts from


def random_head_options(options: NuminaOptions, heads: int, seed: int) -> NuminaOptions:
    """`options` with the self-attention head fixed to one of the reference block's `heads`, drawn by
    a generator seeded with the video's `seed` (the same video always gets the same head)."""
    head = int(np.random.default_rng(seed).integers(heads))
    return replace(options, head_rule="fixed", fixed_head=head)


def oracle_generation(
    pipeline: Any,
    tokens: PromptTokens,
    settings: GenerationSettings,
    options: NuminaOptions,
    counter: ExactColourCounter,
) -> LayoutRun:
    """The baseline video, the layout of its true instances (counted by `counter`), and NUMINA's
    correction and modulated run from that layout. With the count already right in every latent frame
    the baseline video is the answer (path "accepted": the run would regenerate it unchanged)."""
    baseline = plain_generation(pipeline, tokens.prompt, settings)
    geometry = Geometry.from_pipeline(pipeline, settings.num_frames, settings.height, settings.width)
    layout = true_layout(baseline, counter, tokens.targets, geometry)
    if counts_are_right(layout, tokens.targets):
        return LayoutRun(baseline, "accepted", layout, layout, [], [])
    return generate_with_layout(pipeline, tokens, settings, options, layout)


def control_video(
    control: str,
    pipeline: Any,
    tokens: PromptTokens,
    settings: GenerationSettings,
    options: NuminaOptions,
    counter: Any,
) -> tuple[np.ndarray, Any]:
    """The video of a control (one of `CONTROLS`) for an evaluation, and its run's record (with
    `path` and `edits`, as `generate_video`'s). The oracle needs the exact colour counter."""
    if control == "oracle":
        if not isinstance(counter, ExactColourCounter):
            raise ValueError(
                f"the oracle control reads the true instances with the exact colour counter, not "
                f"{type(counter).__name__}: use --counter exact (the built-in models' colours)"
            )
        run = oracle_generation(pipeline, tokens, settings, options, counter)
        return run.video, run
    if control == "random_head":
        heads = pipeline.transformer.config.num_attention_heads
        return generate_video(pipeline, tokens, settings, random_head_options(options, heads, settings.seed))
    raise ValueError(f"unknown control {control!r}; controls are {list(CONTROLS)}")
