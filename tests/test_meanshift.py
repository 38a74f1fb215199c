"""numina.method.meanshift gives scikit-learn's MeanShift clusters (bin seeding) and bandwidth estimate."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import MeanShift
from sklearn.cluster import estimate_bandwidth as sklearn_bandwidth

from numina.method.layout import instance_features
from numina.method.meanshift import estimate_bandwidth, mean_shift


def _planted(seed: int, height: int = 30, width: int = 52, blobs: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    components = rng.normal(0, 0.02, (height, width, 3)).astype(np.float32)
    for _ in range(blobs):
        y, x = rng.integers(0, height - 6), rng.integers(0, width - 6)
        components[y : y + 6, x : x + 6] += rng.uniform(0.3, 1.0, 3).astype(np.float32)
    return instance_features(components.reshape(-1, 3), height, width)


def _random(seed: int, height: int, width: int) -> np.ndarray:
    components = np.random.default_rng(seed).normal(size=(height * width, 3)).astype(np.float32)
    return instance_features(components, height, width)


PLANTED = [_planted(seed) for seed in range(6)] + [_planted(9, 16, 16, blobs=2)]
CASES = PLANTED + [_random(seed, 30, 52) for seed in range(3)] + [_random(seed, 8, 8) for seed in range(3)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_same_bandwidth_and_clusters_as_scikit_learn(case: int) -> None:
    features = CASES[case]
    samples = min(1000, len(features))
    expected = sklearn_bandwidth(features, quantile=0.2, n_samples=samples, random_state=0)
    bandwidth = estimate_bandwidth(features, 0.2, samples, seed=0)
    assert bandwidth == pytest.approx(expected, rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Binning data failed": both fall back to every point as a seed
        reference = MeanShift(bandwidth=expected, bin_seeding=True).fit_predict(features)
        labels = mean_shift(features, expected)
    np.testing.assert_array_equal(labels, reference)
    if case < len(PLANTED):
        assert len(np.unique(labels)) > 1  # planted blobs are not all one cluster
