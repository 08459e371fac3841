"""The HypLoRA branch as pure functions of the input and the adapter's tensors.

Notation: ``x`` the layer input (..., d_in); ``A`` the down-projection weight (r, d_in) (``(r, d_in + 1)`` for
"lorentz-full"); ``B`` the up-projection weight (d_out, r) (``(d_out, r + 1)`` for "lorentz-full"); ``K > 0`` the
curvature parameter of ``L_K`` (curvature ``-1/K``); ``s`` the feature scale; ``scaling = alpha / r``;
``theta_max`` the largest geodesic radius, in units of ``sqrt(K)``, that the input is mapped to.

Every branch runs in float32 at least and returns that dtype; the caller casts back to the base layer's dtype.

"lorentz" (the paper's direct Lorentz low-rank transform), literally:

    u = x / s;  p = exp_o(u) = (sqrt(K) cosh th, sinhc(th) u),  th = |u| / sqrt(K)
    y_s = B A p_s;  y = (sqrt(K + |y_s|^2), y_s)             (time coordinate recomputed)
    branch = scaling * log_o(y)_s = scaling * asinhc(|y_s| / sqrt(K)) * y_s

which is ``BAu`` times two per-token scalars, the form computed here:

    branch = scaling * g2 * g1 * B A u,   g1 = sinhc(min(th, th_max)) * min(th, th_max) / th,
                                          g2 = asinhc(g1 |BAu| / sqrt(K))

"stereographic": the Poincare-ball chart of ``L_K`` instead of exp/log maps. The input, read as a point of the
ball of radius sqrt(K) (its norm capped at ``sqrt(K) tanh(th_max / 2)``, i.e. geodesic radius ``th_max sqrt(K)``),
is lifted by the inverse stereographic projection, B A acts on the space part, the time coordinate is
recomputed, and the stereographic projection maps back:

    lift:    x_s = 2K u / (K - |u|^2)                         = g1 u
    project: p   = sqrt(K) y_s / (sqrt(K) + sqrt(K + |y_s|^2)) = g2 y_s

Both gates tend to 2 and 1/2 at the origin, so every variant starts as LoRA for small inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..geometry import _norm, asinhc, expmap0, logmap0, sinhc, time_coordinate

Tensor = torch.Tensor


def _matmul_t(x: Tensor, weight: Tensor) -> Tensor:
    return x @ weight.t()


def _radius_factor(u: Tensor, K: Tensor, theta_max: float) -> tuple[Tensor, Tensor]:
    """``(g1, |u|)`` with ``g1 = sinh(min(th, th_max)) / th``, ``th = |u| / sqrt(K)`` (the factor of expmap0)."""
    norm = _norm(u)
    theta = norm / K.sqrt()
    clamped = theta.clamp_max(theta_max)
    return sinhc(clamped) * (clamped / theta), norm


def lorentz_branch(x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float) -> Tensor:
    """The "lorentz" branch in its fast form (see module docstring)."""
    u = x / s
    g1, _ = _radius_factor(u, K, theta_max)
    h = _matmul_t(_matmul_t(u, A), B)
    g2 = asinhc(g1 * _norm(h) / K.sqrt())
    return h * (scaling * g1 * g2)


def lorentz_branch_literal(
    x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float
) -> Tensor:
    """The "lorentz" branch computed step by step on the manifold (test reference for `lorentz_branch`)."""
    point = expmap0(x / s, K, max_theta=theta_max)
    space = _matmul_t(_matmul_t(point[..., 1:], A), B)
    mapped = torch.cat([time_coordinate(space, K), space], dim=-1)
    return scaling * logmap0(mapped, K)


def lorentz_full_branch(
    x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float
) -> Tensor:
    """The "lorentz-full" branch: A and B act on whole Lorentz points, time coordinate included.

        p = exp_o(x / s)                         (d_in + 1 coordinates)
        h_s = A p;       h = (sqrt(K + |h_s|^2), h_s)   (r + 1 coordinates)
        y_s = B h;       y = (sqrt(K + |y_s|^2), y_s)
        branch = scaling * log_o(y)_s
    """
    point = expmap0(x / s, K, max_theta=theta_max)
    hidden = _matmul_t(point, A)
    hidden = torch.cat([time_coordinate(hidden, K), hidden], dim=-1)
    space = _matmul_t(hidden, B)
    return space * (scaling * asinhc(_norm(space) / K.sqrt()))


def lorentz_full_branch_literal(
    x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float
) -> Tensor:
    """`lorentz_full_branch` with the final log map written through `geometry.logmap0` (test reference)."""
    point = expmap0(x / s, K, max_theta=theta_max)
    hidden = _matmul_t(point, A)
    hidden = torch.cat([time_coordinate(hidden, K), hidden], dim=-1)
    space = _matmul_t(hidden, B)
    mapped = torch.cat([time_coordinate(space, K), space], dim=-1)
    return scaling * logmap0(mapped, K)


def _ball_lift_factor(u: Tensor, K: Tensor, theta_max: float) -> Tensor:
    """``g1`` with ``x_s = g1 u`` the inverse stereographic projection of ``u`` (norm capped inside the ball)."""
    norm = _norm(u)
    max_norm = K.sqrt() * math.tanh(theta_max / 2.0)
    capped = torch.minimum(norm, max_norm)
    return (2.0 * K / (K - capped * capped)) * (capped / norm)


def stereographic_branch(
    x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float
) -> Tensor:
    """The "stereographic" branch in its fast form (see module docstring)."""
    u = x / s
    g1 = _ball_lift_factor(u, K, theta_max)
    h = _matmul_t(_matmul_t(u, A), B)
    y_norm = g1 * _norm(h)
    sqrt_k = K.sqrt()
    g2 = sqrt_k / (sqrt_k + torch.hypot(y_norm, sqrt_k))
    return h * (scaling * g1 * g2)


def stereographic_branch_literal(
    x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float
) -> Tensor:
    """The "stereographic" branch step by step: ball -> hyperboloid -> B A -> hyperboloid -> ball."""
    u = x / s
    norm = _norm(u)
    max_norm = K.sqrt() * math.tanh(theta_max / 2.0)
    u = u * (torch.minimum(norm, max_norm) / norm)
    sq = (u * u).sum(-1, keepdim=True)
    lifted_space = 2.0 * K * u / (K - sq)
    lifted_time = K.sqrt() * (K + sq) / (K - sq)
    point = torch.cat([lifted_time, lifted_space], dim=-1)
    space = _matmul_t(_matmul_t(point[..., 1:], A), B)
    time = time_coordinate(space, K)
    return scaling * K.sqrt() * space / (K.sqrt() + time)


BRANCHES = {
    "lorentz": lorentz_branch,
    "lorentz-full": lorentz_full_branch,
    "stereographic": stereographic_branch,
}
LITERAL_BRANCHES = {
    "lorentz": lorentz_branch_literal,
    "lorentz-full": lorentz_full_branch_literal,
    "stereographic": stereographic_branch_literal,
}


# --- The paper's released code, reproduced for comparison with published numbers ("compat='reference'"). ---


def reference_curvature(k_raw: Tensor) -> Tensor:
    """The released code's curvature: ``K = softplus(k) + 1e-6``."""
    return F.softplus(k_raw) + 1e-6


