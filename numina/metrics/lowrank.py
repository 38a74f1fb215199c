"""Top principal components of many square attention maps at once, on the device.

NUMINA scores a self-attention head by the top 3 components of its frame-local map A (column-centred,
C = U S). A full SVD of every (head, frame) map is far too slow at full size (252 maps of 1560 x 1560 at
Wan2.1-1.3B), so this module runs randomised subspace iterations (the algorithm of scikit-learn's
`randomized_svd`: Gaussian range, power iterations with re-orthonormalisation, small exact SVD) batched
over all leading dimensions, with matrix products only. Three estimators:
- `top_components`: this project's converged one (seeded; its big products on TF32 tensor cores on
  CUDA, or with the maps stored in float16, `products`; the capture's default picks by device);
- `randomized_svd_components`: scikit-learn's `randomized_svd` number for number (its start matrix,
  width, iteration count and sign rule), in float64 on every device: the release's layout components;
- `release_score_components`: the release's head-score estimator, `torch.svd_lowrank(q=3)`, seeded;
and `exact_components`, the float64 SVD they are all measured against.
May import torch and numpy only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

_SHIFT = {torch.float32: 1e-6, torch.float64: 1e-13}
# How the power iterations multiply the maps: in the maps' own dtype ("native"); on TF32 tensor cores on
# CUDA, natively elsewhere ("tf32"); or with the maps stored in float16 (`half_maps`). "auto" (the
# capture's default) is one of them, picked by the maps' device (`products_for`).
PRODUCTS = ("native", "tf32", "float16")
AUTO_PRODUCTS = "auto"
PRODUCT_CHOICES = (*PRODUCTS, AUTO_PRODUCTS)  # what a caller may ask for


def products_for(device: torch.device | str) -> str:
    """What `products="auto"` is on `device`: "float16" on CUDA, "tf32" (float32 natively) elsewhere.

    On an H100 float16 maps took the capture step at the Wan2.1-1.3B shape to x1.033-1.045 of a plain
    step, from TF32's x1.045-1.054, for components within 1.4e-3 of a float64 SVD on planted maps
    (TF32: 8e-4; benchmarks/RESULTS.md). On a CPU they would save no time and only round, so a CPU's
    numbers are those of float32 products, as before "auto" existed.
    """
    return "float16" if torch.device(device).type == "cuda" else "tf32"


def orthonormalize(matrix: torch.Tensor, passes: int = 2) -> torch.Tensor:
    """Orthonormal basis of the columns of `matrix` (..., n, p), p small: shifted Cholesky-QR.

    Batched QR and SVD of tall matrices are slow on GPUs (cuSOLVER); the Gram matrix route needs only
    matrix products, a p x p Cholesky and a triangular inverse. The small diagonal shift keeps
    rank-deficient inputs (maps of rank < p) factorisable; a second pass restores orthogonality to
    rounding (one pass suffices between power iterations, which only need a well-conditioned basis).
    """
    for _ in range(passes):
        gram = matrix.transpose(-1, -2) @ matrix
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        shift = _SHIFT[gram.dtype] * trace + torch.finfo(gram.dtype).tiny ** 0.5  # > 0 even for zero maps
        identity = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
        # cholesky_ex: no host sync to check the result (the shift keeps the matrix positive definite).
        factor = torch.linalg.cholesky_ex(gram + shift[..., None, None] * identity).L
        inverse = torch.linalg.solve_triangular(factor, identity.expand_as(factor), upper=False)
        matrix = matrix @ inverse.transpose(-1, -2)
    return matrix


@contextlib.contextmanager
def tensor_core_products(enabled: bool) -> Iterator[None]:
    """Let CUDA float32 matrix products use TF32 tensor cores inside the block (PyTorch's global flag).

    The power iterations read every map ~16 times with a 13-column right-hand side; cuBLAS's plain
    float32 kernels are compute-bound on such skinny products, TF32 ones run at memory speed. TF32 rounds
    the inputs to 10 mantissa bits and accumulates in float32: errors of ~1e-4 relative in the
    components, below what the iterations themselves leave on maps with a flat spectrum.
    """
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "tf32" if enabled else previous
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def small_eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.linalg.eigh` of a batch of small symmetric matrices, redone in float64 where it fails.

    On exactly low-rank maps (k equal blocks: a k-fold repeated eigenvalue) the float32 LAPACK solver
    raises "failed to converge" or returns NaN. Such batches are solved again in float64 and cast back,
    so every other batch keeps the float32 result bit for bit; one host sync checks for NaN.
    """
    try:
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        if gram.dtype == torch.float64 or bool(torch.isfinite(eigenvectors).all()):
            return eigenvalues, eigenvectors
    except torch.linalg.LinAlgError:
        if gram.dtype == torch.float64:
            raise
    eigenvalues, eigenvectors = torch.linalg.eigh(gram.double())
    return eigenvalues.to(gram.dtype), eigenvectors.to(gram.dtype)


def top_components(
    maps: torch.Tensor,
    k: int = 3,
    oversample: int = 10,
    iterations: int = 7,
    seed: int = 0,
    centre: bool = True,
    products: str = "tf32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal component scores C = U[:, :k] S[:k] of each (optionally column-centred) map.

    Args:
        maps: (..., n, m) float tensor; leading dimensions are processed as one batch.
        k: number of components.
        oversample: extra random directions (scikit-learn's `n_oversamples`, default 10); k + oversample
            is rounded up to a multiple of 8, which keeps GPU products aligned (and only adds accuracy).
        iterations: power iterations (scikit-learn's `n_iter='auto'` gives 7 for k=3 at this size).
        seed: seed of the Gaussian test matrix, shared by every map in the batch (reproducible).
        centre: subtract each column's mean first (NUMINA centres A by its column mean).
        products: how the maps are multiplied (`PRODUCTS`): "tf32" runs the float32 products on TF32
            tensor cores on CUDA (see `tensor_core_products`) and natively elsewhere; "float16"
            stores attention maps (entries in [0, 1]) in float16 (see `half_maps`), half the bytes
            the iterations read; "native" multiplies in the maps' dtype; "auto" is `products_for` the
            maps' device.

    Returns:
        (scores, singular_values): (..., n, k) and (..., k), in the dtype of `maps` (float32 or wider).
    """
    if maps.dtype not in (torch.float32, torch.float64):
        maps = maps.float()
    n, m = maps.shape[-2:]
    if k > min(n, m):
        raise ValueError(f"Cannot take {k} components of {n} x {m} maps.")
    if products not in PRODUCT_CHOICES:
        raise ValueError(f"products={products!r} is not one of {list(PRODUCT_CHOICES)}.")
    if products == AUTO_PRODUCTS:
        products = products_for(maps.device)
    if products == "float16" and maps.dtype != torch.float32:
        raise ValueError(f"products='float16' stores float32 maps in float16; these are {maps.dtype}.")
    if products == "float16" and m > torch.finfo(torch.float16).max:
        raise ValueError(f"products='float16' scales the maps by their width {m}, past float16's range.")
    width = min(-(-(k + oversample) // 8) * 8, n, m)
    generator = torch.Generator(device=maps.device).manual_seed(seed)
    probe = torch.randn(m, width, generator=generator, device=maps.device, dtype=maps.dtype)
    return _subspace_scores(maps, probe, k, iterations, centre, products)


def half_maps(maps: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Float32 attention maps (..., n, m), entries in [0, 1], stored in float16 for the power
    iterations' products, and the scale they were multiplied by first (at most m, so m <= 65504).

    A softmax row of m entries averages 1/m, so the maps are scaled by m before rounding: they sit
    in float16's normal range (entries below 6e-5 / m, which carry no weight, become subnormal), and
    each entry keeps float16's 11 significant bits, as many as TF32 keeps of a float32 product's
    inputs. On planted maps at 30 x 52 (CPU emulation) the components came out as close to a
    float64 SVD as with TF32 products, for half the bytes read; on an H100 they were about twice as
    far as TF32's (1.4e-3 against 8e-4, benchmarks/RESULTS.md).
    """
    scale = float(maps.shape[-1])
    stored = torch.empty_like(maps, dtype=torch.float16)
    return torch.mul(maps, scale, out=stored), scale  # scaled in float32, rounded once, no float32 copy


def _half_product(stored: torch.Tensor, right: torch.Tensor, scale: float) -> torch.Tensor:
    """stored (..., n, m) @ right (..., m, w) float32, divided by `scale`, in float32: the
    products of the float16-rounded operands accumulated in float32. CUDA multiplies float16 with a
    float32 result; elsewhere `stored` comes as the rounded maps in float32, and the products are the
    same."""
    rounded = right.to(torch.float16)
    if stored.dtype != torch.float16:
        return (stored @ rounded.float()).div_(scale)
    batch = stored.shape[:-2]
    left = stored.reshape(-1, *stored.shape[-2:])
    right_batch = rounded.expand(*batch, *rounded.shape[-2:]).reshape(-1, *rounded.shape[-2:])
    product = torch.bmm(left, right_batch, out_dtype=torch.float32)
    return product.reshape(*batch, *product.shape[-2:]).div_(scale)


def _subspace_scores(
    maps: torch.Tensor, probe: torch.Tensor, k: int, iterations: int, centre: bool, products: str = "native"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores U[:, :k] S[:k] and singular values of the (optionally column-centred) maps from the range
    of A_c (A_c^T A_c)^iterations probe, scikit-learn's `randomized_svd` with any basis normaliser (each
    spans the same subspace), the maps multiplied as `products` says (`PRODUCTS`)."""
    # Centring stays implicit (A_c = A - 1 mean^T enters each product as a rank-1 correction), so the
    # maps are never copied (but for `half_maps`): at full size they are gigabytes.
    mean = maps.mean(dim=-2, keepdim=True) if centre else None  # (..., 1, m)
    if products == "float16":
        stored, scale = half_maps(maps)
        if not stored.is_cuda:  # multiplied in float32 from the rounded values: converted once
            stored = stored.float()

        def multiply(matrix: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
            return _half_product(matrix, right, scale)
    else:
        stored, multiply = maps, torch.matmul

    def times(right: torch.Tensor) -> torch.Tensor:  # A_c @ right
        product = multiply(stored, right)
        return product if mean is None else product - mean @ right

    def transposed_times(left: torch.Tensor) -> torch.Tensor:  # A_c^T @ left
        product = multiply(stored.transpose(-1, -2), left)
        return product if mean is None else product - mean.transpose(-1, -2) * left.sum(dim=-2, keepdim=True)

    with tensor_core_products(products == "tf32" and maps.is_cuda):
        basis = orthonormalize(times(probe), passes=1)
        for _ in range(iterations):
            basis = orthonormalize(times(orthonormalize(transposed_times(basis), passes=1)), passes=1)
        basis = orthonormalize(basis)
        small = transposed_times(basis).transpose(-1, -2)  # Q^T A_c: (..., width, m)
    # SVD of the small factor through the eigen-decomposition of its width x width Gram matrix
    # (batched eigh of tiny matrices is fast on GPUs; a batched SVD of width x m is not).
    return scores_from_gram(basis, *small_eigh(small @ small.transpose(-1, -2)), k)


def scores_from_gram(
    basis: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores U[:, :k] S[:k] and singular values from the basis and its Gram matrix's eigen-
    decomposition, with scikit-learn's sign rule (largest-magnitude entry of each left vector positive)."""
    top = eigenvectors.flip(-1)[..., :k]
    singular = eigenvalues.flip(-1)[..., :k].clamp_min(0).sqrt()
    return with_sign_rule(basis @ top) * singular.unsqueeze(-2), singular


def with_sign_rule(vectors: torch.Tensor) -> torch.Tensor:
    """Each column (..., n, k) flipped so that its largest-magnitude entry is positive (scikit-learn's
    rule; an all-zero column is kept): the sign an SVD leaves free, fixed."""
    largest = vectors.abs().argmax(dim=-2, keepdim=True)
    signs = torch.sign(torch.gather(vectors, -2, largest))
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def exact_components(maps: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The truth the estimators approximate: scores U[:, :k] S[:k] (sign rule as `with_sign_rule`) and
    singular values of each column-centred map from a full SVD in float64. Far too slow at full size
    (one 1560 x 1560 SVD per head and frame): for tests and accuracy benchmarks."""
    centred = maps.double() - maps.double().mean(dim=-2, keepdim=True)
    left, singular, _ = torch.linalg.svd(centred, full_matrices=False)
    return with_sign_rule(left[..., :k]) * singular[..., None, :k], singular[..., :k]


def scikit_learn_iterations(k: int, n: int, m: int) -> int:
    """`randomized_svd`'s n_iter='auto': 7 power iterations, or 4 when k is at least 10% of the size."""
    return 7 if k < 0.1 * min(n, m) else 4


def randomized_svd_components(
    maps: torch.Tensor, k: int = 3, oversample: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores U[:, :k] S[:k] and singular values of each column-centred map, as scikit-learn's
    `randomized_svd(A_c, k, n_oversamples=oversample, random_state=seed)` computes them.

    The same start matrix (NumPy's `RandomState(seed).normal`, rounded to float32 for float32 maps as
    scikit-learn does), the same width k + oversample, iteration count and sign rule; the power
    iterations are normalised by Cholesky-QR instead of LU, which spans the same subspace. Everything
    runs in float64 without TF32, so CPU and GPU agree to ~1e-12: on a flat spectrum (one object, where
    components 2 and 3 are the map's noise) a looser arithmetic changes MeanShift's answer.
    Returns float64 (..., n, k) scores and (..., k) singular values; maps are (..., n, m).
    Raises ValueError if k > min(n, m).
    """
    n, m = maps.shape[-2:]
    if k > min(n, m):
        raise ValueError(f"Cannot take {k} components of {n} x {m} maps.")
    start = np.random.RandomState(seed).normal(size=(m, k + oversample))
    if maps.dtype != torch.float64:
        start = start.astype(np.float32)
    # More directions than the map has dimensions span all of them, as any min(n, m) of them do: the
    # exact SVD, which is also what scikit-learn's economic QR returns then.
    start = start[:, : min(n, m)]
    probe = torch.from_numpy(start).to(maps.device, torch.float64)
    return _subspace_scores(maps.double(), probe, k, scikit_learn_iterations(k, n, m), centre=True)


def release_score_components(maps: torch.Tensor, seed: int, k: int = 3) -> torch.Tensor:
    """The release's head-score components: `torch.svd_lowrank(A_c, q=k)` (2 power iterations, no
    oversampling, no sign rule) of each column-centred map, C = U S, in the maps' dtype.

    The release leaves the draw unseeded, so its S for one map varies between runs; here the global
    generator is seeded with `seed` for the call and restored after, and one draw serves the batch.
    """
    centred = maps - maps.mean(dim=-2, keepdim=True)
    devices = [maps.device] if maps.is_cuda else []
    with torch.random.fork_rng(devices=devices, device_type=maps.device.type):
        torch.manual_seed(seed)
        left, singular, _ = torch.svd_lowrank(centred, q=k, niter=2)
    return left * singular.unsqueeze(-2)
