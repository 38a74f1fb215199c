"""CLIP score of generated videos against their prompts, through transformers' CLIP.

The score of a video is the CLIPScore of Hessel et al. (2021) with w = 100, averaged over frames:

    clip_score(video, prompt) = mean over sampled frames f of 100 * max(cos(E_img(f), E_txt(prompt)), 0)

where E_img / E_txt are CLIPModel's projected image / text embeddings (`get_image_features` /
`get_text_features`). `frames` frames are sampled evenly (see `sample_frame_indices`). The model is always
loaded with `from_pretrained(model_id_or_local_folder)`; `numina.testing.build_tiny_clip` writes a tiny
random CLIP into a folder that loads through exactly that same path, for tests and offline smoke runs
(its scores are meaningless). May import torch, numpy, transformers and numina.evaluation.model_loading (model
loading).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from numina.evaluation.model_loading import default_device, load_error, resolve_source

# The documented default model id: the common choice for text-video CLIP score.
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "ClipScorer",
    "sample_frame_indices",
    "to_uint8_frames",
]


def sample_frame_indices(num_frames: int, k: int) -> np.ndarray:
    """Evenly spaced frame indices: the unique values of `np.linspace(0, n - 1, k).round()`.

    The first and last frames are always included; with `k >= n` every frame is used once.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if k < 1:
        raise ValueError(f"frames must be >= 1, got {k}")
    return np.unique(np.linspace(0, num_frames - 1, k).round().astype(np.int64))


def to_uint8_frames(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """(F, H, W, 3) uint8 frames from uint8 or float-in-[0, 1] frames (floats: clip, x255, round).

    Frames are quantised to 8 bits, as a saved video would be, so that a float video and its uint8 version
    give the same score; CLIP's image processor then rescales by 1/255 as for any 8-bit image.
    """
    array = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"video must have shape (frames, H, W, 3), got {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"video must be uint8 or float in [0, 1], got dtype {array.dtype}")
    return (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)


class ClipScorer:
    """A CLIP model + processor that scores (video, prompt) pairs; see the module docstring."""

    def __init__(
        self,
        model: str | Path = DEFAULT_CLIP_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        frames: int = 8,
    ) -> None:
        """Load `model` (a hub id or a local `save_pretrained` folder) with `from_pretrained`.

        `device` defaults to CUDA when available, else CPU; `dtype` defaults to float32. `frames` is the
        number of evenly sampled frames embedded per video.
        """
        from transformers import CLIPModel, CLIPProcessor

        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.model_id, source = resolve_source(model, "CLIP", DEFAULT_CLIP_MODEL)
        self.device = default_device(device)
        self.dtype = dtype or torch.float32
        self.frames = frames
        try:
            self.model = CLIPModel.from_pretrained(source, dtype=self.dtype)
            self.processor = CLIPProcessor.from_pretrained(source)
        except Exception as err:  # offline, missing files, bad id: all end here
            raise load_error("CLIP", self.model_id, DEFAULT_CLIP_MODEL, err, "build_tiny_clip") from err
        self.model.to(self.device).eval()
        tokenizer_max = getattr(self.processor.tokenizer, "model_max_length", None) or 10**9
        self.max_length = int(min(tokenizer_max, self.model.config.text_config.max_position_embeddings))

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        """(D,) float32 unit-norm text embedding; the prompt is truncated to the model's max length."""
        tokens = self.processor.tokenizer(
            [prompt], truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        features = self.model.get_text_features(**tokens).pooler_output[0].float()
        return features / features.norm()

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """(F, D) float32 unit-norm embeddings of (F, H, W, 3) uint8 frames, in one batch."""
        pixels = self.processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.dtype)
        features = self.model.get_image_features(pixel_values=pixels).pooler_output.float()
        return features / features.norm(dim=-1, keepdim=True)

    def frame_cosines(self, video: np.ndarray | torch.Tensor, prompt: str) -> np.ndarray:
        """Cosine similarity of each sampled frame (see `sample_frame_indices`) with the prompt."""
        frames = to_uint8_frames(video)
        indices = sample_frame_indices(len(frames), self.frames)
        cosines = self.image_embeddings(frames[indices]) @ self.text_embedding(prompt)
        return cosines.cpu().numpy().astype(np.float64)

    def score(self, video: np.ndarray | torch.Tensor, prompt: str) -> float:
        """CLIP score in [0, 100]: mean over sampled frames of 100 * max(cos, 0) (Hessel et al. 2021)."""
        return float(np.mean(100.0 * np.maximum(self.frame_cosines(video, prompt), 0.0)))
