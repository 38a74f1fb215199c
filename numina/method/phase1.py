"""Phase 1's glue: what a NUMINA run captures, where it reads it, and the head choice and layout from it.

    spec, step, layer = method_spec(geometry, tokens, settings, options)   # the walk-through's capture
    head, cross_heads, layout = identify_and_layout(                        # from what it captured
        Phase1Data.from_store(capture, step, layer), tokens, geometry, options, layer
    )

`run_numina` (numina.method.generation), `ablate_heads.py` and a notebook replaying a stored run all go
through these, so the reference step and block, the captured token positions and whether the captured
scores can be used (`Phase1Data.scored`) are decided in one place. May import numpy, numina.capture,
numina.method (identify, layout, presets, schedule), numina.metrics, numina.models, numina.prompts and
numina.sampling.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from numina.capture import numina_spec
from numina.capture.spec import CaptureSpec, release_reference_layer
from numina.method.identify import HeadChoice, Phase1Data, check_finite, choose_head, noun_cross_maps
from numina.method.layout import Layout, build_layout
from numina.method.presets import NuminaOptions
from numina.method.schedule import options_schedule, reference_step_of
from numina.models import Geometry
from numina.prompts import PromptTokens
from numina.sampling import GenerationSettings


def noun_positions(tokens: PromptTokens, all_occurrences: bool = False) -> dict[str, list[int]]:
    """Each target noun's token positions: its first occurrence (the release) or every occurrence."""
    positions = {}
    for noun in tokens.targets:
        spans = tokens.noun_spans(noun)
        if not spans:
            raise ValueError(
                f"noun {noun!r} has no token positions in {tokens.prompt!r} (cut off by truncation?)"
            )
        positions[noun] = sorted({p for span in spans for p in span}) if all_occurrences else spans[0]
    return positions


def modulated_positions(tokens: PromptTokens, options: NuminaOptions) -> dict[str, list[int]]:
    """Each target's token columns the guided run biases: its noun's (`noun_positions`, the release);
    with `modulated_tokens="phrase"` also the words from its numeral up to the noun ("three red
    circles"), which carry what the noun's own token may not (a colour); with "prompt" every token of
    the prompt, EOS included (a bidirectional text encoder may spread an object over all of them)."""
    positions = noun_positions(tokens, options.all_occurrences)
    if options.modulated_tokens == "prompt":
        return {noun: list(range(tokens.n_tokens)) for noun in positions}
    if options.modulated_tokens == "phrase":
        for noun in positions:
            numeral = tokens.numeral_for(noun)
            if numeral is not None and numeral.noun_word is not None:
                phrase = range(numeral.words[0], numeral.noun_word + 1)
                words = {p for i in phrase for p in tokens.words[i].positions}
                positions[noun] = sorted({*positions[noun], *words})
    return positions


def captured_positions(tokens: PromptTokens, all_occurrences: bool = False) -> tuple[int, ...]:
    """The token positions a walk-through captures: the targets' nouns and the numerals counting them."""
    nouns = noun_positions(tokens, all_occurrences)
    numerals = [p for noun in tokens.targets if (n := tokens.numeral_for(noun)) for p in n.positions]
    return tuple(sorted({*numerals, *(p for span in nouns.values() for p in span)}))


def reference_of(options: NuminaOptions, geometry: Geometry, num_steps: int) -> tuple[int, int]:
    """(step of a `num_steps` final run, block) that `options` read phase 1 at: `reference_step` and
    `reference_layer`, else the release's step 20 of 50 and middle block."""
    layer = release_reference_layer(geometry) if options.reference_layer is None else options.reference_layer
    return reference_step_of(num_steps, options.reference_step), layer


def method_spec(
    geometry: Geometry,
    tokens: PromptTokens,
    settings: GenerationSettings,
    options: NuminaOptions,
    device: Any = None,
) -> tuple[CaptureSpec, int, int]:
    """The walk-through's capture (resolved), its reference step (a step of the walk-through's own
    schedule, `options_schedule`) and reference block.

    The reference block gives the nouns' cross maps and, except under `per_layer` (which captures every
    block's self-attention), the self-attention head. The run's seed seeds the release's head-score
    estimator, which the release leaves unseeded.
    """
    schedule = options_schedule(settings, options)
    step, num_steps = schedule.reference_step, schedule.settings.steps  # the walk-through's own step
    _, layer = reference_of(options, geometry, settings.steps)
    captured = captured_positions(tokens, options.all_occurrences)
    spec = numina_spec(geometry, captured, tokens.n_tokens, num_steps, step, layer)
    layers = tuple(range(geometry.layers)) if options.head_rule == "per_layer" else (layer,)
    self_attention = replace(
        spec.self_attention,
        layers=layers,
        score_variant=options.score_variant,
        components=options.layout.components,
        estimator=options.estimator,
        score_seed=settings.seed,
    )
    spec = replace(spec, self_attention=self_attention)
    return spec.resolved(geometry, num_steps, device), step, layer


def identify_and_layout(
    data: Phase1Data, tokens: PromptTokens, geometry: Geometry, options: NuminaOptions, reference_layer: int
) -> tuple[HeadChoice, dict[str, int | None], Layout]:
    """Phase 1 from captured data: head per frame, the nouns' cross maps, the layout. Data with a NaN
    or inf where a decision reads it is refused first (`check_finite`)."""
    positions = noun_positions(tokens, options.all_occurrences)
    check_finite(data, positions)
    data = data.scored(geometry.height, geometry.width, options.score_variant, tuple(options.score_weights))
    layer = None if options.head_rule == "per_layer" else reference_layer
    head = choose_head(data, options.head_rule, layer, options.fixed_head)
    maps, cross_heads = noun_cross_maps(data, positions, options.cross_heads, options.concentration_measure)
    layout = build_layout(head.components(data), maps, geometry.height, geometry.width, options.layout)
    return head, cross_heads, layout


def counts_are_right(layout: Layout, targets: dict[str, int]) -> bool:
    return all(bool((layout.counts(noun) == target).all()) for noun, target in targets.items())
