"""Open-vocabulary detector counters: how many boxes a detector finds for a noun in each frame.

Both classes follow the `Counter` protocol of `numina.evaluation.counters`: `count(frames, noun)` takes
decoded frames (F, H, W, 3), floats in [0, 1] or uint8, and returns (F,) ints.

- `GroundingDinoCounter`: the release's counter (GroundingDINO Swin-T, one query "<noun> ." with the noun
  lower-cased, box threshold 0.32, text threshold 0.25, count = number of boxes after the processor's
  `post_process_grounded_object_detection`, every frame). A box is kept when its best token score is
  > box_threshold (strict, as the release's `predict` and transformers); the text threshold only picks
  each kept box's label tokens, so, as in the release, it does not change the count.
- `Owlv2Counter`: OWLv2 as a second opinion; query "a photo of a <noun>", a box counts when its score is
  >= `threshold`, then a small class-agnostic NMS (IoU > `nms_iou` removes the weaker box; OWLv2 puts
  one prediction on every patch, so neighbouring patches often box the same object; `nms_iou=None`
  turns it off). torchvision is not installed, so the NMS is written here in torch.

Both load with `from_pretrained` (a hub id or a local `save_pretrained` folder); without a network pass a
local folder. `numina.testing` writes tiny random models (with offline tokenizers) that load through the
same path, for tests.

May import numpy, torch, transformers, numina.evaluation.counters, numina.countworld.world (colour
words), numina.evaluation.model_loading (model loading) and numina.evaluation.clip_score (8-bit frames).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from numina.countworld.world import palette_from_prompt
from numina.evaluation.clip_score import to_uint8_frames
from numina.evaluation.counters import ExactColourCounter, palette_for
from numina.evaluation.model_loading import default_device, load_error, resolve_source

logger = logging.getLogger(__name__)
DEFAULT_OWLV2_MODEL = "google/owlv2-base-patch16-ensemble"
DEFAULT_GROUNDING_DINO_MODEL = "IDEA-Research/grounding-dino-tiny"


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(N, N) IoU of (N, 4) corner boxes (x0, y0, x1, y1)."""
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box is > `iou_threshold`.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)
    overlaps = (box_iou(boxes[order].float()) > iou_threshold).cpu().numpy()  # one copy, no sync per box
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


class Owlv2Counter:
    """OWLv2 counts: boxes with score >= `threshold` for the query "a photo of a <noun>", after NMS."""

    def __init__(
        self,
        model: str | Path = DEFAULT_OWLV2_MODEL,
        threshold: float = 0.3,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        nms_iou: float | None = 0.3,
    ) -> None:
        """Load `model` (hub id or local save_pretrained folder); `device` defaults to CUDA when available."""
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id, source = resolve_source(model, "OWLv2", DEFAULT_OWLV2_MODEL)
        self.threshold, self.batch_size, self.nms_iou = float(threshold), int(batch_size), nms_iou
        self.device = default_device(device)
        try:
            self.model = Owlv2ForObjectDetection.from_pretrained(source)
            self.processor = Owlv2Processor.from_pretrained(source)
        except Exception as err:  # offline, missing files, bad id: all end here
            raise load_error("OWLv2", self.model_id, DEFAULT_OWLV2_MODEL, err, "build_tiny_owlv2") from err
        self.model.to(self.device).eval()

    @staticmethod
    def query(noun: str) -> str:
        """The text query for a noun."""
        return f"a photo of a {noun}"

    @torch.no_grad()
    def _detect(self, frames: np.ndarray, noun: str) -> list[dict[str, torch.Tensor]]:
        """Post-processed detections (all boxes, any score) of a batch of uint8 frames."""
        inputs = self.processor(
            text=[[self.query(noun)]] * len(frames), images=list(frames), return_tensors="pt"
        )
        inputs = inputs.to(self.device)
        outputs = self.model(**inputs)
        # threshold -inf keeps every box: the >= threshold and NMS come after, in `_count_detections`
        return self.processor.post_process_grounded_object_detection(outputs=outputs, threshold=-1.0)

    def _count_detections(self, detection: dict[str, Any]) -> int:
        scores, boxes = detection["scores"], detection["boxes"]
        keep = scores >= self.threshold
        scores, boxes = scores[keep], boxes[keep]
        if self.nms_iou is not None and len(scores) > 1:
            return len(nms(boxes, scores, self.nms_iou))
        return int(len(scores))

    def count(self, frames: np.ndarray, noun: str) -> np.ndarray:
        """(F,) int64 counts of `noun` in (F, H, W, 3) frames (uint8 or float in [0, 1])."""
        frames = to_uint8_frames(frames)
        counts: list[int] = []
        for start in range(0, len(frames), self.batch_size):
            detections = self._detect(frames[start : start + self.batch_size], noun)
            counts.extend(self._count_detections(detection) for detection in detections)
        return np.asarray(counts, dtype=np.int64)


