"""Phase 1 refuses NaN/inf where a decision would read it, naming the block, head, frame and noun."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from numina.method.identify import Phase1Data
from numina.method.phase1 import identify_and_layout
from numina.method.presets import preset
from numina.models import Geometry
from numina.models.tokenizer import build_tiny_tokenizer
from numina.prompts import parse_prompt

H, W, FRAMES, HEADS = 16, 16, 2, 2
BOXES = [(1, 6, 1, 6), (1, 6, 10, 15), (10, 15, 1, 6)]  # three planted instances


@pytest.fixture(scope="module")
def tokens():
    return parse_prompt("three cats on a sofa", build_tiny_tokenizer())


def _data(tokens) -> Phase1Data:
    """Three planted blobs in every frame and head; head 1 scores best; the cats' map is 1 on the blobs."""
    components = np.zeros((1, HEADS, FRAMES, H, W, 3), dtype=np.float32)
    cross_map = np.zeros((H, W), dtype=np.float32)
    for (y0, y1, x0, x1), vector in zip(BOXES, np.eye(3), strict=True):
        components[..., y0:y1, x0:x1, :] = vector
        cross_map[y0:y1, x0:x1] = 1.0
    scores = np.zeros((1, HEADS, FRAMES, 4), dtype=np.float32)
    scores[0, 1] = 1.0
    captured = tuple(sorted({0, *tokens.noun_spans("cats")[0]}))
    cross = np.broadcast_to(cross_map, (HEADS, len(captured), FRAMES, H, W)).copy()
    return Phase1Data((0,), scores, components.reshape(1, HEADS, FRAMES, H * W, 3), captured, cross)


def _geometry() -> Geometry:
    return Geometry(FRAMES, H, W, layers=1, heads=HEADS, head_dim=8, num_frames=5, pixel_height=128,
                    pixel_width=128)  # fmt: skip


def test_finite_data_gives_the_planted_count(tokens) -> None:
    head, _, layout = identify_and_layout(_data(tokens), tokens, _geometry(), preset("official"), 0)
    np.testing.assert_array_equal(head.head, [1, 1])
    np.testing.assert_array_equal(layout.counts("cats"), [3, 3])


# (array, index into it, value, words the message must hold)
BAD = [
    ("scores", (0, 0, 1, 3), np.nan, ["score S", "block 0, head 0, frame 1"]),
    ("scores", (0, 1, 0, 0), np.inf, ["score S1", "block 0, head 1, frame 0"]),
    ("components", (0, 1, 1, 20, 2), np.nan, ["components", "block 0, head 1, frame 1"]),
    ("components", (0, 0, 0, 0, 0), -np.inf, ["components", "block 0, head 0, frame 0"]),
    ("cross", (1, 1, 0, 3, 3), np.nan, ["noun 'cats'", "head 1, frame 0", "y=3, x=3"]),
    ("cross", (0, 2, 1, 12, 12), np.inf, ["noun 'cats'", "head 0, frame 1", "y=12, x=12"]),
]


@pytest.mark.parametrize("cross_heads", ["mean", "concentration", "peak"])
@pytest.mark.parametrize(("array", "index", "value", "words"), BAD)
def test_nan_or_inf_where_phase_1_decides_is_refused_by_name(
    tokens, cross_heads: str, array: str, index: tuple[int, ...], value: float, words: list[str]
) -> None:
    data = _data(tokens)
    getattr(data, array)[index] = value
    options = preset("official", cross_heads=cross_heads)
    with pytest.raises(ValueError, match="rerun the walk-through") as error:
        identify_and_layout(data, tokens, _geometry(), options, 0)
    for word in [*words, str(value)]:
        assert word in str(error.value)


def test_non_finite_score_components_are_refused_before_rescoring(tokens) -> None:
    """The release's estimators keep the components that scored; other weights rescore from them, so a
    NaN there would reach the head choice although the stored scores are finite."""
    data = _data(tokens)
    data = replace(data, score_components=data.components.copy())
    data.score_components[0, 1, 0, 7, 1] = np.nan
    options = preset("official", score_weights=(0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"score components are nan at block 0, head 1, frame 0"):
        identify_and_layout(data, tokens, _geometry(), options, 0)


def test_a_non_finite_map_of_a_token_no_decision_reads_is_left_alone(tokens) -> None:
    data = _data(tokens)
    data.cross[:, data.tokens.index(0)] = np.nan  # the numeral "three": captured for figures only
    _, _, layout = identify_and_layout(data, tokens, _geometry(), preset("official"), 0)
    np.testing.assert_array_equal(layout.counts("cats"), [3, 3])
