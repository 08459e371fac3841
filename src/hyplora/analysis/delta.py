"""Gromov δ-hyperbolicity of finite metric spaces, exact, vectorised with torch and memory-bounded.

Definitions (Gromov's four-point condition). For points x, y, z, w of a metric space with distance d, let

    S1 >= S2 >= S3  be the three sums  d(x,y) + d(z,w),  d(x,z) + d(y,w),  d(x,w) + d(y,z),  sorted;
    δ(x, y, z, w) = (S1 - S2) / 2;
    δ(X) = max over all quadruples of X of δ(x, y, z, w).

A tree metric has δ = 0; δ <= diam / 2 for every metric space (because S2 >= S1 / 2 by the triangle
inequality), so the *relative* δ,

    δ_rel = 2 δ / diam,        diam = max d(x, y),

lies in [0, 1]: 0 for trees, 1 for four equally spaced points on a great circle (a dense sample of a circle
or sphere under great-circle distance).

How it is computed. With a base point w, the Gromov product is (x|y)_w = (d(x,w) + d(y,w) - d(x,y)) / 2, and

    min((x|z)_w, (y|z)_w) - (x|y)_w = ( d(x,y) + d(z,w) - max(d(x,z) + d(y,w), d(y,z) + d(x,w)) ) / 2,

so, with G_w the matrix of Gromov products at w and (A ⊗ B)[x,y] = max_z min(A[x,z], B[z,y]) the
max-min matrix product,

    δ_w = max_{x,y} ((G_w ⊗ G_w) - G_w)[x, y]

is exactly the largest four-point δ over the quadruples that contain w. The δ of the whole space is
max_w δ_w (the fixed-base-point value δ_w of Khrulkov et al. 2020 for a single w is only a bound:
δ_w <= δ <= 2 δ_w). We visit the base points in index order and give each one only the points after it,
so every quadruple is examined once, with its first point as base: about n^4 / 4 min/max operations
for n points, in blocks of at most ``chunk_elements`` numbers so memory stays bounded whatever n is.
Points repeated in a set (a token occurring twice in a prompt) do not change δ or diam, so
`delta_hyperbolicity_of_points` drops duplicates first.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

# Elements per (rows × columns × inner) block of the max-min product: 2^22 numbers = 32 MiB per float64
# temporary, small enough for any machine and large enough that Python overhead stays small.
DEFAULT_CHUNK_ELEMENTS = 1 << 22


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with ``count`` torch intra-op threads (None: leave the setting alone).

    δ is many small max/min reductions; splitting each across threads gains little, and when another
    process holds a core the threads' barrier waits made float32 40x slower in our measurements (see
    benchmarks/RESULTS.md). One thread per δ computation is fast and stable. Not thread-safe: the
    setting is process-wide.
    """
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@dataclass(frozen=True)
class DeltaResult:
    """δ (four-point condition), the diameter, and δ_rel = 2 δ / diam (NaN when diam = 0)."""

    delta: float
    diameter: float
    n_points: int

    @property
    def relative_delta(self) -> float:
        return 2.0 * self.delta / self.diameter if self.diameter > 0 else float("nan")


