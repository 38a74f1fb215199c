"""CLIP score: the tiny offline CLIP, frame sampling, the score against a manual computation, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from numina.evaluation.clip_score import (
    DEFAULT_CLIP_MODEL,
    ClipScorer,
    sample_frame_indices,
    to_uint8_frames,
)
from numina.testing import build_tiny_clip

PROMPT = "three red cats sitting on the grass"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


@pytest.fixture(scope="module")
def scorer(tiny_clip: Path) -> ClipScorer:
    return ClipScorer(tiny_clip, device="cpu", frames=4)


def _video(num_frames: int = 17, seed: int = 0) -> np.ndarray:
    """Float video in [0, 1] whose values are exact k/255 levels and whose frames are all distinct."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num_frames, 40, 48, 3)).astype(np.float32) / 255.0


def test_default_model_id() -> None:
    assert DEFAULT_CLIP_MODEL == "openai/clip-vit-large-patch14"


def test_tiny_clip_loads_and_scores(tiny_clip: Path, scorer: ClipScorer) -> None:
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tiny_clip.iterdir()}
    assert type(scorer.model).__name__ == "CLIPModel"
    assert scorer.max_length == 32
    value = scorer.score(_video(), PROMPT)
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert 0.0 <= value <= 100.0
    # A prompt far longer than the model's context is truncated, not an error.
    assert 0.0 <= scorer.score(_video(), "cat " * 200) <= 100.0


def test_build_is_deterministic(tmp_path: Path, tiny_clip: Path) -> None:
    other = ClipScorer(build_tiny_clip(tmp_path / "again", seed=0), device="cpu", frames=4)
    reference = ClipScorer(tiny_clip, device="cpu", frames=4)
    assert other.score(_video(), PROMPT) == reference.score(_video(), PROMPT)


def test_tiny_tokenizer_keeps_known_words_whole(scorer: ClipScorer) -> None:
    tokenizer = scorer.processor.tokenizer
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Three red cats")["input_ids"])
    assert tokens == ["<|startoftext|>", "three</w>", "red</w>", "cats</w>", "<|endoftext|>"]


def test_sample_frame_indices() -> None:
    assert sample_frame_indices(17, 4).tolist() == [0, 5, 11, 16]
    assert sample_frame_indices(81, 8).tolist() == np.unique(np.linspace(0, 80, 8).round()).tolist()
    assert sample_frame_indices(3, 8).tolist() == [0, 1, 2]
    assert sample_frame_indices(1, 8).tolist() == [0]
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)


def test_exactly_the_sampled_frames_are_embedded(scorer: ClipScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    video = _video(17)
    seen: list[torch.Tensor] = []
    original = scorer.model.get_image_features

    def spy(pixel_values: torch.Tensor, **kwargs: object) -> object:
        seen.append(pixel_values.clone())
        return original(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(scorer.model, "get_image_features", spy)
    scorer.score(video, PROMPT)
    assert len(seen) == 1  # one batch for all sampled frames
    expected_indices = [0, 5, 11, 16]
    expected = scorer.processor.image_processor(
        images=list(to_uint8_frames(video)[expected_indices]), return_tensors="pt"
    )["pixel_values"]
    assert seen[0].shape[0] == 4
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)
    # Sanity: a different choice of frames would have given different pixels.
    other = scorer.processor.image_processor(
        images=list(to_uint8_frames(video)[[0, 4, 8, 16]]), return_tensors="pt"
    )["pixel_values"]
    assert not torch.equal(seen[0], other)


def test_score_equals_manual_computation(scorer: ClipScorer) -> None:
    video = _video(17, seed=3)
    indices = np.unique(np.linspace(0, 16, 4).round().astype(int))
    frames = (video[indices] * 255).round().astype(np.uint8)
    processor, model = scorer.processor, scorer.model
    with torch.no_grad():
        pixels = processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        image = model.get_image_features(pixel_values=pixels).pooler_output
        tokens = processor.tokenizer([PROMPT], return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output
    cos = torch.nn.functional.cosine_similarity(image, text, dim=-1).numpy()
    assert cos.shape == (4,)
    assert (cos > 0).any()  # the planted truth is not trivially zero
    expected = float(np.mean(100.0 * np.clip(cos, 0.0, None)))
    np.testing.assert_allclose(scorer.frame_cosines(video, PROMPT), cos, rtol=1e-5, atol=1e-6)
    assert scorer.score(video, PROMPT) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_negative_cosines_are_clamped(scorer: ClipScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scorer, "frame_cosines", lambda video, prompt: np.array([-0.5, 0.2, 0.4, -0.1]))
    assert scorer.score(_video(), PROMPT) == pytest.approx(100.0 * (0.0 + 0.2 + 0.4 + 0.0) / 4)


def test_uint8_and_float_give_the_same_score(scorer: ClipScorer) -> None:
    video = _video(17, seed=1)
    as_uint8 = (video * 255).round().astype(np.uint8)
    reference = scorer.score(video, PROMPT)
    assert scorer.score(as_uint8, PROMPT) == reference
    assert scorer.score(torch.from_numpy(video), PROMPT) == reference
    assert scorer.score(video.astype(np.float64), PROMPT) == reference


def test_bad_video_shape(scorer: ClipScorer) -> None:
    with pytest.raises(ValueError, match=r"shape \(frames, H, W, 3\)"):
        scorer.score(np.zeros((4, 32, 32)), PROMPT)


def test_missing_folder_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="does not exist. Pass a local folder"):
        ClipScorer(tmp_path / "missing")


def test_folder_without_model_gives_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="Could not load the CLIP model .* pass a local folder"):
        ClipScorer(tmp_path / "empty")
