"""The NUMINA loop on the tiny pipeline: what a run writes, and which path gives which video."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import numina.method.generation as generation
import numina.method.modulate as modulate
import numina.method.phase1 as phase1
from numina.capture import AttentionCapture, MemoryStore
from numina.method import segments
from numina.method.generation import NuminaResult, run_numina
from numina.method.identify import Phase1Data
from numina.method.layout import Layout, LayoutOptions
from numina.method.phase1 import identify_and_layout, method_spec
from numina.method.presets import PRESETS, NuminaOptions, preset
from numina.models import Geometry
from numina.prompts import parse_prompt
from numina.sampling import GenerationSettings
from numina.store import open_store

SETTINGS = GenerationSettings(num_frames=9, height=64, width=64, steps=6, guidance=5.0, seed=3)
PROMPT = "three cats and two dogs on a sofa"


@pytest.fixture(scope="module")
def tokens(tiny_pipe):
    return parse_prompt(PROMPT, tiny_pipe.tokenizer)


@pytest.fixture(scope="module")
def baseline(tiny_pipe) -> np.ndarray:
    """The plain pipeline's video with the same seed and settings."""
    return tiny_pipe(
        prompt=PROMPT,
        num_frames=SETTINGS.num_frames,
        height=SETTINGS.height,
        width=SETTINGS.width,
        num_inference_steps=SETTINGS.steps,
        guidance_scale=SETTINGS.guidance,
        generator=torch.Generator("cpu").manual_seed(SETTINGS.seed),
        output_type="np",
    ).frames[0]


