"""How concentrated one attention map is: the measures behind "numerals get diffuse attention".

A map here is the attention one text token receives from the video tokens of one frame, m_i >= 0 over
the frame's n = H*W positions. Every measure is batched over leading dimensions (..., H, W) -> (...)
and, except `mean_attention`, is computed on p = m / sum(m), so it describes the SHAPE of the map, not
its strength:

    mean_attention    mean_i m_i                                   how much attention the token gets
    entropy           -sum_i p_i log p_i / log n                   1 = uniform, 0 = one position
    top_mass          sum of the largest ceil(f n) p_i (f = 5%)   1 = all mass in the top f
    peak_to_mean      max_i p_i / mean_i p_i = n max_i p_i         1 = uniform, n = one position
    spread            sum_i p_i |r_i - r_bar|^2, r_i in [0, 1]^2   second moment about the centroid
    gini              sum_i (2i - n - 1) p_(i) / n, p sorted up    0 = uniform, (n-1)/n = one position

All but `entropy`, `spread` grow with concentration.

Text padding: Wan pads the prompt to 512 text positions and its cross-attention has no mask, so each
video position q spreads its attention over the prompt's tokens AND the padding; `prompt_mass(q)` is
the share that lands on the prompt. `renormalise_over_prompt` gives the map a token would have if the
padding were masked out, m_i / prompt_mass_i (every token of the prompt then shares each position's
whole attention). Both views are reported by analysis; the raw map is the default because it is what
the model computes. May import torch only.
"""

from __future__ import annotations

import math

import torch

STATS = ("mean_attention", "entropy", "top_mass", "peak_to_mean", "spread", "gini")
TOP_FRACTION = 0.05
_TINY = 1e-30


def _distribution(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(-2).clamp_min(0)
    return flat / flat.sum(dim=-1, keepdim=True).clamp_min(_TINY)


def normalised_entropy(maps: torch.Tensor) -> torch.Tensor:
    """-sum p log p / log n over the H*W positions (0 log 0 = 0)."""
    p = _distribution(maps)
    n = p.shape[-1]
    return -(p * torch.log(p.clamp_min(_TINY))).sum(dim=-1) / math.log(n)


def top_mass(maps: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Share of the map's mass in its largest ceil(fraction * n) positions."""
    p = _distribution(maps)
    count = max(1, math.ceil(fraction * p.shape[-1]))
    return p.topk(count, dim=-1).values.sum(dim=-1)


def peak_to_mean(maps: torch.Tensor) -> torch.Tensor:
    """max p / mean p = n * max p."""
    p = _distribution(maps)
    return p.amax(dim=-1) * p.shape[-1]


def spatial_spread(maps: torch.Tensor) -> torch.Tensor:
    """sum_i p_i |r_i - r_bar|^2 with (y, x) coordinates scaled to [0, 1] (linspace over the grid)."""
    height, width = maps.shape[-2:]
    p = _distribution(maps).unflatten(-1, (height, width))
    ys = torch.linspace(0, 1, height, device=maps.device, dtype=p.dtype)
    xs = torch.linspace(0, 1, width, device=maps.device, dtype=p.dtype)
    p_y, p_x = p.sum(dim=-1), p.sum(dim=-2)  # marginals (..., H), (..., W)
    centre_y = (p_y * ys).sum(dim=-1, keepdim=True)
    centre_x = (p_x * xs).sum(dim=-1, keepdim=True)
    return (p_y * (ys - centre_y).square()).sum(dim=-1) + (p_x * (xs - centre_x).square()).sum(dim=-1)


def gini(maps: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of the map's values: sum_i (2i - n - 1) p_(i) / n with p sorted ascending."""
    p = _distribution(maps).sort(dim=-1).values
    n = p.shape[-1]
    ranks = torch.arange(1, n + 1, device=p.device, dtype=p.dtype)
    return ((2 * ranks - n - 1) * p).sum(dim=-1) / n


def renormalise_over_prompt(maps: torch.Tensor, prompt_mass: torch.Tensor) -> torch.Tensor:
    """m_i / prompt_mass_i: each position's attention as a share of what it gives the prompt's tokens.

    `prompt_mass` (..., H, W) broadcasts against `maps` (..., H, W); positions that give the prompt
    (numerically) nothing get 0.
    """
    mass = prompt_mass.to(maps.dtype)
    return torch.where(mass > _TINY, maps / mass.clamp_min(_TINY), torch.zeros_like(maps))


def concentration_stats(maps: torch.Tensor) -> torch.Tensor:
    """All measures of `STATS` for maps (..., H, W) -> (..., len(STATS)), computed in float32 or wider."""
    if maps.dtype not in (torch.float32, torch.float64):
        maps = maps.float()
    return torch.stack(
        [
            maps.flatten(-2).mean(dim=-1),
            normalised_entropy(maps),
            top_mass(maps),
            peak_to_mean(maps),
            spatial_spread(maps),
            gini(maps),
        ],
        dim=-1,
    )
