"""The attention maps the capture layer computes on the side, batched over heads and frames.

The model's own attention runs through fused kernels that never form the probabilities, so capture
recomputes them from the query and key the block produced (after the RMS norms; self-attention also
after RoPE), in float32, and reduces them on the device before anything leaves it. Every function is
pure (tensors in, tensors out), with no Python loop over frames and no host sync but the error check
of a small batched eigen-decomposition (`top_components`), so the capture hooks stay thin and the
numbers can be checked against a float64 reference. Self-attention maps are formed a few heads at a
time (`MAP_CHUNK_BYTES`), one loop step and one such sync per chunk: all 40 heads of the Wan2.1-14B
shape at once are 8 GiB of maps, and twice that during the softmax.
May import torch, numina.compat and numina.metrics (and numina.capture.spec for type hints).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from numina.compat import flash_log_normaliser
from numina.metrics.concentration import concentration_stats
from numina.metrics.lowrank import randomized_svd_components, release_score_components, top_components
from numina.metrics.separability import separability

if TYPE_CHECKING:
    from numina.capture.spec import SelfAttentionCapture


def scores_f32(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """q k^T / sqrt(d) in float32 for (..., n, d) x (..., m, d): (..., n, m).

    Half-precision inputs on a GPU use a matrix product with float32 output (exact products, float32
    accumulation: the release's float32 softmax input) instead of upcasting copies.
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16):
        batch = query.shape[:-2]
        logits = torch.bmm(
            query.reshape(-1, *query.shape[-2:]),
            key.reshape(-1, *key.shape[-2:]).transpose(-1, -2),
            out_dtype=torch.float32,
        ).reshape(*batch, query.shape[-2], key.shape[-2])
        return logits.mul_(scale)
    return (query.float() @ key.float().transpose(-1, -2)).mul_(scale)