@pytest.fixture(scope="module")
def official(tiny_pipe, tokens, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("numina") / "attention.h5"
    return run_numina(tiny_pipe, tokens, SETTINGS, preset("official"), path), path


def test_a_run_without_a_store_is_the_same_run_and_writes_nothing(
    official, tiny_pipe, tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored, _ = official
    monkeypatch.chdir(tmp_path)
    result = run_numina(tiny_pipe, tokens, SETTINGS, preset("official"), None)
    assert np.array_equal(result.video, stored.video) and result.path == stored.path
    for noun in tokens.targets:
        np.testing.assert_array_equal(result.layout[noun], stored.layout[noun])
        np.testing.assert_array_equal(result.corrected[noun], stored.corrected[noun])
    assert list(tmp_path.iterdir()) == []


def _right_layout(targets: dict[str, int], frames: int, size: int) -> Layout:
    """A layout whose every frame already holds the target count of every noun (1-position instances)."""
    labels = {}
    for noun, count in targets.items():
        label = np.zeros((frames, size, size), dtype=np.int32)
        for instance in range(count):
            label.reshape(frames, -1)[:, 2 * instance] = instance + 1
        labels[noun] = label
    return Layout(labels)


def test_a_numina_run_writes_layouts_counts_and_edits_into_the_store(official, tokens) -> None:
    result, path = official
    assert result.video.shape == (SETTINGS.num_frames, SETTINGS.height, SETTINGS.width, 3)
    assert result.path == "guided" and result.edits
    with open_store(path) as store:
        labels = store["layout/labels"]
        assert labels.dims == ("stage", "noun", "frame", "y", "x")
        assert list(labels.coords["noun"]) == ["cats", "dogs"]
        np.testing.assert_array_equal(
            labels.sel(stage="walkthrough", noun="cats").values, result.layout["cats"]
        )
        np.testing.assert_array_equal(
            labels.sel(stage="corrected", noun="dogs").values, result.corrected["dogs"]
        )
        counts = store["layout/counts"].sel(stage="walkthrough").values
        assert counts.tolist() == [result.counts()["cats"], result.counts()["dogs"]]
        assert store.attrs["numina_path"] == "guided"
        assert len(store.attrs["edits"]) == len(result.edits)
        assert store.attrs["numina_options"]["cross_heads"] == "mean"
        assert set(store.attrs["timings"]) == {"layout", "walkthrough", "correct", "final"}
        # the walk-through captured its reference step only: step 2 of 6 (20 of 50)
        spec, step, layer = method_spec(
            Geometry.from_dict(store.attrs["geometry"]), tokens, SETTINGS, preset("official")
        )
        assert step == 2 and store["self_attention/scores"].sel(step=2, branch="cond").written()


def test_the_segments_extraction_captures_the_components_it_reads(tiny_pipe, tokens) -> None:
    """The release reads 3 components; the segments extraction's walk-through keeps its 12."""
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    release, _, _ = method_spec(geometry, tokens, SETTINGS, preset("official"))
    options = replace(preset("official"), layout=LayoutOptions(extraction="segments"))
    segmented, _, _ = method_spec(geometry, tokens, SETTINGS, options)
    assert release.self_attention.components == 3
    assert segmented.self_attention.components == segments.COMPONENTS == 12


def test_presets_choose_their_estimator_and_the_release_scores_follow_the_runs_seed(
    tiny_pipe, tokens
) -> None:
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    chosen = {
        name: method_spec(geometry, tokens, replace(SETTINGS, steps=6, seed=11), preset(name))[
            0
        ].self_attention
        for name in PRESETS
    }
    assert {name: part.estimator for name, part in chosen.items()} == {
        "official": "release",
        "paper": "release",
        "improved": "converged",
    }
    assert (
        chosen["official"].score_seed == 11 and chosen["official"].seed == 0
    )  # randomized_svd(random_state=0)
    with pytest.raises(ValueError, match="estimator='exact' is not one of"):
        preset("official", estimator="exact")


def test_the_stored_run_replays_to_the_same_layout(official, tiny_pipe, tokens) -> None:
    """Phase 1 read back from the HDF5 file, with the options and settings the file itself records,
    gives the layout the run computed from memory."""
    result, path = official
    with open_store(path) as store:
        options = NuminaOptions.from_dict(store.attrs["numina_options"])
        settings = GenerationSettings.from_dict(store.attrs["settings"])
        geometry = Geometry.from_dict(store.attrs["geometry"])
        assert (options, settings) == (preset("official"), SETTINGS)
        _, step, layer = method_spec(geometry, tokens, settings, options)
        data = Phase1Data.from_store(store, step, layer)
    head, _, layout = identify_and_layout(data, tokens, geometry, options, layer)
    np.testing.assert_array_equal(head.head, result.head.head)
    # The release's head scores came from their own estimator's components, stored beside the layout's.
    assert data.score_components is not None and data.score_components.shape[-1] == 3
    rescored = data.rescored(geometry.height, geometry.width).scores
    np.testing.assert_allclose(rescored, data.scores, rtol=1e-5, atol=1e-7)
    for noun in layout.nouns:
        np.testing.assert_array_equal(layout[noun], result.layout[noun])


def test_modulation_toward_an_edited_layout_changes_the_video(official, baseline) -> None:
    result, _ = official
    assert np.abs(result.video - baseline).max() > 1e-3


@pytest.mark.parametrize("early_accept", [False, True])
def test_a_right_count_gives_exactly_the_baseline_video(
    tiny_pipe, tokens, baseline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, early_accept: bool
) -> None:
    """Nothing to edit: the release generates again without modulation, early accept finishes the
    walk-through's own latent; both are the plain pipeline's video to the bit."""
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    right = _right_layout(tokens.targets, geometry.frames, geometry.height)
    monkeypatch.setattr(phase1, "build_layout", lambda *args, **kwargs: right)
    calls = []
    original = tiny_pipe.__class__.__call__
    monkeypatch.setattr(tiny_pipe.__class__, "__call__", lambda *a, **k: calls.append(1) or original(*a, **k))
    result = run_numina(
        tiny_pipe, tokens, SETTINGS, preset("official", early_accept=early_accept), tmp_path / "a.h5"
    )
    assert result.path == ("accepted" if early_accept else "regenerated")
    assert not result.edits
    assert len(calls) == (1 if early_accept else 2)
    np.testing.assert_array_equal(result.video, baseline)


def test_option_records_round_trip_and_refuse_records_of_other_versions() -> None:
    options = preset("improved", score_weights=(0.5, 1.0, 0.0), layout=LayoutOptions(extraction="segments"))
    as_json = json.loads(json.dumps(options.to_dict()))  # lists for tuples, as a store's attributes
    assert NuminaOptions.from_dict(as_json) == options
    assert GenerationSettings.from_dict(json.loads(json.dumps(SETTINGS.to_dict()))) == SETTINGS
    older = {key: value for key, value in as_json.items() if key != "estimator"}
    with pytest.raises(ValueError, match=r"lacks \['estimator'\]; it was written by another version"):
        NuminaOptions.from_dict(older)  # today's default would not be what that run used
    with pytest.raises(ValueError, match=r"layout options: the record has unknown \['colour'\]"):
        NuminaOptions.from_dict({**as_json, "layout": {**as_json["layout"], "colour": 1}})
    with pytest.raises(ValueError, match=r"generation settings: the record lacks \['fps'\]"):
        GenerationSettings.from_dict({key: v for key, v in SETTINGS.to_dict().items() if key != "fps"})


def test_a_correction_that_cannot_reach_the_target_is_said(
    tiny_pipe, tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One instance spanning the whole frame: each added copy of it overwrites the frame, so the
    corrected layout keeps one instance where the target is more (the release's rule, made loud)."""
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    shape = (geometry.frames, geometry.height, geometry.width)
    spanning = Layout({noun: np.ones(shape, dtype=np.int32) for noun in tokens.targets})
    monkeypatch.setattr(phase1, "build_layout", lambda *args, **kwargs: spanning)
    with pytest.warns(UserWarning, match=r"still counts \[1, 1, 1\] in latent frame\(s\) \[0, 1, 2\], not 3"):
        result = run_numina(tiny_pipe, tokens, SETTINGS, preset("official"), tmp_path / "w.h5")
    assert result.counts("corrected")["cats"] == [1] * geometry.frames and result.edits


def test_options_change_the_choices_they_name(tiny_pipe, tokens, tmp_path: Path) -> None:
    paper = run_numina(tiny_pipe, tokens, SETTINGS, preset("paper"), tmp_path / "p.h5")
    assert all(isinstance(head, int) for head in paper.cross_heads.values())
    video = run_numina(
        tiny_pipe, tokens, SETTINGS, preset("official", head_rule="per_video"), tmp_path / "v.h5"
    )
    assert len(set(video.head.head.tolist())) == 1
    with pytest.raises(ValueError, match="unknown NUMINA option"):
        preset("official", early_acept=True)


def test_walkthrough_caching_skips_steps_but_never_the_reference_or_the_last(
    tiny_pipe, tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caching from step 0 with a threshold nothing reaches: every step the rule may skip is skipped.
    The count is right, so early accept runs the walk-through to the end (6 steps, reference step 2)."""
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    monkeypatch.setattr(
        phase1,
        "build_layout",
        lambda *a, **k: _right_layout(tokens.targets, geometry.frames, geometry.height),
    )
    monkeypatch.setattr(generation, "WARMUP", 0)
    options = preset("official", early_accept=True, cache_walkthrough=True, cache_threshold=1e9)
    cached = run_numina(tiny_pipe, tokens, SETTINGS, options, tmp_path / "c.h5")
    # steps 0 and 1 are computed to measure the rate, 2 is the reference step, 5 the last
    assert cached.path == "accepted" and cached.cached_steps["walkthrough"] == [3, 4]


def test_captured_scores_serve_only_their_own_variant_and_weights(official, tiny_pipe, tokens) -> None:
    _, path = official
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    _, step, layer = method_spec(geometry, tokens, SETTINGS, preset("official"))
    with open_store(path) as store:
        data = Phase1Data.from_store(store, step, layer)
    size = geometry.height, geometry.width
    assert data.score_variant == "official" and data.scored(*size) is data
    normalised = data.scored(*size, "normalised")
    assert normalised.score_variant == "normalised" and normalised.scored(*size, "normalised") is normalised
    np.testing.assert_array_equal(normalised.scores, data.rescored(*size, "normalised").scores)
    edges = data.scored(*size, "official", (0.0, 0.0, 1.0))
    np.testing.assert_allclose(edges.scores[..., 3], edges.scores[..., 2], rtol=1e-6)  # S = S3


def test_score_weights_rescore_the_heads(official, tiny_pipe, tokens) -> None:
    """With weights (0, 0, 1) the chosen head per frame is the one with the sharpest edges (S3)."""
    _, path = official
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    options = preset("official", score_weights=(0.0, 0.0, 1.0))
    _, step, layer = method_spec(geometry, tokens, SETTINGS, options)
    with open_store(path) as store:
        data = Phase1Data.from_store(store, step, layer)
    head, _, _ = identify_and_layout(data, tokens, geometry, options, layer)
    edges = data.rescored(geometry.height, geometry.width).scores[0, :, :, 2]  # (head, frame) S3
    np.testing.assert_array_equal(head.head, edges.argmax(axis=0))


FIRST_BLOCK = {"cache_method": "first_block", "cache_threshold": 1e9}  # diffusers' cache, skipping all it may
CAPTURED = (
    "self_attention/components",
    "self_attention/scores",
    "cross_attention/probs",
    "cross_attention/text_mass",
)


def _reference_capture(path: Path, step: int, layer: int) -> dict[str, np.ndarray]:
    """What a stored walk-through captured at its reference step and block, conditional branch."""
    with open_store(path) as store:
        return {name: store[name].sel(step=step, branch="cond", layer=layer).values for name in CAPTURED}


def _transformer_inputs(tiny_pipe, run) -> tuple[NuminaResult, list[dict]]:
    """`run()`'s result and the keyword arguments of every transformer call it made, in order."""
    calls = []

    def keep(module, args, kwargs) -> None:
        calls.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})

    handle = tiny_pipe.transformer.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        return run(), calls
    finally:
        handle.remove()


def test_first_block_cache_after_the_reference_step_leaves_its_capture_as_uncached(
    official, tiny_pipe, tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """diffusers' cache from step 3 in a walk-through that runs to the end (right count, early accept):
    step 3 is computed afresh, step 4 skipped; the reference step's maps are the uncached run's."""
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    right = _right_layout(tokens.targets, geometry.frames, geometry.height)
    monkeypatch.setattr(phase1, "build_layout", lambda *a, **k: right)
    monkeypatch.setattr(generation, "WARMUP", 3)
    options = preset("official", early_accept=True, cache_walkthrough=True, **FIRST_BLOCK)
    cached = run_numina(tiny_pipe, tokens, SETTINGS, options, tmp_path / "c.h5")
    assert cached.path == "accepted" and cached.cached_steps["walkthrough"] == [4]
    _, step, layer = method_spec(geometry, tokens, SETTINGS, options)
    plain = _reference_capture(official[1], step, layer)
    for name, values in _reference_capture(tmp_path / "c.h5", step, layer).items():
        np.testing.assert_array_equal(values, plain[name], err_msg=name)


def test_first_block_cache_is_off_on_the_walkthroughs_reference_step(
    tiny_pipe, tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """diffusers' cache from step 0 skips step 1, yet the reference step 2 runs every block: its capture
    is that of an uncached transformer call on the same inputs, to the bit."""
    monkeypatch.setattr(generation, "WARMUP", 0)
    options = preset("official", cache_walkthrough=True, **FIRST_BLOCK)
    result, calls = _transformer_inputs(
        tiny_pipe, lambda: run_numina(tiny_pipe, tokens, SETTINGS, options, tmp_path / "c.h5")
    )
    assert result.cached_steps["walkthrough"] == [1]
    geometry = Geometry.from_pipeline(tiny_pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)
    spec, step, layer = method_spec(geometry, tokens, SETTINGS, options)
    memory, transformer = MemoryStore(spec, geometry), tiny_pipe.transformer
    with (
        torch.no_grad(),
        AttentionCapture(transformer, spec, geometry, memory),
        transformer.cache_context("cond", step_index=step),
    ):
        transformer(**calls[2 * step])  # the reference step's conditional call (cond, uncond per step)
    for name, values in _reference_capture(tmp_path / "c.h5", step, layer).items():
        expected = memory[name].sel(step=step, branch="cond", layer=layer).values
        np.testing.assert_array_equal(values, expected, err_msg=name)


@pytest.mark.slow
def test_first_block_cache_leaves_the_guided_runs_modulated_steps_unchanged(
    tiny_pipe, tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Modulation on steps 0-2 of 6 (delta made a step function): the guided run's latents up to step 3
    are the uncached run's to the bit; diffusers' cache is on from step 3 (computed afresh), skips 4."""
    monkeypatch.setattr(modulate, "delta", lambda step, centre=25.0: 1.75 if step < 3 else 0.25)

    def guided_latents(name: str, **options) -> tuple[NuminaResult, list[torch.Tensor]]:
        result, calls = _transformer_inputs(
            tiny_pipe,
            partial(run_numina, tiny_pipe, tokens, SETTINGS, preset("official", **options), tmp_path / name),
        )
        return result, [call["hidden_states"] for call in calls[-2 * SETTINGS.steps :: 2]]

    plain, plain_latents = guided_latents("p.h5")
    cached, cached_latents = guided_latents("c.h5", cache_guided=True, **FIRST_BLOCK)
    assert plain.path == cached.path == "guided" and cached.cached_steps == {"walkthrough": [], "guided": [4]}
    for step in range(4):
        torch.testing.assert_close(cached_latents[step], plain_latents[step], rtol=0, atol=0)
    assert not torch.equal(cached_latents[5], plain_latents[5])  # step 4 reused the cache


def test_phrase_modulation_biases_the_numeral_and_adjectives_too(official, tiny_pipe, tokens) -> None:
    from numina.method.generation import generate_with_layout
    from numina.method.phase1 import modulated_positions
    from numina.models import load_tokenizer, resolve_model

    words = parse_prompt(
        "against a white backdrop, two purple crosses and one cyan circle sinking down",
        load_tokenizer(resolve_model("countworld2")),
    )  # one token per word; the comma is position 4
    assert modulated_positions(words, preset("official")) == {"crosses": [7], "circle": [11]}
    phrase = preset("official", modulated_tokens="phrase")
    assert modulated_positions(words, phrase) == {"crosses": [5, 6, 7], "circle": [9, 10, 11]}
    every = modulated_positions(words, preset("official", modulated_tokens="prompt"))
    assert every == {"crosses": list(range(15)), "circle": list(range(15))}  # 13 words, the comma and EOS
    result, _ = official
    by_noun = generate_with_layout(tiny_pipe, tokens, SETTINGS, preset("official"), result.layout)
    by_phrase = generate_with_layout(tiny_pipe, tokens, SETTINGS, phrase, result.layout)
    assert by_phrase.edits == by_noun.edits
    assert np.abs(by_phrase.video - by_noun.video).max() > 1e-3