def pairwise_distances(points: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Euclidean distance matrix ``d[i, j] = |p_i - p_j|`` of an (n, dim) tensor.

    Computed from coordinate differences, not from ``|a|^2 + |b|^2 - 2 a.b``, whose cancellation makes small
    distances wrong by ~sqrt(eps) |a| — enough to create spurious δ at float32.
    """
    if points.ndim != 2:
        raise ValueError(f"points must be a 2-D (n, dim) tensor, got shape {tuple(points.shape)}")
    points = points.to(dtype)
    return torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")


def _check_distance_matrix(distances: Tensor) -> None:
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"a distance matrix must be square, got shape {tuple(distances.shape)}")
    if not torch.isfinite(distances).all():
        raise ValueError("the distance matrix has NaN or infinite entries")


def delta_at_base_point(
    distances: Tensor, base: int = 0, *, dtype: torch.dtype = torch.float64,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, threads: int | None = 1,
) -> float:
    """δ_w = max_{x,y} ((G_w ⊗ G_w) - G_w)[x,y] for the single base point w = ``base``.

    This is the largest four-point δ over quadruples containing w: the fixed-base-point estimate of
    Khrulkov et al. (2020), which reference implementations report as δ. It satisfies δ_w <= δ <= 2 δ_w.
    """
    _check_distance_matrix(distances)
    n = distances.shape[0]
    if not 0 <= base < n:
        raise ValueError(f"base point {base} out of range for {n} points")
    others = torch.cat([torch.arange(base), torch.arange(base + 1, n)])
    d = distances.to(dtype)
    with torch_threads(threads):
        return _delta_for_base(d[base, others], d[others][:, others], chunk_elements)


def _delta_for_base(distance_to_base: Tensor, distances: Tensor, chunk_elements: int) -> float:
    """Largest four-point δ over quadruples {w, x, y, z}, x, y, z from ``distances`` (w excluded).

    ``distance_to_base[i] = d(w, p_i)``; ``distances`` is the matrix among the p_i.
    """
    m = distances.shape[0]
    if m < 3:
        return 0.0
    # Gromov products (x|y)_w; non-negative by the triangle inequality (up to rounding).
    gromov = 0.5 * (distance_to_base[:, None] + distance_to_base[None, :] - distances)
    # The excess M[x,y] - G[x,y] is symmetric in (x, y), so rows x in [start, stop) need only y >= start.
    rows_per_chunk = max(1, chunk_elements // (m * m))
    best = 0.0
    for start in range(0, m, rows_per_chunk):
        stop = min(m, start + rows_per_chunk)
        g_rows = gromov[start:stop]  # (r, m): G[x, z]
        g_cols = gromov[start:]  # (m - start, m): G[y, z]
        max_min = torch.minimum(g_rows[:, None, :], g_cols[None, :, :]).amax(dim=2)  # (r, m - start)
        excess = (max_min - g_rows[:, start:]).max().item()
        if excess > best:
            best = excess
    return best


def gromov_delta(
    distances: Tensor, *, dtype: torch.dtype = torch.float64, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    threads: int | None = 1,
) -> float:
    """Exact δ = max over all quadruples of (S1 - S2) / 2 (see the module docstring) of a distance matrix.

    ``dtype`` is the precision of the Gromov-product arithmetic (float64 by default: on CPU it measured as
    fast as float32 here, see benchmarks/RESULTS.md; float32 agrees to ~3e-7 in δ_rel); the max-min steps
    themselves are exact selections. Returns 0 for fewer than 4 points. Memory is O(n^2 + chunk_elements).
    ``threads``: torch intra-op threads during the computation (see `torch_threads`; None keeps the setting).
    """
    _check_distance_matrix(distances)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    d = distances.to(dtype)
    n = d.shape[0]
    best = 0.0
    with torch_threads(threads):
        for base in range(n - 3):
            # Quadruples whose first (lowest-index) point is `base`; the later bases never see it again.
            best = max(best, _delta_for_base(d[base, base + 1:], d[base + 1:, base + 1:], chunk_elements))
    return best


def delta_hyperbolicity(
    distances: Tensor, *, dtype: torch.dtype = torch.float64, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    threads: int | None = 1,
) -> DeltaResult:
    """δ, diameter and (via ``.relative_delta``) δ_rel = 2 δ / diam of a distance matrix."""
    delta = gromov_delta(distances, dtype=dtype, chunk_elements=chunk_elements, threads=threads)
    diameter = float(distances.max()) if distances.numel() else 0.0
    return DeltaResult(delta=delta, diameter=diameter, n_points=int(distances.shape[0]))


def unique_points(points: Tensor) -> Tensor:
    """The distinct rows of ``points`` (duplicates leave δ and diam unchanged: they add only zero distances)."""
    return torch.unique(points, dim=0) if points.shape[0] > 1 else points


def delta_hyperbolicity_of_points(
    points: Tensor, *, dtype: torch.dtype = torch.float64, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    threads: int | None = 1,
) -> DeltaResult:
    """δ and δ_rel of a point cloud (n, dim) under Euclidean distance; duplicates removed first.

    Distances are computed in float64 (and rounded to ``dtype`` if that is float32).
    ``n_points`` of the result counts distinct points.
    """
    distinct = unique_points(points.detach())
    return delta_hyperbolicity(pairwise_distances(distinct), dtype=dtype, chunk_elements=chunk_elements,
                               threads=threads)
