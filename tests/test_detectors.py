"""Detector counters (OWLv2, GroundingDINO): tiny random models via from_pretrained, planted scores."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from numina.evaluation.detectors import (
    GroundingDinoCounter,
    Owlv2Counter,
    nms,
)
from numina.testing import build_tiny_grounding_dino, build_tiny_owlv2


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread than on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def owl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_owlv2(tmp_path_factory.mktemp("owlv2") / "tiny-owlv2")


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("dino") / "tiny-grounding-dino")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Three float frames in [0, 1] that are exactly representable as uint8 (so both forms agree)."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 40, 56, 3))
    return (pixels / 255.0).astype(np.float32)


class ProcessorSpy:
    """Forwards everything to a processor and records the keyword arguments of each call."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.inner(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def box(cx: float, cy: float, size: float = 0.1) -> list[float]:
    return [cx, cy, size, size]


# ---- OWLv2


def test_owlv2_loads_and_counts_float_and_uint8(owl_folder: Path, frames: np.ndarray) -> None:
    counter = Owlv2Counter(owl_folder, threshold=0.0, device="cpu", batch_size=2)
    counts = counter.count(frames, "cat")
    assert counts.shape == (3,) and counts.dtype == np.int64
    assert (counts >= 1).all()  # threshold 0 keeps every box; NMS leaves at least one
    as_uint8 = (frames * 255.0).round().astype(np.uint8)
    np.testing.assert_array_equal(counter.count(as_uint8, "cat"), counts)
    counter.nms_iou = None  # no NMS: every patch's box counts
    patches = (64 // 16) ** 2
    np.testing.assert_array_equal(counter.count(frames, "cat"), [patches] * 3)


def test_owlv2_query_text_and_batching(owl_folder: Path, frames: np.ndarray) -> None:
    counter = Owlv2Counter(owl_folder, device="cpu", batch_size=2)
    counter.processor = spy = ProcessorSpy(counter.processor)
    assert counter.count(frames, "dog").shape == (3,)
    assert [len(call["images"]) for call in spy.calls] == [2, 1]
    assert spy.calls[0]["text"] == [["a photo of a dog"]] * 2
    assert spy.calls[1]["text"] == [["a photo of a dog"]]


def test_owlv2_threshold_and_nms_on_planted_scores(
    owl_folder: Path, frames: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput

    counter = Owlv2Counter(owl_folder, threshold=0.3, device="cpu", batch_size=8)
    queries = 16
    # frame 0: three separate boxes above 0.3, one at 0.29 (below), one overlapping the first (0.5, NMS)
    # frame 1: every box below the threshold; frame 2: the same as frame 0
    scores0 = [0.9, 0.31, 0.6, 0.29, 0.5] + [0.01] * (queries - 5)
    boxes0 = [box(0.2, 0.2), box(0.5, 0.5), box(0.8, 0.8), box(0.2, 0.8), box(0.21, 0.2)]
    boxes0 += [box(0.05 * i, 0.9) for i in range(queries - 5)]
    logits = torch.tensor([[logit(s) for s in scores0], [logit(0.2)] * queries, [logit(s) for s in scores0]])
    boxes = torch.tensor([boxes0, boxes0, boxes0])

    def fake_forward(**inputs: Any) -> Owlv2ObjectDetectionOutput:
        batch = len(inputs["pixel_values"])
        return Owlv2ObjectDetectionOutput(logits=logits[:batch, :, None], pred_boxes=boxes[:batch])

    monkeypatch.setattr(counter.model, "forward", fake_forward)
    np.testing.assert_array_equal(counter.count(frames, "cat"), [3, 0, 3])
    counter.nms_iou = None
    np.testing.assert_array_equal(counter.count(frames, "cat"), [4, 0, 4])
    counter.threshold = 0.95
    np.testing.assert_array_equal(counter.count(frames, "cat"), [0, 0, 0])


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 0]
    assert nms(boxes[:0], scores[:0], 0.3).tolist() == []


def test_owlv2_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="OWLv2 model folder .* does not exist. Pass a local folder"):
        Owlv2Counter(tmp_path / "missing")
    with pytest.raises(OSError, match="Could not load the OWLv2 model .* pass a local folder"):
        Owlv2Counter(tmp_path)  # exists but holds no model


# ---- GroundingDINO


def test_grounding_dino_loads_and_counts_float_and_uint8(dino_folder: Path, frames: np.ndarray) -> None:
    counter = GroundingDinoCounter(dino_folder, box_threshold=0.0, text_threshold=0.0, device="cpu")
    counts = counter.count(frames, "cat")
    assert counts.shape == (3,) and counts.dtype == np.int64
    as_uint8 = (frames * 255.0).round().astype(np.uint8)
    np.testing.assert_array_equal(counter.count(as_uint8, "cat"), counts)
    np.testing.assert_array_equal(counts, [counter.model.config.num_queries] * 3)  # threshold 0 keeps all


def test_grounding_dino_defaults_and_query_text(dino_folder: Path, frames: np.ndarray) -> None:
    counter = GroundingDinoCounter(dino_folder, device="cpu", batch_size=2)
    assert (counter.box_threshold, counter.text_threshold) == (0.32, 0.25)
    counter.processor = spy = ProcessorSpy(counter.processor)
    assert counter.count(frames, "Cat").shape == (3,)
    assert [call["text"] for call in spy.calls] == [["cat ."] * 2, ["cat ."]]
    assert [len(call["images"]) for call in spy.calls] == [2, 1]


def test_grounding_dino_box_threshold_on_planted_scores(
    dino_folder: Path, frames: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoObjectDetectionOutput

    counter = GroundingDinoCounter(dino_folder, device="cpu", batch_size=3)
    queries = 10
    seen: dict[str, Any] = {}

    def fake_forward(**inputs: Any) -> GroundingDinoObjectDetectionOutput:
        batch, length = inputs["input_ids"].shape
        seen["input_ids"] = inputs["input_ids"]
        logits = torch.full((batch, queries, length), logit(0.05))
        # frame 0: best token scores 0.9, 0.5, 0.33 (kept, > 0.32) and 0.31 (dropped); frame 1: none
        for query, score in enumerate([0.9, 0.5, 0.33, 0.31]):
            logits[0, query, 1] = logit(score)
        logits[2, 0, 1] = logit(0.2)  # frame 2: above the text threshold, below the box threshold
        boxes = torch.tensor([box(0.1 * (i + 1), 0.5) for i in range(queries)]).expand(batch, -1, -1)
        return GroundingDinoObjectDetectionOutput(logits=logits, pred_boxes=boxes)

    monkeypatch.setattr(counter.model, "forward", fake_forward)
    np.testing.assert_array_equal(counter.count(frames, "cat"), [3, 0, 0])
    tokens = counter.processor.tokenizer.convert_ids_to_tokens(seen["input_ids"][0].tolist())
    assert tokens == ["[CLS]", "cat", ".", "[SEP]"]
    counter.box_threshold = 0.1
    np.testing.assert_array_equal(counter.count(frames, "cat"), [4, 0, 1])


def test_grounding_dino_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="GroundingDINO model folder .* does not exist. Pass a local folder"):
        GroundingDinoCounter(str(tmp_path / "missing"))
    with pytest.raises(OSError, match="Could not load the GroundingDINO model .* pass a local folder"):
        GroundingDinoCounter(tmp_path)