def apply_rotary(tokens: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Wan's RoPE on (L, heads, d): channel pairs (2i, 2i+1) rotated by the position's angle.

    `rotary` is the (cos, sin) pair diffusers' WanRotaryPosEmbed gives, each (1, L, 1, d) with every
    angle repeated for both channels of its pair. Computed as a complex product in float32, returned
    in the input dtype (as the model rounds it).
    """
    cos, sin = (part[0, :, :, 0::2].float() for part in rotary)  # (L, 1, d/2)
    pairs = torch.view_as_complex(tokens.float().unflatten(-1, (-1, 2)).contiguous())
    rotated = torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)
    return rotated.to(tokens.dtype)


def split_heads(projected: torch.Tensor, heads: int, head_index: torch.Tensor | None) -> torch.Tensor:
    """(L, heads*d) -> (L, chosen heads, d)."""
    per_head = projected.unflatten(-1, (heads, -1))
    return per_head if head_index is None else per_head.index_select(1, head_index)


def frame_local_attention(query: torch.Tensor, key: torch.Tensor, frames: int) -> torch.Tensor:
    """softmax(q_f k_f^T / sqrt(d)) over each frame's own tokens: (L, h, d) x2 -> (h, F, tpf, tpf)."""
    q = query.transpose(0, 1).unflatten(1, (frames, -1))  # (h, F, tpf, d)
    k = key.transpose(0, 1).unflatten(1, (frames, -1))
    return torch.softmax(scores_f32(q, k), dim=-1)


def reduce_self_attention(
    maps: torch.Tensor, height: int, width: int, part: SelfAttentionCapture
) -> dict[str, torch.Tensor]:
    """Top components (h, F, y, x, k), singular values (h, F, k) and, if asked, scores (h, F, 4), by
    the part's estimator; the release's also gives the components that scored (h, F, y, x, 3)."""
    if part.estimator == "release":
        components, singular = randomized_svd_components(maps, part.components, part.oversample, part.seed)
        components, singular = components.float(), singular.float()
        scored = release_score_components(maps, part.score_seed) if part.scores else None
    else:
        components, singular = top_components(
            maps,
            part.components,
            part.oversample,
            part.iterations,
            part.seed,
            products=part.products,
        )
        scored = components
    out = {"components": components.unflatten(-2, (height, width)), "singular_values": singular}
    if part.scores:
        out["scores"] = separability(scored, height, width, part.score_variant)
    if part.keeps_score_components:
        out["score_components"] = scored.unflatten(-2, (height, width))
    return out


# Float32 self-attention maps formed at once: the softmax holds twice this, on top of the block's own
# activations. 1 GiB keeps 5 heads x 21 frames x 1560^2 per product at the 14B shape (fast batched
# products) and all 12 heads of the 1.3B shape in 3 chunks (4 + 4 + 4, `head_chunks`).
MAP_CHUNK_BYTES = 2**30


def heads_per_chunk(frames: int, tokens_per_frame: int, chunk_bytes: int = MAP_CHUNK_BYTES) -> int:
    """How many heads' float32 maps (frames x tpf x tpf each) fit in `chunk_bytes`; at least one."""
    return max(1, chunk_bytes // (frames * tokens_per_frame**2 * 4))


def head_chunks(heads: int, per_chunk: int) -> list[slice]:
    """`heads` split into as few chunks of at most `per_chunk` as possible, of sizes that differ by at
    most one (12 heads at 5 a chunk: 4 + 4 + 4, not 5 + 5 + 2, so the largest chunk's maps are smaller)."""
    count = -(-heads // per_chunk)
    size, larger = divmod(heads, count)
    bounds = [0]
    for index in range(count):
        bounds.append(bounds[-1] + size + (index < larger))
    return [slice(start, end) for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def self_attention_reductions(
    query: torch.Tensor,
    key: torch.Tensor,
    frames: int,
    height: int,
    width: int,
    part: SelfAttentionCapture,
    chunk_bytes: int | None = None,
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """`reduce_self_attention` of the frame-local maps of (L, h, d) queries and keys, a chunk of heads
    at a time (`chunk_bytes` of maps, `MAP_CHUNK_BYTES` by default); adds the maps themselves
    (h, F, tpf, tpf, float16) when `part.maps` asks for them. With `rotary` (see `apply_rotary`), the
    queries and keys are rotated a chunk at a time too, so no float32 copy of all heads is made.

    Every head's computation is that of all heads at once: RoPE acts on each head alone and the
    components' random probe is shared by the whole batch. On a CPU chunking moves no number by more
    than float32 rounding (tested); on CUDA the batched products' kernels may change with the batch's
    size: at the 1.3B shape on random queries, one chunk of 12 heads against 4 + 4 + 4 moved the
    components by up to 1.3e-4 and the scores by 7.5e-4 (an H100; benchmarks/RESULTS.md).
    """
    per_chunk = heads_per_chunk(frames, height * width, chunk_bytes or MAP_CHUNK_BYTES)
    chunks = []
    for heads in head_chunks(query.shape[1], per_chunk):
        q, k = query[:, heads], key[:, heads]
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        maps = frame_local_attention(q, k, frames)
        del q, k
        reduced = reduce_self_attention(maps, height, width, part)
        if part.maps:
            reduced["maps"] = maps.to(torch.float16)
        chunks.append(reduced)
        del maps  # before the next chunk's maps are formed
    return {name: torch.cat([chunk[name] for chunk in chunks]) for name in chunks[0]}


def log_normaliser(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """log sum_j exp(q k_j^T / sqrt(d)) for (h, L, d) queries over (h, T, d) keys: (h, L), float32.

    On a GPU with half-precision inputs this is the log-sum-exp that PyTorch's flash-attention kernel
    returns (float32 accumulation of exact products, as `scores_f32`), which never writes the
    h x L x T logits; elsewhere it is computed from `scores_f32`.
    """
    if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16):
        q, k = query.unsqueeze(0), key.unsqueeze(0)
        return flash_log_normaliser(q, k)[0, :, : query.shape[-2]]
    return torch.logsumexp(scores_f32(query, key), dim=-1)


def padding_is_uniform(context: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """True when every text position from `prompt_length` on holds the same vector (a 0-d bool tensor).

    diffusers' Wan pipelines zero-pad the prompt embedding to 512 positions; the text projection and
    the key projection act on each position alone, so all padding keys are then one vector.
    """
    padding = context[..., prompt_length:, :]
    return (padding == padding[..., :1, :]).all()


def cross_attention_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    tokens: torch.Tensor,
    prompt_length: int,
    uniform_padding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over all text positions, kept at the chosen tokens.

    With `uniform_padding` (all keys from `prompt_length` on are equal, see `padding_is_uniform`) the
    softmax needs only the prompt's keys and one padding key counted T - prompt_length times:
    exactly the same probabilities, without the h x L x T logits, in one softmax kernel (a third
    faster than a log-sum-exp and exponentials apart: 0.37-0.39 against 0.55 ms per block at the
    1.3B shape, H100; benchmarks/RESULTS.md).

    Args:
        query: (L, h, d) video queries; key: (T, h, d) text keys (all T positions, padding included).
        tokens: positions to keep; prompt_length: positions from here on are padding.

    Returns:
        probs (h, tokens, L) and text mass (h, L, 2): the probability on prompt positions and on padding.
    """
    q, k = query.transpose(0, 1), key.transpose(0, 1)  # (h, L, d), (h, T, d)
    text_length = k.shape[1]
    # Logits are laid out text-major, (h, keys, L): few rows of length L keep the products aligned
    # and fast on GPUs, where (h, L, few) would have an odd leading dimension.
    if uniform_padding and prompt_length < text_length:
        # One softmax over the prompt keys and the one padding key, whose logit carries the log of its
        # multiplicity: the padding's whole share in one entry, which each padding position splits.
        padding = text_length - prompt_length
        logits = scores_f32(k[:, : prompt_length + 1], q)
        logits[:, -1].add_(math.log(padding))
        distinct = torch.softmax(logits, dim=1)
        share = torch.where(tokens < prompt_length, 1.0, 1.0 / padding)
        probs = distinct.index_select(1, tokens.clamp_max(prompt_length)).mul_(share[:, None])
        prompt_mass = distinct[:, :prompt_length].sum(dim=1)
    else:
        normaliser = log_normaliser(q, k).unsqueeze(1)
        probs = torch.exp(scores_f32(k.index_select(1, tokens), q) - normaliser)
        prompt_mass = torch.exp(scores_f32(k[:, :prompt_length], q) - normaliser).sum(dim=1)
    text_mass = torch.stack([prompt_mass, 1.0 - prompt_mass], dim=-1)
    return probs, text_mass


def reduce_cross_attention(
    probs: torch.Tensor, text_mass: torch.Tensor, frames: int, height: int, width: int, stats: bool
) -> dict[str, torch.Tensor]:
    """Maps (h, tokens, F, y, x), per-frame text mass (h, F, 2), the per-query prompt mass (h, F, y, x)
    (what renormalising a map over the prompt's own tokens divides by) and optional statistics
    (h, tokens, F, s)."""
    maps = probs.unflatten(-1, (frames, height, width))
    out = {
        "probs": maps,
        "text_mass": text_mass.unflatten(1, (frames, -1)).mean(dim=2),
        "prompt_mass": text_mass[..., 0].unflatten(-1, (frames, height, width)),
    }
    if stats:
        out["stats"] = concentration_stats(maps)
    return out
