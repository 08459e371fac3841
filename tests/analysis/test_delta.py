"""Exact Gromov δ: against a brute-force four-point loop, on trees, circles and spheres, under isometries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hyplora.analysis.delta import (
    delta_at_base_point, delta_hyperbolicity, delta_hyperbolicity_of_points, gromov_delta, pairwise_distances,
)
from hyplora.analysis.references import circle_distances, random_tree_distances, sphere_distances


def brute_force_delta(distances: np.ndarray, base: int | None = None) -> float:
    """max over quadruples of (largest - second largest of the three pair sums) / 2, by explicit loops."""
    n = len(distances)
    best = 0.0
    for quad in itertools.combinations(range(n), 4):
        if base is not None and base not in quad:
            continue
        a, b, c, d = quad
        sums = sorted([distances[a, b] + distances[c, d], distances[a, c] + distances[b, d],
                       distances[a, d] + distances[b, c]])
        best = max(best, (sums[2] - sums[1]) / 2)
    return best


@pytest.mark.parametrize("n", [4, 5, 7, 11, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_euclidean_points(n, seed):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 1 + seed * 3, generator=generator, dtype=torch.float64)
    distances = pairwise_distances(points)
    expected = brute_force_delta(distances.numpy())
    assert gromov_delta(distances, dtype=torch.float64) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert gromov_delta(distances, dtype=torch.float32) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # Tiny chunks exercise the row-blocking and the symmetric (y >= first row) restriction.
    assert gromov_delta(distances, dtype=torch.float64, chunk_elements=5) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_on_random_non_euclidean_metric(seed):
    # Shortest paths of a random weighted complete graph: a general metric, not a Euclidean one.
    from scipy.sparse.csgraph import shortest_path

    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.1, 3.0, size=(13, 13))
    distances = shortest_path(np.triu(weights, 1) + np.triu(weights, 1).T, directed=False)
    expected = brute_force_delta(distances)
    assert expected > 0
    assert gromov_delta(torch.from_numpy(distances), dtype=torch.float64) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("base", [0, 3, 9])
def test_base_point_delta_is_the_largest_over_quadruples_containing_it(base):
    generator = torch.Generator().manual_seed(5)
    distances = pairwise_distances(torch.randn(10, 3, generator=generator, dtype=torch.float64))
    fixed = delta_at_base_point(distances, base, dtype=torch.float64)
    assert fixed == pytest.approx(brute_force_delta(distances.numpy(), base=base), rel=1e-12)
    full = gromov_delta(distances, dtype=torch.float64)
    # Gromov: the four-point condition at one base point with δ_w gives it everywhere with 2 δ_w.
    assert fixed <= full + 1e-12 <= 2 * fixed + 2e-12


@pytest.mark.parametrize("seed", range(4))
def test_zero_on_tree_metrics(seed):
    rng = np.random.default_rng(seed)
    assert gromov_delta(random_tree_distances(60, rng), dtype=torch.float64) == 0.0
    # Weighted tree, float32 arithmetic: zero up to rounding of distances of size ~10.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    n = 50
    parents = [rng.integers(0, child) for child in range(1, n)]
    weights = rng.uniform(0.01, 1.0, n - 1)
    tree = coo_matrix((weights, (parents, range(1, n))), shape=(n, n))
    distances = torch.from_numpy(shortest_path(tree, directed=False))
    result = delta_hyperbolicity(distances, dtype=torch.float32)
    assert result.delta <= 1e-5 * result.diameter
    assert delta_hyperbolicity(distances, dtype=torch.float64).delta <= 1e-12 * result.diameter


def test_zero_on_points_of_a_line():
    points = torch.tensor([[0.0], [0.3], [1.7], [2.0], [5.5], [9.0]], dtype=torch.float64)
    assert gromov_delta(pairwise_distances(points), dtype=torch.float64) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [4, 8, 40, 100])
def test_circle_multiple_of_four_points_reaches_the_maximum_one(n):
    # Four points a quarter-circle apart: sums π + π vs π/2 + π/2 -> δ = π/2 = diam / 2 -> δ_rel = 1.
    result = delta_hyperbolicity(circle_distances(n), dtype=torch.float64)
    assert result.diameter == pytest.approx(math.pi)
    assert result.relative_delta == pytest.approx(1.0, abs=1e-12)


def test_dense_sphere_samples_approach_one_and_never_exceed_it():
    rng = np.random.default_rng(0)
    values = [delta_hyperbolicity(sphere_distances(400, rng), dtype=torch.float64).relative_delta for _ in range(2)]
    # The supremum on S^2 is exactly 1 (a great-circle square); 400 uniform points come within a few percent.
    for value in values:
        assert 0.95 < value <= 1.0 + 1e-12


def test_relative_delta_is_at_most_one_on_random_metrics():
    rng = np.random.default_rng(3)
    for _ in range(5):
        points = torch.from_numpy(rng.standard_normal((30, int(rng.integers(1, 8)))))
        assert 0.0 <= delta_hyperbolicity_of_points(points, dtype=torch.float64).relative_delta <= 1.0 + 1e-12


def test_invariant_under_rotation_translation_and_reordering():
    generator = torch.Generator().manual_seed(11)
    points = torch.randn(25, 6, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    moved = points @ rotation.T + torch.randn(6, generator=generator, dtype=torch.float64) * 10
    permuted = moved[torch.randperm(25, generator=generator)]
    original = delta_hyperbolicity_of_points(points, dtype=torch.float64)
    for other in (moved, permuted):
        result = delta_hyperbolicity_of_points(other, dtype=torch.float64)
        assert result.delta == pytest.approx(original.delta, rel=1e-10)
        assert result.relative_delta == pytest.approx(original.relative_delta, rel=1e-10)


def test_scaling_scales_delta_but_not_relative_delta():
    points = torch.randn(20, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    base = delta_hyperbolicity_of_points(points, dtype=torch.float64)
    scaled = delta_hyperbolicity_of_points(points * 7.5, dtype=torch.float64)
    assert scaled.delta == pytest.approx(7.5 * base.delta, rel=1e-10)
    assert scaled.relative_delta == pytest.approx(base.relative_delta, rel=1e-10)


def test_duplicate_points_change_nothing():
    points = torch.randn(12, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    doubled = torch.cat([points, points[[0, 3, 3, 7]]])
    distinct = delta_hyperbolicity_of_points(points, dtype=torch.float64)
    # Without de-duplication (the full matrix with zero distances) δ is the same too.
    assert gromov_delta(pairwise_distances(doubled), dtype=torch.float64) == pytest.approx(distinct.delta, rel=1e-12)
    result = delta_hyperbolicity_of_points(doubled, dtype=torch.float64)
    assert result.n_points == 12
    assert result.delta == pytest.approx(distinct.delta, rel=1e-12)


def test_small_sets_and_bad_input():
    assert gromov_delta(pairwise_distances(torch.randn(3, 2))) == 0.0
    single = delta_hyperbolicity_of_points(torch.ones(4, 3))
    assert single.delta == 0.0 and single.diameter == 0.0 and math.isnan(single.relative_delta)
    with pytest.raises(ValueError, match="square"):
        gromov_delta(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        gromov_delta(torch.full((4, 4), float("nan")))


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    distances = pairwise_distances(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)))
    single = gromov_delta(distances, threads=1)
    assert torch.get_num_threads() == before
    assert gromov_delta(distances, threads=None) == single
