"""S1/S2/S3 instance separability of self-attention heads, batched over heads and frames.

NUMINA picks the self-attention head whose frame-local map best separates object instances, scored on
the top 3 principal components of the map (METHOD.md, "Phase 1", step 3):

    c_i  = min-max normalised component i over the frame's positions (a flat component -> 0.5)
    g    = 0.299 c0 + 0.587 c1 + 0.114 c2, reshaped to the H x W token grid ("grey image")
    S1   = std(g)                                       foreground contrast (sample std, n - 1)
    S2   = var of block SUMS of g over (H//8) x (W//8) blocks, grid cropped to whole blocks (n - 1)
    S3   = mean Sobel gradient magnitude of g (3x3 kernels, zero padding 1)       edge clarity
    S    = 1 * S1 + 1 * S2 + 0.1 * S3

`official` is exactly that. `normalised` uses block MEANS for S2, so that it no longer scales with the
block area squared (x324 at 30 x 52) and dominates S. May import torch only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Variant = Literal["official", "normalised"]
TERMS = ("S1", "S2", "S3", "S")
DEFAULT_WEIGHTS = (1.0, 1.0, 0.1)
GREY_WEIGHTS = (0.299, 0.587, 0.114)
FLAT_RANGE = 1e-8

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def minmax_normalise(components: torch.Tensor, flat_value: float = 0.5) -> torch.Tensor:
    """Scale each component (..., n, k) to [0, 1] over its n positions; flat ones become `flat_value`."""
    low = components.amin(dim=-2, keepdim=True)
    high = components.amax(dim=-2, keepdim=True)
    spread = high - low
    scaled = (components - low) / spread.clamp_min(FLAT_RANGE)
    return torch.where(spread < FLAT_RANGE, torch.full_like(scaled, flat_value), scaled)


def grey_image(components: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The release's grey image of the first 3 normalised components: (..., n, 3) -> (..., H, W)."""
    weights = components.new_tensor(GREY_WEIGHTS)
    grey = minmax_normalise(components[..., :3]) @ weights
    return grey.unflatten(-1, (height, width))


def block_size(height: int, width: int) -> tuple[int, int]:
    """S2's block: (H//8) x (W//8) token positions (at least 1 x 1 on grids smaller than 8)."""
    return max(1, height // 8), max(1, width // 8)


def contrast(grey: torch.Tensor) -> torch.Tensor:
    """S1: sample standard deviation of the grey image (..., H, W) -> (...)."""
    return grey.flatten(-2).std(dim=-1)


def structure(grey: torch.Tensor, variant: Variant = "official") -> torch.Tensor:
    """S2: sample variance of block sums (`official`) or block means (`normalised`) of the grey image."""
    height, width = grey.shape[-2:]
    block_h, block_w = block_size(height, width)
    rows, cols = height // block_h, width // block_w
    cropped = grey[..., : rows * block_h, : cols * block_w]
    blocks = cropped.unflatten(-1, (cols, block_w)).unflatten(-3, (rows, block_h))  # (..., r, bh, c, bw)
    reduce = blocks.sum if variant == "official" else blocks.mean
    totals = reduce(dim=(-3, -1))
    return totals.flatten(-2).var(dim=-1)


def edge_clarity(grey: torch.Tensor) -> torch.Tensor:
    """S3: mean Sobel gradient magnitude of the grey image, zero padding 1, over all positions."""
    height, width = grey.shape[-2:]
    flat = grey.reshape(-1, 1, height, width)
    sobel_x = _SOBEL_X.to(device=grey.device, dtype=grey.dtype)
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)  # (2, 1, 3, 3)
    gradients = F.conv2d(flat, kernels, padding=1)
    magnitude = gradients.square().sum(dim=1).sqrt()
    return magnitude.mean(dim=(-2, -1)).reshape(grey.shape[:-2])


def separability(
    components: torch.Tensor,
    height: int,
    width: int,
    variant: Variant = "official",
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
) -> torch.Tensor:
    """S1, S2, S3 and S for each map's components (..., H*W, >=3) -> (..., 4) in `TERMS` order."""
    if variant not in ("official", "normalised"):
        raise ValueError(f"Unknown separability variant {variant!r}; use 'official' or 'normalised'.")
    grey = grey_image(
        components.double() if components.dtype == torch.float64 else components.float(), height, width
    )
    s1, s2, s3 = contrast(grey), structure(grey, variant), edge_clarity(grey)
    total = weights[0] * s1 + weights[1] * s2 + weights[2] * s3
    return torch.stack([s1, s2, s3, total], dim=-1)
