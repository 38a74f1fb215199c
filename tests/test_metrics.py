"""numina.metrics: S1/S2/S3 on hand-computed cases, the low-rank step, concentration measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from experiment_scripts import load_benchmark
from sklearn.utils.extmath import randomized_svd

from numina.evaluation.planted import (
    CaseSpec,
    benchmark_suite,
    generate_case,
    layout_extraction,
    match_frame,
)
from numina.method.presets import preset
from numina.metrics import concentration_stats, separability, top_components
from numina.metrics.lowrank import (
    exact_components,
    half_maps,
    randomized_svd_components,
    release_score_components,
    scikit_learn_iterations,
    small_eigh,
)
from numina.metrics.separability import block_size, grey_image

# A 16 x 16 grid, ones on the 4 x 4 square rows 4-7, cols 4-7, zeros elsewhere (all three components
# equal to it, so the grey image IS the square: 0.299 + 0.587 + 0.114 = 1). By hand:
#   S1 = sample std over 256 values with 16 ones: var = 16 (15/16)^2 + 240 (1/16)^2 / 255 = 1/17.
#   S2: blocks of (16//8) x (16//8) = 2 x 2, 64 blocks; 4 blocks sum to 4, 60 to 0; mean 1/4;
#       sample var = (4 * 3.75^2 + 60 * 0.25^2) / 63 = 60/63. Normalised (block means): that / 16.
#   S3: Sobel responses live in rows/cols 3..8; with the smoothed edge profile p = (1, 3, 4, 4, 3, 1)
#       over 3..8 and edge rows/cols E = {3, 4, 7, 8}: corners E x E give sqrt(p_i^2 + p_j^2) summing
#       to 16 sqrt 2 + 8 sqrt 10, the 16 edge-but-not-corner cells give 4 each (64). Mean over 256.
SQUARE_S1 = 1 / math.sqrt(17)
SQUARE_S2 = 60 / 63
SQUARE_S3 = (64 + 16 * math.sqrt(2) + 8 * math.sqrt(10)) / 256


def _square_components() -> torch.Tensor:
    image = torch.zeros(16, 16, dtype=torch.float64)
    image[4:8, 4:8] = 1
    return image.flatten()[:, None].repeat(1, 3)


def test_official_scores_match_hand_computation() -> None:
    s1, s2, s3, total = separability(_square_components(), 16, 16, "official").tolist()
    assert s1 == pytest.approx(SQUARE_S1, rel=1e-12)
    assert s2 == pytest.approx(SQUARE_S2, rel=1e-12)
    assert s3 == pytest.approx(SQUARE_S3, rel=1e-12)
    assert total == pytest.approx(SQUARE_S1 + SQUARE_S2 + 0.1 * SQUARE_S3, rel=1e-12)


def test_normalised_scores_use_block_means() -> None:
    s1, s2, s3, _ = separability(_square_components(), 16, 16, "normalised").tolist()
    assert (s1, s3) == (pytest.approx(SQUARE_S1), pytest.approx(SQUARE_S3))
    assert s2 == pytest.approx(SQUARE_S2 / 16, rel=1e-12)


def test_release_block_size_and_flat_components() -> None:
    assert block_size(30, 52) == (3, 6)  # 10 x 8 blocks of 3 x 6 at 832 x 480
    components = torch.zeros(4 * 4, 3)
    components[:, 0] = torch.arange(16.0)  # c0 spans [0, 15]; c1 and c2 flat -> 0.5
    grey = grey_image(components, 4, 4)
    expected = 0.299 * torch.arange(16.0) / 15 + (0.587 + 0.114) * 0.5
    torch.testing.assert_close(grey.flatten(), expected)


def test_scores_are_batched_over_leading_dims() -> None:
    components = torch.randn(3, 5, 64, 3, dtype=torch.float64)
    batched = separability(components, 8, 8)
    one = separability(components[2, 4], 8, 8)
    assert batched.shape == (3, 5, 4)
    torch.testing.assert_close(batched[2, 4], one)


def test_top_components_equal_exact_svd_with_clear_gaps() -> None:
    generator = torch.Generator().manual_seed(0)
    left = torch.linalg.qr(torch.randn(4, 60, 6, generator=generator, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(4, 60, 6, generator=generator, dtype=torch.float64)).Q
    spectrum = torch.tensor([8.0, 4.0, 2.0, 0.5, 0.2, 0.1], dtype=torch.float64)
    maps = left @ torch.diag(spectrum) @ right.transpose(-1, -2)
    scores, singular = top_components(maps, k=3, centre=False)
    u, s, _ = torch.linalg.svd(maps)
    exact = u[..., :3] * s[..., None, :3]
    exact = exact * torch.sign(torch.gather(exact, -2, exact.abs().argmax(-2, keepdim=True)))
    torch.testing.assert_close(singular, s[..., :3], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scores, exact, rtol=1e-8, atol=1e-10)


def test_top_components_agree_with_scikit_learn_on_attention_maps() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 2, 48, 8, generator=generator).unbind(0)
    maps = torch.softmax(q @ k.transpose(-1, -2), dim=-1).double()
    scores, _ = top_components(maps, k=3)
    for index in range(2):
        matrix = maps[index].numpy()
        u, s, _ = randomized_svd(matrix - matrix.mean(axis=0, keepdims=True), 3, random_state=0)
        np.testing.assert_allclose(scores[index].numpy(), u * s, atol=2e-4)


def _planted_maps(device: str = "cpu") -> torch.Tensor:
    """Self-attention maps of a planted scene (3 instances and another noun's, 2 frames, 20 x 24)."""
    case = generate_case(CaseSpec(20, 24, 3, others=1, difficulty="easy", frames=2, seed=4))
    return torch.from_numpy(case.self_maps).to(device)


def _relative_error(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    return ((estimate.double() - exact).norm(dim=-2) / exact.norm(dim=-2)).max().item()


def test_maps_stored_in_float16_keep_the_components_of_float32_ones() -> None:
    """`products="float16"`: the maps scaled by their width and rounded to float16, multiplied with
    float32 sums. The components stay within 3e-3 of a float64 SVD on a planted scene (float32
    products: 2e-5), and the rounding did act (the numbers differ from float32's)."""
    maps = _planted_maps()
    stored, scale = half_maps(maps)
    assert stored.dtype == torch.float16 and scale == maps.shape[-1]
    torch.testing.assert_close(stored.float() / scale, maps, rtol=1e-3, atol=1e-7)
    exact = exact_components(maps)[0]
    native, native_singular = top_components(maps, products="native")
    half, half_singular = top_components(maps, products="float16")
    assert _relative_error(native, exact) < 1e-4
    assert _relative_error(half, exact) < 3e-3
    torch.testing.assert_close(half_singular, native_singular, rtol=1e-3, atol=0)
    assert not torch.equal(half, native)


def test_the_products_option_is_checked() -> None:
    maps = _planted_maps()
    with pytest.raises(ValueError, match="products='bfloat16' is not one of"):
        top_components(maps, products="bfloat16")
    with pytest.raises(ValueError, match="these are torch.float64"):
        top_components(maps.double(), products="float16")
    wide = torch.zeros(3, 70_000)
    wide[:, 0] = 1  # each row's attention on one key: scaled by 70,000, past float16's 65,504 (inf)
    with pytest.raises(ValueError, match="width 70000, past float16's range"):
        top_components(wide, products="float16")


def test_the_accuracy_benchmark_emulates_the_estimators_own_iterations() -> None:
    """benchmarks/map_products_accuracy.py rounds the products of its own copy of the iterations:
    unrounded, and with float16 maps, it gives `top_components`' numbers; TF32 rounding moves them."""
    benchmark = load_benchmark("map_products_accuracy")
    maps = _planted_maps()
    for mode, products in (("float32", "native"), ("float16 maps", "float16")):
        emulated, singular = benchmark.emulated_components(maps, mode)
        library, library_singular = top_components(maps, products=products)
        torch.testing.assert_close(emulated, library, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(singular, library_singular, rtol=1e-6, atol=0)
    truncated, _ = benchmark.emulated_components(maps, "tf32 truncated")
    assert _relative_error(truncated, exact_components(maps)[0]) > 1e-4
    assert benchmark.truncated_tf32(torch.tensor([1 + 2**-10 + 2**-11])).item() == 1 + 2**-10
    assert benchmark.rounded_tf32(torch.tensor([1 + 2**-10 + 2**-11])).item() == 1 + 2**-9


def test_the_accuracy_benchmarks_layouts_are_the_methods_own() -> None:
    """`layout_decisions` on the 16x16 planted cells: from float32 products, as many frames are exact as
    with the library's own `improved` layout on a CPU; each rounding moves some frames' labels."""
    benchmark = load_benchmark("map_products_accuracy")
    decisions = benchmark.layout_decisions([(16, 16)], cases_per_cell=1)
    specs, _ = benchmark_suite([(16, 16)], range(9), ("easy", "medium", "weak"), 1)
    extract = layout_extraction(preset("improved").layout)
    exact = 0
    for spec in specs:
        case = generate_case(spec)
        labels = extract(case)
        exact += sum(match_frame(case.truth[f], labels[f]).exact for f in range(spec.frames))
    assert decisions["frames"] == sum(spec.frames for spec in specs)
    assert decisions["exact"]["float32"] == exact
    assert decisions["labels_equal_to_float32"]["float16 maps"] < decisions["frames"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_float16_maps_on_cuda_are_as_close_to_a_float64_svd_as_their_cpu_emulation_promises() -> None:
    """On CUDA the float16 maps are multiplied by cuBLAS with float32 results; on a CPU the rounded
    operands are multiplied in float32. Both stay within the 3e-3 of a float64 SVD that the CPU test
    asks, and CUDA's "auto" products are these. On an H100: 1.4e-3 on CUDA, 7e-4 on a CPU, and the two
    1.2e-3 apart (TF32 products on CUDA: 8e-4; benchmarks/RESULTS.md)."""
    maps = _planted_maps()
    on_cpu, _ = top_components(maps, products="float16")
    on_cuda, _ = top_components(maps.cuda(), products="float16")
    exact = exact_components(maps)[0]
    assert _relative_error(on_cpu, exact) < 3e-3
    assert _relative_error(on_cuda.cpu(), exact) < 3e-3
    assert torch.equal(top_components(maps.cuda(), products="auto")[0], on_cuda)


def test_top_components_survive_rank_deficient_and_flat_maps() -> None:
    blocks = torch.zeros(64, 64)
    blocks[:32, :32], blocks[32:, 32:] = 1 / 32, 1 / 32  # rank 2, one non-zero centred component
    scores, singular = top_components(torch.stack([blocks, torch.full((64, 64), 1 / 64)]), k=3)
    assert torch.isfinite(scores).all()
    assert singular[0, 0] == pytest.approx(1.0, rel=1e-5) and singular[0, 1:].abs().max() < 1e-3
    assert singular[1].abs().max() < 1e-6  # a uniform map has nothing left after centring


def test_concentration_extremes_and_ordering() -> None:
    uniform = torch.ones(8, 8)
    one_hot = torch.zeros(8, 8)
    one_hot[2, 5] = 3.0
    blob = torch.zeros(8, 8)
    blob[2:5, 3:6] = 1.0
    stats = concentration_stats(torch.stack([uniform, blob, one_hot]))
    mean, entropy, top, peak, spread, gini = stats.T
    torch.testing.assert_close(mean, torch.tensor([1.0, 9 / 64, 3 / 64]))
    torch.testing.assert_close(entropy, torch.tensor([1.0, math.log(9) / math.log(64), 0.0]))
    torch.testing.assert_close(peak, torch.tensor([1.0, 64 / 9, 64.0]))
    torch.testing.assert_close(top, torch.tensor([4 / 64, 4 / 9, 1.0]))  # ceil(5% of 64) = 4 positions
    torch.testing.assert_close(gini, torch.tensor([0.0, 55 / 64, 63 / 64]))
    # The blob's spread about its centre: 2 of 3 rows/cols are one grid step (1/7) away.
    torch.testing.assert_close(spread, torch.tensor([spread[0].item(), 2 * (2 / 3) / 49, 0.0]))
    assert spread[0] > spread[1] > spread[2]


def test_top_components_of_exactly_low_rank_maps_are_finite() -> None:
    # Six equal blocks and a background (a clean planted scene): a 3-fold repeated singular value, on
    # which float32 LAPACK eigh raised "failed to converge" before the float64 retry.
    case = generate_case(CaseSpec(32, 32, 6, radius=(2, 4), difficulty="clean", seed=3))
    maps = torch.from_numpy(case.self_maps)
    scores, singular = top_components(maps, k=3)
    _, reference = top_components(maps.double(), k=3)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    torch.testing.assert_close(singular.double(), reference, rtol=1e-5, atol=1e-6)


def test_small_eigh_keeps_the_float32_result_where_it_succeeds() -> None:
    gram = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    gram = gram @ gram.transpose(-1, -2)
    for ours, plain in zip(small_eigh(gram), torch.linalg.eigh(gram), strict=True):
        assert torch.equal(ours, plain)


@pytest.mark.parametrize(("grid", "k", "difficulty"), [((16, 16), 1, "medium"), ((30, 52), 1, "easy")])
def test_release_components_are_scikit_learns_on_a_flat_spectrum(
    grid: tuple[int, int], k: int, difficulty: str
) -> None:
    # One object: components 2 and 3 are the map's noise, where any other start or width changes them.
    case = generate_case(CaseSpec(*grid, k, radius=(2, 4), difficulty=difficulty, seed=5))
    attention = case.self_maps[0]
    for dtype, tolerance in ((np.float64, 1e-9), (np.float32, 1e-4)):  # float32: the release's own rounding
        matrix = attention.astype(dtype)
        u, s, _ = randomized_svd(matrix - matrix.mean(axis=0), 3, random_state=0)
        scores, singular = randomized_svd_components(torch.from_numpy(matrix), 3)
        assert scores.dtype == torch.float64
        spectrum = np.linalg.svd(attention - attention.mean(axis=0), compute_uv=False)
        assert spectrum[2] / spectrum[1] > 0.75  # the flat spectrum the test is about
        scale = np.abs(u * s).max()
        np.testing.assert_allclose(scores.numpy(), u * s, atol=tolerance * scale)
        np.testing.assert_allclose(singular.numpy(), s, rtol=tolerance)


def test_release_components_follow_scikit_learns_width_and_iteration_rules() -> None:
    assert (scikit_learn_iterations(3, 1560, 1560), scikit_learn_iterations(3, 16, 16)) == (7, 4)
    generator = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 16, 8, generator=generator, dtype=torch.float64).unbind(0)
    matrix = torch.softmax(q @ k.T, dim=-1)  # 16 tokens: 13 > 10% of 16, and 12 + 10 > 16 directions
    for components in (3, 12):
        u, s, _ = randomized_svd((matrix - matrix.mean(0)).numpy(), components, random_state=0)
        scores, _ = randomized_svd_components(matrix, components)
        np.testing.assert_allclose(scores.numpy(), u * s, atol=1e-10)
    with pytest.raises(ValueError, match="Cannot take 17 components of 16 x 16"):
        randomized_svd_components(matrix, 17)


def test_release_score_components_are_seeded_svd_lowrank_and_leave_the_generator_alone() -> None:
    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 4, 64, 8, generator=generator).unbind(0)
    maps = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    before = torch.random.get_rng_state()
    scores = release_score_components(maps, seed=11)
    assert torch.equal(torch.random.get_rng_state(), before)
    for index in range(4):  # one draw for the batch: each map as the release's own call would give it
        torch.manual_seed(11)
        centred = maps[index] - maps[index].mean(dim=0, keepdim=True)
        u, s, _ = torch.svd_lowrank(centred, q=3, niter=2)
        torch.testing.assert_close(scores[index], u * s, rtol=0, atol=1e-6)
    assert not torch.equal(release_score_components(maps, seed=12), scores)


def test_the_release_score_depends_on_its_draw_and_the_converged_one_does_not() -> None:
    """Why `improved` scores heads with the converged estimator (README, "Estimators")."""
    maps = torch.from_numpy(generate_case(CaseSpec(30, 52, 3, difficulty="medium", seed=3)).self_maps[:1])
    release = [separability(release_score_components(maps, seed), 30, 52)[0, 3].item() for seed in range(10)]
    converged = [separability(top_components(maps, 3, seed=seed)[0], 30, 52)[0, 3].item() for seed in (0, 7)]
    assert max(release) > 1.5 * min(release)
    assert converged[1] == pytest.approx(converged[0], rel=1e-3)
