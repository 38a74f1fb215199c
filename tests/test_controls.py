"""G4's controls: NUMINA's second half from a given layout, the layout of a video's true instances, the
oracle and the random head, and both as CountBench methods."""

from __future__ import annotations

import numpy as np
import pytest

from numina.evaluation.controls import control_video, oracle_generation, random_head_options
from numina.evaluation.counters import ExactColourCounter
from numina.evaluation.true_instances import true_layout
from numina.method.generation import generate_with_layout, run_numina
from numina.method.layout import Layout
from numina.method.presets import preset
from numina.models import Geometry
from numina.prompts import parse_prompt
from numina.sampling import GenerationSettings, plain_generation

SETTINGS = GenerationSettings(num_frames=9, height=64, width=64, steps=6, guidance=5.0, seed=3)
PROMPT = "three cats and two dogs on a sofa"
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def _geometry(pipe) -> Geometry:
    return Geometry.from_pipeline(pipe, SETTINGS.num_frames, SETTINGS.height, SETTINGS.width)


def _counting_calls(pipe, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = pipe.__class__.__call__
    monkeypatch.setattr(pipe.__class__, "__call__", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_a_given_layout_is_generated_toward_exactly_as_the_walkthroughs_own(tiny_pipe) -> None:
    """The seam: run_numina's second half, handed run_numina's own walk-through layout, is the same
    correction and the same video to the bit."""
    tokens = parse_prompt(PROMPT, tiny_pipe.tokenizer)
    options = preset("official")
    numina = run_numina(tiny_pipe, tokens, SETTINGS, options, None)
    again = generate_with_layout(tiny_pipe, tokens, SETTINGS, options, numina.layout)
    assert again.path == numina.path == "guided"
    np.testing.assert_array_equal(again.video, numina.video)
    assert again.edits == numina.edits
    for noun in tokens.targets:
        np.testing.assert_array_equal(again.corrected[noun], numina.corrected[noun])


def test_a_layout_of_other_nouns_or_another_grid_is_refused_before_work(
    tiny_pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = parse_prompt(PROMPT, tiny_pipe.tokenizer)
    geometry = _geometry(tiny_pipe)
    shape = (geometry.frames, geometry.height, geometry.width)
    calls = _counting_calls(tiny_pipe, monkeypatch)
    for layout in (
        Layout({"cats": np.zeros(shape, dtype=np.int32)}),  # no map for "dogs"
        Layout({noun: np.zeros((1, 4, 4), dtype=np.int32) for noun in tokens.targets}),
    ):
        with pytest.raises(ValueError, match=r"this run needs \['cats', 'dogs'\] on \(3, 4, 4\)"):
            generate_with_layout(tiny_pipe, tokens, SETTINGS, preset("official"), layout)
    assert calls == []


def _video_of_squares(geometry: Geometry) -> np.ndarray:
    """A white video whose frames 0 and 8 (the sources of latent frames 0 and 2) show hand-placed
    squares; the other frames are blank, which the layout must not read."""
    video = np.ones((geometry.num_frames, geometry.pixel_height, geometry.pixel_width, 3), dtype=np.float32)
    video[0, 0:16, 0:16] = RED  # one red square of 1 x 1 tokens (16 px tokens)
    video[0, 32:64, 16:48] = BLUE  # one blue square of 2 x 2 tokens
    video[8, 0:16, 48:64] = RED  # two red squares, one whole token each
    video[8, 48:64, 0:16] = RED
    video[8, 20:26, 20:26] = RED  # 36 px inside the token at row 1, column 1: under half of it
    return video


def test_the_true_layout_is_the_counters_instances_on_the_token_grid(tiny_pipe) -> None:
    geometry = _geometry(tiny_pipe)
    assert (geometry.frames, geometry.height, geometry.width) == (3, 4, 4)
    counter = ExactColourCounter({"cats": RED, "dogs": BLUE})
    layout = true_layout(_video_of_squares(geometry), counter, ["cats", "dogs"], geometry)
    assert layout["cats"].tolist() == [
        [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0]] * 4,
        # the counter finds 3 regions in raster order; the small one covers no token by half, so it
        # keeps the token it covers most (row 1, column 1) and the count stays the counter's
        [[0, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 0], [3, 0, 0, 0]],
    ]
    sources = _video_of_squares(geometry)[[0, 4, 8]]  # the last frame of each latent frame
    assert layout.counts("cats").tolist() == counter.count(sources, "cats").tolist() == [1, 0, 3]
    assert layout["dogs"][0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    assert layout.counts("dogs").tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match=r"is not this geometry's \(frames, height, width, 3\)"):
        true_layout(_video_of_squares(geometry)[:5], counter, ["cats"], geometry)


def test_the_oracle_keeps_a_right_baseline_and_corrects_a_wrong_one(
    tiny_pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A counter that takes every pixel (tolerance 1) sees one instance in every frame: with a target
    of one the baseline is the answer, from one generation; with zero the oracle removes it and the
    modulated run draws another video than the baseline."""
    counter = ExactColourCounter({"cats": RED}, tolerance=1.0)
    baseline = plain_generation(tiny_pipe, PROMPT, SETTINGS)
    calls = _counting_calls(tiny_pipe, monkeypatch)
    right = oracle_generation(
        tiny_pipe, parse_prompt(PROMPT, tiny_pipe.tokenizer, targets={"cats": 1}), SETTINGS,
        preset("official"), counter,
    )  # fmt: skip
    assert right.path == "accepted" and right.edits == [] and len(calls) == 1
    np.testing.assert_array_equal(right.video, baseline)
    assert right.layout.counts("cats").tolist() == [1, 1, 1]
    removed = oracle_generation(
        tiny_pipe, parse_prompt(PROMPT, tiny_pipe.tokenizer, targets={"cats": 0}), SETTINGS,
        preset("official"), counter,
    )  # fmt: skip
    assert removed.path == "guided" and len(calls) == 3
    assert (removed.layout["cats"] == 1).all() and (removed.corrected["cats"] == -1).all()
    assert [edit.kind for edit in removed.edits] == ["remove"] * 3
    assert np.abs(removed.video - baseline).max() > 1e-3


def test_a_random_head_is_drawn_from_the_videos_seed(tiny_pipe) -> None:
    options = preset("official")
    drawn = [random_head_options(options, 12, seed).fixed_head for seed in range(40)]
    assert drawn == [random_head_options(options, 12, seed).fixed_head for seed in range(40)]
    assert set(drawn) <= set(range(12)) and len(set(drawn)) >= 6
    assert random_head_options(options, 12, 0).head_rule == "fixed"
    tokens = parse_prompt(PROMPT, tiny_pipe.tokenizer)
    _, result = control_video("random_head", tiny_pipe, tokens, SETTINGS, options, None)
    heads = tiny_pipe.transformer.config.num_attention_heads
    expected = random_head_options(options, heads, SETTINGS.seed).fixed_head
    assert result.head.head.tolist() == [expected] * _geometry(tiny_pipe).frames


def test_the_oracle_needs_the_exact_counter_and_controls_are_named(tiny_pipe) -> None:
    tokens = parse_prompt(PROMPT, tiny_pipe.tokenizer)
    with pytest.raises(ValueError, match="use --counter exact"):
        control_video("oracle", tiny_pipe, tokens, SETTINGS, preset("official"), object())
    with pytest.raises(
        ValueError, match=r"unknown control 'orcale'; controls are \['oracle', 'random_head'\]"
    ):
        control_video("orcale", tiny_pipe, tokens, SETTINGS, preset("official"), None)
