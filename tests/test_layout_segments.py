"""numina.method.segments (`LayoutOptions(extraction="segments")`) on planted and hand-built frames."""

from __future__ import annotations

import numpy as np
import pytest

from numina.evaluation.planted import EXTRACTIONS, CaseSpec, generate_case, match_frame
from numina.method.layout import LayoutOptions, build_layout
from numina.method.presets import PRESETS

SEGMENTS = LayoutOptions(extraction="segments")


def _exact(spec: CaseSpec) -> tuple[bool, int]:
    case = generate_case(spec)
    match = match_frame(case.truth[0], EXTRACTIONS["segments"](case)[0])
    return match.exact, match.count


def test_three_medium_objects_are_found_exactly() -> None:
    assert _exact(CaseSpec(24, 24, 3, radius=(2, 3), difficulty="medium", noun_map="diffuse", seed=1)) == (
        True,
        3,
    )


def test_an_adjacent_pair_one_token_apart_is_split() -> None:
    spec = CaseSpec(24, 24, 2, radius=(2, 3), adjacent_pairs=1, difficulty="medium", seed=2)
    assert _exact(spec) == (True, 2)


def test_other_nouns_objects_are_left_out() -> None:
    assert _exact(CaseSpec(24, 24, 1, radius=(2, 3), others=2, difficulty="easy", seed=3)) == (True, 1)


def test_an_absent_noun_gives_no_instance() -> None:
    # Other nouns' objects in the self-attention map, a flat (or merely noisy) noun map: nothing counts,
    # where the release's focus mask takes the whole frame and counts background clusters.
    case = generate_case(CaseSpec(24, 24, 0, radius=(2, 3), others=2, difficulty="easy", seed=4))
    components = np.random.default_rng(0).standard_normal((1, 24 * 24, 6))
    noisy = np.exp(0.5 * np.random.default_rng(1).standard_normal((1, 24, 24)))
    for components_, cross in ((components, np.full((1, 24, 24), 0.2)), (components, noisy)):
        assert build_layout(components_, {"cat": cross}, 24, 24, SEGMENTS).counts("cat").tolist() == [0]
    assert EXTRACTIONS["segments"](case).max() == 0


def test_a_map_without_structure_gives_one_segment_and_no_instance() -> None:
    blob = np.full((2, 8, 8), 0.01)
    blob[:, 2:5, 2:5] = 1.0
    layout = build_layout(np.zeros((2, 64, 3)), {"cat": blob}, 8, 8, SEGMENTS)
    assert layout.counts("cat").tolist() == [0, 0]  # the one segment is the background itself


def test_every_noun_reads_the_same_segments() -> None:
    # Two blocks with their own attention rows (components), one noun on each block.
    labels = np.zeros((10, 10), dtype=int)
    labels[1:4, 1:4], labels[6:9, 5:9] = 1, 2
    components = np.stack([labels.ravel() == 1, labels.ravel() == 2], axis=1).astype(float)
    maps = {noun: np.where(labels == index, 1.0, 0.05)[None] for index, noun in ((1, "cat"), (2, "dog"))}
    layout = build_layout(components[None], maps, 10, 10, SEGMENTS)
    np.testing.assert_array_equal(layout["cat"][0], (labels == 1).astype(int))
    np.testing.assert_array_equal(layout["dog"][0], (labels == 2).astype(int))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extraction": "watershed"}, "not one of \\['release', 'segments'\\]"),
        ({"segment_threshold": 0.0}, "segment_threshold"),
        ({"contrast": 1.0}, "contrast"),
        ({"contrast": float("nan")}, "contrast"),
        ({"min_tokens": 0}, "min_tokens"),
    ],
)
def test_segment_options_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LayoutOptions(**changes)


def test_no_preset_uses_the_unmeasured_extraction() -> None:
    assert {name: options.layout.extraction for name, options in PRESETS.items()} == {
        name: "release" for name in PRESETS
    }


@pytest.mark.parametrize("extraction", ["release", "segments"])
def test_nan_in_the_maps_is_refused_not_counted(extraction: str) -> None:
    components = np.random.default_rng(0).normal(size=(1, 64, 3))
    noun = np.ones((1, 8, 8))
    noun[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        build_layout(components, {"cats": noun}, 8, 8, LayoutOptions(extraction=extraction))