def reference_lorentz_branch(x: Tensor, A: Tensor, B: Tensor, k_raw: Tensor, s_raw: Tensor, scaling: float) -> Tensor:
    """The released code's "hyplora" branch, bugs included.

    With ``K = softplus(k) + 1e-6`` it maps ``x`` by ``sqrt(K) sinh(min(|x| / (s sqrt(K)), 12)) x / |x|``, applies
    B A, recomputes the time coordinate as ``sqrt(|y|^2 + 1/K)`` (the curvature bug: the maps use K), and maps
    back with ``sqrt(K) arcosh(y_0 / sqrt(K)) y / |y|``, where arcosh is replaced by ``sqrt(2 max(t - 1, 1e-6))``
    for ``t < 1.01``. For ``K > 1`` and small ``|y|``, ``y_0 / sqrt(K) < 1``: the output's norm is then the
    constant ``sqrt(K) sqrt(2e-6)`` whatever ``|BAx|`` is.
    """
    K = reference_curvature(k_raw)
    sqrt_k = K.sqrt()
    x_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=1e-7)
    space = sqrt_k * torch.sinh(torch.clamp((x_norm / s_raw) / sqrt_k, max=12.0)) * (x / x_norm)
    space = _matmul_t(_matmul_t(space, A), B)
    time = ((space**2).sum(dim=-1, keepdim=True) + 1.0 / torch.clamp(K, min=1e-6)).sqrt()
    space_norm = torch.linalg.vector_norm(space, dim=-1, keepdim=True).clamp(min=1e-7)
    t = time / sqrt_k
    arcosh = torch.where(
        t < 1.01,
        torch.sqrt(2.0 * torch.clamp(t - 1.0, min=1e-6)),
        torch.arccosh(torch.clamp(t, min=1.0 + 1e-7)),
    )
    return scaling * (sqrt_k * arcosh * space / space_norm)


def reference_stereographic_branch(x: Tensor, A: Tensor, B: Tensor, k_raw: Tensor, scaling: float) -> Tensor:
    """The released code's "hyplora_simplified" branch (raw ``k``, no feature scale), conventions as released.

    Lift ``2 x / (1 + k |x|^2)`` (the sphere's inverse stereographic projection), B A, time ``sqrt(|y|^2 + k)``,
    projection ``y / (1 + sqrt(|k|) y_0)``.
    """
    sq = (x * x).sum(dim=-1, keepdim=True)
    space = _matmul_t(_matmul_t(2.0 * x / (1.0 + k_raw * sq), A), B)
    time = ((space**2).sum(dim=-1, keepdim=True) + k_raw).sqrt()
    return scaling * space / (1.0 + torch.sqrt(torch.abs(k_raw)) * time)
