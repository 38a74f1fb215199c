"""The Wan text-to-video model families this project supports, with their real and tiny shapes.

One place that knows what distinguishes Wan2.1-T2V-1.3B, Wan2.1-T2V-14B and Wan2.2-TI2V-5B (heads,
layers, latent channels, VAE stride, expanded timesteps), both for recognising a loaded pipeline and
for building the tiny offline copies in `numina.models.tiny`. May import only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WanVariant:
    """A Wan text-to-video family: the real model's hub id and shape, and a tiny shape of the same kind."""

    name: str
    hub_id: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    expand_timesteps: bool
    default_size: tuple[int, int]  # (height, width) the real model is run at
    tiny_transformer: dict[str, Any] = field(default_factory=dict)
    tiny_vae: dict[str, Any] = field(default_factory=dict)


WAN21_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
_WAN21_VAE = dict(
    z_dim=16, dim_mult=[1, 2, 4, 4], temperal_downsample=[False, True, True], scale_factor_spatial=8
)
_TINY_WAN21_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1)

VARIANTS: dict[str, WanVariant] = {
    "wan2.1-1.3b": WanVariant(
        name="wan2.1-1.3b",
        hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        transformer=dict(WAN21_TRANSFORMER, num_attention_heads=12, num_layers=30, ffn_dim=8960),
        vae=dict(_WAN21_VAE, base_dim=96),
        expand_timesteps=False,
        default_size=(480, 832),
        tiny_transformer=dict(
            WAN21_TRANSFORMER,
            num_attention_heads=4,
            attention_head_dim=16,
            num_layers=4,
            ffn_dim=128,
            text_dim=32,
            freq_dim=32,
        ),
        tiny_vae=_TINY_WAN21_VAE,
    ),
    "wan2.1-14b": WanVariant(
        name="wan2.1-14b",
        hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
        transformer=dict(WAN21_TRANSFORMER, num_attention_heads=40, num_layers=40, ffn_dim=13824),
        vae=dict(_WAN21_VAE, base_dim=96),
        expand_timesteps=False,
        default_size=(480, 832),
        tiny_transformer=dict(
            WAN21_TRANSFORMER,
            num_attention_heads=6,
            attention_head_dim=16,
            num_layers=6,
            ffn_dim=192,
            text_dim=32,
            freq_dim=32,
        ),
        tiny_vae=_TINY_WAN21_VAE,
    ),
    "wan2.2-5b": WanVariant(
        name="wan2.2-5b",
        hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        transformer=dict(
            WAN21_TRANSFORMER,
            num_attention_heads=24,
            num_layers=30,
            ffn_dim=14336,
            in_channels=48,
            out_channels=48,
        ),
        vae=dict(
            base_dim=160,
            decoder_base_dim=256,
            z_dim=48,
            dim_mult=[1, 2, 4, 4],
            temperal_downsample=[False, True, True],
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
        ),
        expand_timesteps=True,
        default_size=(704, 1280),
        tiny_transformer=dict(
            WAN21_TRANSFORMER,
            num_attention_heads=3,
            attention_head_dim=16,
            num_layers=4,
            ffn_dim=96,
            text_dim=32,
            freq_dim=32,
            in_channels=48,
            out_channels=48,
        ),
        tiny_vae=dict(
            base_dim=8,
            decoder_base_dim=8,
            z_dim=48,
            dim_mult=[1, 2, 2, 2],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
        ),
    ),
}


def variant_names() -> list[str]:
    """The supported variant names, for error messages and command-line choices."""
    return sorted(VARIANTS)


def get_variant(name: str) -> WanVariant:
    """Look a variant up by name, with an error that lists the valid names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"Unknown Wan variant {name!r}; choose one of {variant_names()}.") from None
