"""Reference metric spaces that calibrate relative δ-hyperbolicity (δ_rel = 2 δ / diam).

* ``sphere``: uniform points on the unit sphere S^2 under great-circle distance arccos<x, y>. Dense samples
  approach δ_rel = 1 (four equally spaced points on a great circle give exactly 1, the largest value any
  metric space can have).
* ``tree``: a random recursive tree (node i attaches to a uniform earlier node) with shortest-path distance
  in hops; exactly 0, as for every tree metric.
* ``random_graph``: an Erdős–Rényi graph G(n, p), p = 2 ln(n) / n, largest connected component, hop distance.
* ``gaussian``: i.i.d. standard normal points in R^dim under Euclidean distance, an unstructured cloud like
  a random embedding matrix (dim = the model's embedding size in `hyplora analyze`).

δ_rel of a finite sample grows with the number of points (more quadruples to choose from), so compare a
prompt's value with references of about the prompt's size; `hyplora analyze` calibrates at the median
prompt size and at a dense size.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .delta import delta_hyperbolicity


def sphere_distances(n: int, rng: np.random.Generator, dim: int = 3) -> torch.Tensor:
    """Great-circle distances of ``n`` uniform points on the unit sphere S^(dim-1)."""
    points = rng.standard_normal((n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return torch.from_numpy(np.arccos(np.clip(points @ points.T, -1.0, 1.0)))


def circle_distances(n: int) -> torch.Tensor:
    """Arc-length distances of ``n`` equally spaced points on the unit circle."""
    angles = np.arange(n) * (2.0 * np.pi / n)
    gap = np.abs(angles[:, None] - angles[None, :])
    return torch.from_numpy(np.minimum(gap, 2.0 * np.pi - gap))


def _hop_distances(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    adjacency = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
    return shortest_path(adjacency, directed=False, unweighted=True)


def random_tree_distances(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Hop distances of a random recursive tree on ``n`` nodes."""
    children = np.arange(1, n)
    parents = np.array([rng.integers(0, child) for child in children], dtype=np.int64)
    return torch.from_numpy(_hop_distances(parents, children, n))


def random_graph_distances(n: int, rng: np.random.Generator, edge_probability: float | None = None) -> torch.Tensor:
    """Hop distances within the largest connected component of G(n, p) (p defaults to 2 ln n / n)."""
    p = edge_probability if edge_probability is not None else min(1.0, 2.0 * np.log(n) / n)
    upper = np.triu(rng.random((n, n)) < p, k=1)
    rows, cols = np.nonzero(upper)
    distances = _hop_distances(rows, cols, n)
    reachable = np.isfinite(distances)
    component = np.argmax(reachable.sum(axis=1))
    keep = np.flatnonzero(reachable[component])
    return torch.from_numpy(distances[np.ix_(keep, keep)])


def gaussian_distances(n: int, rng: np.random.Generator, dim: int = 64) -> torch.Tensor:
    points = torch.from_numpy(rng.standard_normal((n, dim)))
    return torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")


REFERENCE_SPACES = {
    "sphere": sphere_distances,
    "tree": random_tree_distances,
    "random_graph": random_graph_distances,
    "gaussian": gaussian_distances,
}


@dataclass(frozen=True)
class ReferenceCalibration:
    space: str
    n_points: int
    relative_deltas: tuple[float, ...]  # one per sample
    mean: float
    std: float
    description: str

    def to_dict(self) -> dict:
        return asdict(self)


_DESCRIPTIONS = {
    "sphere": "uniform points on S^2, great-circle distance",
    "tree": "random recursive tree, hop distance",
    "random_graph": "Erdos-Renyi G(n, 2 ln n / n), largest component, hop distance",
    "gaussian": "standard normal points in R^{dim}, Euclidean distance",
}


def calibrate(n_points: int = 200, n_samples: int = 5, seed: int = 0,
              spaces: tuple[str, ...] = tuple(REFERENCE_SPACES), gaussian_dim: int = 64) -> list[ReferenceCalibration]:
    """δ_rel of ``n_samples`` random instances of each reference space, computed exactly in float64."""
    rng = np.random.default_rng(seed)
    results = []
    for space in spaces:
        make = functools.partial(gaussian_distances, dim=gaussian_dim) if space == "gaussian" else REFERENCE_SPACES[space]
        values = []
        for _ in range(n_samples):
            distances = make(n_points, rng)
            values.append(delta_hyperbolicity(distances, dtype=torch.float64).relative_delta)
        results.append(ReferenceCalibration(space, n_points, tuple(values), float(np.mean(values)),
                                            float(np.std(values)), _DESCRIPTIONS[space].format(dim=gaussian_dim)))
    return results
