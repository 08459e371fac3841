"""The Lorentz (hyperboloid) model of hyperbolic space.

Conventions (used everywhere in hyplora):

* ``K > 0`` and the manifold is ``L_K = {x in R^{d+1} : <x, x>_L = -K, x_0 > 0}``, of sectional curvature ``-1/K``;
* the Lorentz inner product is ``<x, y>_L = -x_0 y_0 + sum_i x_i y_i`` (time coordinate first);
* the origin is ``o = (sqrt(K), 0, ..., 0)``; a Euclidean vector ``u in R^d`` stands for the tangent vector
  ``(0, u)`` at ``o``.

These are geoopt's ``Lorentz(k=K)`` conventions. Every function computes in float32 at least (float64 stays
float64) and returns the input's dtype. Functions are written so that their small-norm limits have no 0/0
(``sinh(t)/t`` and ``asinh(z)/z`` use their Taylor series near 0) and their gradients stay finite at ``u = 0``.
Distances from the origin use ``asinh(|x_s| / sqrt(K))`` rather than ``arcosh(x_0 / sqrt(K))``, which loses
all precision near the origin in float32.

``expmap0`` bounds the geodesic radius ``|u| / sqrt(K)`` by ``max_theta`` (default `MAX_THETA`): beyond a
radius of about 44 (float32) the coordinates ``sqrt(K) cosh(theta)`` overflow when squared. Up to that bound
``logmap0(expmap0(u)) == u``.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

# Largest geodesic radius, in units of sqrt(K), that expmap0 produces by default. sqrt(K) cosh(40) with
# K = 1e3 is ~4e18, so squared coordinates (~1e37) still fit in float32 (max ~3.4e38).
MAX_THETA = 40.0

# Below this |argument| the series 1 + t^2/6 (sinh t / t) and 1 - z^2/6 (asinh z / z) are exact to float64
# rounding (the next terms are t^4/120 and 3 z^4/40).
_SERIES_CUTOFF = 1e-4
# Floor for squared norms before sqrt: keeps d|u|/du finite at u = 0 (the clamp has zero gradient there).
_TINY_SQUARE = 1e-30


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half and bfloat16 are promoted)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _as_tensor(K, like: Tensor) -> Tensor:
    """Curvature as a tensor broadcastable against ``like[..., :1]``."""
    K = torch.as_tensor(K, dtype=like.dtype, device=like.device)
    return K.reshape(1) if K.dim() == 0 else K


def sinhc(theta: Tensor) -> Tensor:
    """``sinh(theta) / theta`` for ``theta >= 0``, equal to 1 at 0, with finite gradients."""
    small = theta < _SERIES_CUTOFF
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 1.0 + theta * theta / 6.0, torch.sinh(safe) / safe)


def asinhc(z: Tensor) -> Tensor:
    """``asinh(z) / z`` for ``z >= 0``, equal to 1 at 0, with finite gradients."""
    small = z < _SERIES_CUTOFF
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1.0 - z * z / 6.0, torch.asinh(safe) / safe)


def _norm(v: Tensor) -> Tensor:
    """Euclidean norm over the last axis (keepdim), with a finite gradient at 0."""
    return (v * v).sum(dim=-1, keepdim=True).clamp_min(_TINY_SQUARE).sqrt()


def lorentz_inner(x: Tensor, y: Tensor, keepdim: bool = False) -> Tensor:
    """Lorentz inner product ``<x, y>_L = -x_0 y_0 + sum_{i>=1} x_i y_i``."""
    dtype = compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    inner = -x[..., :1] * y[..., :1] + (x[..., 1:] * y[..., 1:]).sum(dim=-1, keepdim=True)
    return inner if keepdim else inner.squeeze(-1)


def time_coordinate(xs: Tensor, K) -> Tensor:
    """Time coordinate of the point of ``L_K`` with space part ``xs``: ``x_0 = sqrt(K + |xs|^2)`` (keepdim).

    Computed as ``hypot(|xs|, sqrt(K))`` so that it does not overflow where ``|xs|^2`` would.
    """
    out_dtype = xs.dtype
    xs = xs.to(compute_dtype(xs))
    K = _as_tensor(K, xs)
    return torch.hypot(torch.linalg.vector_norm(xs, dim=-1, keepdim=True), K.sqrt()).to(out_dtype)


def project(x: Tensor, K) -> Tensor:
    """Project onto ``L_K`` by recomputing the time coordinate from the space part: ``(sqrt(K + |x_s|^2), x_s)``."""
    xs = x[..., 1:]
    return torch.cat([time_coordinate(xs, K), xs], dim=-1)


def expmap0(u: Tensor, K, max_theta: float = MAX_THETA) -> Tensor:
    """Exponential map at the origin: the tangent vector ``(0, u)`` to a point of ``L_K``.

    With ``theta = |u| / sqrt(K)``::

        exp_o(u) = ( sqrt(K) cosh(theta),  sqrt(K) sinh(theta) u / |u| )
                 = ( sqrt(K) cosh(theta),  sinhc(theta) u ),      sinhc(t) = sinh(t) / t

    ``theta`` is clamped to ``max_theta`` (the point keeps the direction of ``u``). Returns ``(..., d + 1)``.
    """
    out_dtype = u.dtype
    u = u.to(compute_dtype(u))
    K = _as_tensor(K, u)
    sqrt_k = K.sqrt()
    theta = _norm(u) / sqrt_k
    clamped = theta.clamp_max(max_theta)
    # sinh(clamped) / theta: sinhc(theta) below the bound; above it, u shrinks onto the bound.
    space_factor = sinhc(clamped) * (clamped / theta)
    time = sqrt_k * torch.cosh(clamped)
    return torch.cat([time, u * space_factor], dim=-1).to(out_dtype)


def logmap0(x: Tensor, K) -> Tensor:
    """Logarithmic map at the origin, returning the space part ``u`` of the tangent vector ``(0, u)``.

    For ``x`` on ``L_K``, with ``z = |x_s| / sqrt(K)`` (so that ``z = sinh(theta)``)::

        log_o(x) = sqrt(K) arcosh(x_0 / sqrt(K)) x_s / |x_s| = asinhc(z) x_s,     asinhc(z) = asinh(z) / z

    Only the space part is read (the asinh form is exact on the manifold and stable near the origin).
    """
    out_dtype = x.dtype
    xs = x[..., 1:].to(compute_dtype(x))
    K = _as_tensor(K, xs)
    z = _norm(xs) / K.sqrt()
    return (xs * asinhc(z)).to(out_dtype)


def distance0(x: Tensor, K) -> Tensor:
    """Geodesic distance from the origin: ``d(o, x) = sqrt(K) asinh(|x_s| / sqrt(K))`` (no keepdim)."""
    out_dtype = x.dtype
    xs = x[..., 1:].to(compute_dtype(x))
    K = _as_tensor(K, xs)
    sqrt_k = K.sqrt()
    # vector_norm (not _norm's floored version) so that the origin is at distance exactly 0; its gradient at
    # 0 is 0, and asinh is smooth there.
    return (sqrt_k * torch.asinh(torch.linalg.vector_norm(xs, dim=-1, keepdim=True) / sqrt_k)).squeeze(-1).to(out_dtype)


def distance(x: Tensor, y: Tensor, K) -> Tensor:
    """Geodesic distance ``d(x, y) = sqrt(K) arcosh(-<x, y>_L / K)`` (no keepdim).

    Written as ``sqrt(K) * 2 asinh(|x - y|_L / (2 sqrt(K)))`` with the Lorentz norm of the chord, which is
    accurate for nearby points where arcosh of a number close to 1 is not.
    """
    out_dtype = x.dtype
    dtype = compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    K = _as_tensor(K, x)
    chord_sq = lorentz_inner(x - y, x - y, keepdim=True).clamp_min(0.0)
    sqrt_k = K.sqrt()
    return (2.0 * sqrt_k * torch.asinh(chord_sq.sqrt() / (2.0 * sqrt_k))).squeeze(-1).to(out_dtype)
