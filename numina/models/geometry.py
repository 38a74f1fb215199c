"""The token geometry of one Wan generation: latent grid, tokens per frame, layers, heads, text length.

Every attention map in the project is indexed by this geometry (frame, y, x over the patched latent
grid; layer; head; text position), so it is computed once from the pipeline and the call's
frames/height/width, checked, and stored with every run. May import only the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TEXT_LENGTH = 512  # The Wan pipelines pad every prompt to 512 T5 positions.


@dataclass(frozen=True)
class Geometry:
    """Shape of a generation as the transformer sees it.

    `frames`, `height`, `width` are the token grid after the VAE and patching (21 x 30 x 52 for 81
    frames at 832x480 on Wan2.1); `num_frames`, `pixel_height`, `pixel_width` are the video's.
    """

    frames: int
    height: int
    width: int
    layers: int
    heads: int
    head_dim: int
    num_frames: int
    pixel_height: int
    pixel_width: int
    text_length: int = TEXT_LENGTH

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width

    @property
    def tokens(self) -> int:
        return self.frames * self.tokens_per_frame

    def video_frames(self, latent_frame: int) -> range:
        """The decoded video frames a latent frame stands for: 0 -> [0], f -> [s(f-1)+1 .. s f] with the
        VAE's temporal stride s (4 for Wan): its first frame is where to overlay that frame's maps."""
        if not 0 <= latent_frame < self.frames:
            raise ValueError(f"latent frame {latent_frame} out of range 0..{self.frames - 1}")
        if latent_frame == 0:
            return range(0, 1)
        stride = (self.num_frames - 1) // (self.frames - 1)
        return range(stride * (latent_frame - 1) + 1, stride * latent_frame + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Geometry:
        return cls(**{key: int(value) for key, value in values.items()})

    @classmethod
    def from_configs(
        cls,
        transformer_config: Any,
        vae_scale_temporal: int,
        vae_scale_spatial: int,
        num_frames: int,
        height: int,
        width: int,
        text_length: int = TEXT_LENGTH,
    ) -> Geometry:
        """Geometry from a transformer config and the VAE strides; invalid sizes raise a ValueError."""
        patch_t, patch_h, patch_w = transformer_config.patch_size
        _check_frames(num_frames, vae_scale_temporal)
        _check_size("height", height, vae_scale_spatial * patch_h)
        _check_size("width", width, vae_scale_spatial * patch_w)
        latent_frames = (num_frames - 1) // vae_scale_temporal + 1
        return cls(
            frames=latent_frames // patch_t,
            height=height // (vae_scale_spatial * patch_h),
            width=width // (vae_scale_spatial * patch_w),
            layers=transformer_config.num_layers,
            heads=transformer_config.num_attention_heads,
            head_dim=transformer_config.attention_head_dim,
            num_frames=num_frames,
            pixel_height=height,
            pixel_width=width,
            text_length=text_length,
        )

    @classmethod
    def from_pipeline(
        cls, pipeline: Any, num_frames: int, height: int, width: int, text_length: int = TEXT_LENGTH
    ) -> Geometry:
        """Geometry of `pipeline(num_frames=..., height=..., width=...)` for a diffusers WanPipeline."""
        return cls.from_configs(
            pipeline.transformer.config,
            pipeline.vae_scale_factor_temporal,
            pipeline.vae_scale_factor_spatial,
            num_frames,
            height,
            width,
            text_length,
        )


def _nearest(value: int, valid: list[int]) -> str:
    """The valid values around `value`: one when it lies below the smallest, else the two around it."""
    if value < valid[0]:
        return f"The smallest valid value is {valid[0]}."
    return f"Nearest valid values: {valid[0]} or {valid[1]}."


def _check_frames(num_frames: int, stride: int) -> None:
    if num_frames < 1 or (num_frames - 1) % stride:
        lower = max(1, (num_frames - 1) // stride * stride + 1)
        raise ValueError(
            f"num_frames={num_frames} cannot be generated: the model takes {stride}k+1 frames "
            f"(the VAE compresses time by {stride}). {_nearest(num_frames, [lower, lower + stride])}"
        )


def _check_size(name: str, value: int, multiple: int) -> None:
    if value < multiple or value % multiple:
        lower = max(multiple, value // multiple * multiple)
        raise ValueError(
            f"{name}={value} cannot be generated: it must be a multiple of {multiple} "
            f"(VAE stride times patch size). {_nearest(value, [lower, lower + multiple])}"
        )