class GroundingDinoCounter:
    """The release's counter: GroundingDINO boxes for the query "<noun> ." (box 0.32, text 0.25)."""

    def __init__(
        self,
        model: str | Path = DEFAULT_GROUNDING_DINO_MODEL,
        box_threshold: float = 0.32,
        text_threshold: float = 0.25,
        device: str | torch.device | None = None,
        batch_size: int = 1,
    ) -> None:
        """Load `model` (hub id or local save_pretrained folder); `device` defaults to CUDA when available.

        `batch_size` frames go through the model at once (1 by default: GroundingDINO is large and pads
        the frames of a batch to a common size, which a single video's frames share anyway).
        """
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id, source = resolve_source(model, "GroundingDINO", DEFAULT_GROUNDING_DINO_MODEL)
        self.box_threshold, self.text_threshold = float(box_threshold), float(text_threshold)
        self.batch_size = int(batch_size)
        self.device = default_device(device)
        try:
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(source)
            self.processor = AutoProcessor.from_pretrained(source)
        except Exception as err:  # offline, missing files, bad id: all end here
            raise load_error(
                "GroundingDINO", self.model_id, DEFAULT_GROUNDING_DINO_MODEL, err, "build_tiny_grounding_dino"
            ) from err
        self.model.to(self.device).eval()

    @staticmethod
    def query(noun: str) -> str:
        """The release's text query: the noun lower-cased, then " ."."""
        return f"{noun.lower()} ."

    @torch.no_grad()
    def _detect(self, frames: np.ndarray, noun: str) -> list[dict[str, Any]]:
        """Post-processed detections (box and text thresholds applied) of a batch of uint8 frames."""
        inputs = self.processor(
            images=list(frames), text=[self.query(noun)] * len(frames), return_tensors="pt"
        )
        inputs = inputs.to(self.device)
        outputs = self.model(**inputs)
        return self.processor.post_process_grounded_object_detection(
            outputs,
            input_ids=inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
        )

    def count(self, frames: np.ndarray, noun: str) -> np.ndarray:
        """(F,) int64 counts: the number of boxes kept in each of the (F, H, W, 3) frames."""
        frames = to_uint8_frames(frames)
        counts: list[int] = []
        for start in range(0, len(frames), self.batch_size):
            detections = self._detect(frames[start : start + self.batch_size], noun)
            counts.extend(int(len(detection["boxes"])) for detection in detections)
        return np.asarray(counts, dtype=np.int64)


DETECTORS = ("owlv2", "grounding-dino")


def load_detector(
    kind: str, model: str | Path | None = None, device: str | None = None
) -> Owlv2Counter | GroundingDinoCounter:
    """An open-vocabulary counter by name, from `model` (hub id or folder) or its default checkpoint."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; choose from {DETECTORS}")
    counter = Owlv2Counter if kind == "owlv2" else GroundingDinoCounter
    return counter(model, device=device) if model else counter(device=device)


def prompt_counter(
    kind: str,
    model: str | Path | None = None,
    device: str | None = None,
    palette: Mapping[str, tuple[float, float, float]] | None = None,
) -> Callable[[str, Mapping[str, int]], Any]:
    """`counter(prompt, targets)` for each prompt: the detector `kind` (loaded once, here), or an exact
    colour counter. Its colours: `palette` when given, else the colour word the prompt puts before each
    noun (CountWorld prompts: "three red circles"), else the targets' nouns coloured in order
    (`palette_for`, the convention of the tiny random pipelines' tests), which is logged."""
    if kind == "exact":
        return lambda prompt, targets: ExactColourCounter(palette or _prompt_palette(prompt, targets))
    detector = load_detector(kind, model, device)
    return lambda prompt, targets: detector


def _prompt_palette(prompt: str, targets: Mapping[str, int]) -> dict[str, tuple[float, float, float]]:
    try:
        return palette_from_prompt(prompt, targets)
    except (KeyError, ValueError) as reason:
        logger.warning("exact counter: %s; colouring the nouns in order instead (palette_for)", reason)
        return palette_for(list(targets))
