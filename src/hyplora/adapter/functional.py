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

which is ``BAu`` times two per-token scalars, the form computed by the fast path:

    branch = scaling * g2 * g1 * B A u,   g1 = sinhc(min(th, th_max)) * min(th, th_max) / th,
                                          g2 = asinhc(g1 |BAu| / sqrt(K))

with ``|BAu| = sqrt(a^T (B^T B) a)``, ``a = A u``, and a written-out backward (`_GatedLowRank`). The
``*_literal`` functions compute the same branches step by step on the manifold; tests hold the two together.

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

from . import kernels
from ..geometry import _norm, asinhc, expmap0, logmap0, sinhc, time_coordinate

Tensor = torch.Tensor


def _matmul_t(x: Tensor, weight: Tensor) -> Tensor:
    return x @ weight.t()


# ----------------------------------------------------------------------------------------- the fast path
# Every branch has the form  branch = Z @ B^T  where Z (tokens x r, or r + 1) is a function of small
# per-token quantities: a = x A^T (r numbers), |x| (one number), and the r x r Gram matrix B^T B, which gives
# |B z| = sqrt(z^T (B^T B) z) without materialising B z. So the only passes over d-sized activations are the
# two matmuls LoRA does anyway plus one norm of x, and the only saved d-sized tensor is x itself, in its own
# dtype (the custom function below recasts it in backward instead of keeping a float32 copy alive).


def _sinhc_prime(theta: Tensor) -> Tensor:
    """d/dt (sinh t / t) = (t cosh t - sinh t) / t^2; its Taylor series below 0.5 (the closed form cancels)."""
    small = theta < 0.5
    t = torch.where(small, torch.ones_like(theta), theta)
    t2 = theta * theta
    series = theta * (1 / 3 + t2 * (1 / 30 + t2 * (1 / 840 + t2 * (1 / 45360 + t2 / 3991680))))
    return torch.where(small, series, (t * torch.cosh(t) - torch.sinh(t)) / (t * t))


# asinh(z) / z = sum_k c_k z^(2k), c_k = (-1)^k (2k)! / (4^k (k!)^2 (2k + 1)); the derivative's coefficients:
_ASINHC_PRIME_COEFFICIENTS = [
    2 * k * (-1) ** k * math.factorial(2 * k) / (4**k * math.factorial(k) ** 2 * (2 * k + 1)) for k in range(1, 17)
]


def _asinhc_prime(z: Tensor) -> Tensor:
    """d/dz (asinh z / z) = (z / sqrt(1 + z^2) - asinh z) / z^2; its Taylor series (to z^31) below 0.3."""
    small = z < 0.3
    t = torch.where(small, torch.ones_like(z), z)
    z2 = z * z
    series = torch.zeros_like(z)
    for coefficient in reversed(_ASINHC_PRIME_COEFFICIENTS):
        series = series * z2 + coefficient
    return torch.where(small, series * z, (t / torch.sqrt(1 + t * t) - torch.asinh(t)) / (t * t))


def _lorentz_gates(norm_u: Tensor, m: Tensor, K: Tensor, theta_max: float, derivatives: bool = True):
    """"lorentz" gates with their partial derivatives, per token.

    ``g1 = sinh(min(t, t_max)) / t`` with ``t = n / sqrt(K)``; ``G = g1 asinhc(g1 m / sqrt(K))``.
    Returns ``(G, dG/dn, dG/dm, dG/dK)``, or ``(G,)`` without derivatives.
    """
    sqrt_k = K.sqrt()
    theta = norm_u.clamp_min(1e-30) / sqrt_k
    clamped = theta > theta_max
    safe = theta.clamp_max(theta_max)
    g1 = torch.where(clamped, math.sinh(theta_max) / theta, sinhc(safe))
    if not derivatives:
        return (g1 * asinhc(g1 * m / sqrt_k),)
    dg1_dtheta = torch.where(clamped, -g1 / theta, _sinhc_prime(safe))
    z = g1 * m / sqrt_k
    g2 = asinhc(z)
    dg2_dz = _asinhc_prime(z)
    dG_dg1 = g2 + g1 * dg2_dz * m / sqrt_k
    dG_dn = dG_dg1 * dg1_dtheta / sqrt_k
    dG_dm = g1 * g1 * dg2_dz / sqrt_k
    dG_dK = -(g1 * dg2_dz * z + dG_dg1 * dg1_dtheta * theta) / (2 * K)
    return g1 * g2, dG_dn, dG_dm, dG_dK


def _stereographic_gates(norm_u: Tensor, m: Tensor, K: Tensor, theta_max: float, derivatives: bool = True):
    """"stereographic" gates with their partial derivatives, per token.

    ``g1 = 2K / (K - n^2)`` (n capped at ``rho = sqrt(K) tanh(t_max / 2)``, beyond which
    ``g1 = sqrt(K) sinh(t_max) / n``); ``G = g1 sqrt(K) / (sqrt(K) + sqrt(K + (g1 m)^2))``.
    Returns ``(G, dG/dn, dG/dm, dG/dK)``, or ``(G,)`` without derivatives.
    """
    sqrt_k = K.sqrt()
    n = norm_u.clamp_min(1e-30)
    capped = n >= sqrt_k * math.tanh(theta_max / 2.0)
    inside = torch.minimum(n, sqrt_k * math.tanh(theta_max / 2.0))
    gap = K - inside * inside
    g1 = torch.where(capped, sqrt_k * math.sinh(theta_max) / n, 2.0 * K / gap)
    if not derivatives:
        return (g1 * sqrt_k / (sqrt_k + torch.hypot(g1 * m, sqrt_k)),)
    dg1_dn = torch.where(capped, -g1 / n, 4.0 * K * inside / (gap * gap))
    dg1_dK = torch.where(capped, g1 / (2.0 * K), -2.0 * inside * inside / (gap * gap))
    w = g1 * m
    root = torch.hypot(w, sqrt_k)  # sqrt(K + w^2)
    denom = sqrt_k + root
    g2 = sqrt_k / denom
    dg2_dw = -sqrt_k * (w / root) / (denom * denom)
    dg2_dK = w * w / (2.0 * sqrt_k * root * denom * denom)
    dG_dg1 = g2 + g1 * dg2_dw * m
    return g1 * g2, dG_dg1 * dg1_dn, g1 * g1 * dg2_dw, g1 * dg2_dK + dG_dg1 * dg1_dK


_GATES = {"lorentz": _lorentz_gates, "stereographic": _stereographic_gates}
GATED_VARIANTS = frozenset([*_GATES, "lorentz-full"])


def _gate_coefficients(n, m, K, s, variant: str, scaling: float, theta_max: float, with_coefficients: bool):
    """Per token (keepdim): ``c G / s``, and for the backward, with ``c = scaling``, the columns of

        [c G / s,  k_m = c dG/dm / (m s^3),  k_n = c dG/dn / (n s^3),  k_K = c K dG/dK / s,
         k_s = -(c G / s + k_m m^2 s^2 + c dG/dn n / s)]

    (what `kernels.gate_forward` computes in one kernel). ``n = |x| / s``, ``m = |B A x| / s``.
    """
    gates = _GATES[variant](n, m, K, theta_max, derivatives=with_coefficients)
    cG_s = scaling * gates[0] / s
    if not with_coefficients:
        return cG_s, None
    _, dG_dn, dG_dm, dG_dK = gates
    s3 = s * s * s
    k_m = scaling * dG_dm / (m * s3)
    k_n = scaling * dG_dn / (n.clamp_min(1e-30) * s3)
    k_K = scaling * K * dG_dK / s
    k_s = -(cG_s + k_m * m * m * s * s + scaling * dG_dn * n / s)
    return cG_s, torch.cat([cG_s, k_m, k_n, k_K, k_s], dim=-1)


def _gated_forward(x, A, B, log_ratios, k0, s0, variant: str, scaling: float, theta_max: float, with_coefficients):
    """``(branch, Z, a_raw, coefficients, a_raw B^T B)`` with ``a_raw = x A^T`` and ``Z = c G a`` (rank-sized);
    the last two are None without coefficients."""
    shape = x.shape
    x_cast = x.reshape(-1, shape[-1]).to(A.dtype)
    a_raw = x_cast @ A.t()
    norm_x = torch.linalg.vector_norm(x_cast, dim=-1)
    if _OPAQUE_UNDER_COMPILE and kernels.is_compiling():
        z, coef, gram_a = torch.ops.hyplora.gated_terms(
            a_raw, norm_x, B, log_ratios, float(k0), float(s0), variant, float(scaling), float(theta_max))
        if not with_coefficients:
            coef = gram_a = None
    else:  # eager: cuBLAS's Gram matrix costs less host time than a second Triton launch (see `kernels`)
        z, coef, gram_a = _gated_terms(a_raw, norm_x, B.t() @ B, log_ratios, k0, s0, variant, scaling, theta_max,
                                       with_coefficients)
    out = z @ B.t()
    return out.reshape(*shape[:-1], B.shape[0]), z, a_raw, coef, gram_a


def _gated_terms(a_raw, norm_x, gram, log_ratios, k0, s0, variant: str, scaling: float, theta_max: float,
                 with_coefficients: bool):
    """``(Z, coefficients, a_raw B^T B)`` (see `_gate_coefficients`; the last two None without coefficients):
    the Triton kernel where it applies, else torch. ``a_raw B^T B`` gives ``|B a|`` here and is saved for the
    backward, which would otherwise multiply by the Gram matrix again."""
    if kernels.supports(a_raw.device, gram.dtype, gram.shape[0], variant):
        return kernels.gate_forward(a_raw, norm_x, gram, log_ratios, k0, s0, variant, scaling, theta_max,
                                    with_coefficients)
    K, s = _curvature_and_scale(log_ratios, k0, s0)
    n = norm_x.unsqueeze(-1) / s
    gram_a = a_raw @ gram
    m = (gram_a * a_raw).sum(dim=-1, keepdim=True).clamp_min(1e-30).sqrt() / s  # |B a| / s, floored as in the kernel
    cG_s, coef = _gate_coefficients(n, m, K, s, variant, scaling, theta_max, with_coefficients)
    return a_raw * cG_s, coef, (gram_a if with_coefficients else None)


def _curvature_and_scale(log_ratios: Tensor, k0: float, s0: float) -> tuple[Tensor, Tensor]:
    """``K = k0 exp(rho_k)`` and ``s = s0 exp(rho_s)`` from ``log_ratios = (rho_k, rho_s)``, as 1-element tensors."""
    return k0 * torch.exp(log_ratios[0:1]), s0 * torch.exp(log_ratios[1:2])


def _log_ratio_grad(pair: Tensor, log_ratios: Tensor) -> Tensor:
    """The two summed gradients as the gradient of ``log_ratios`` (no extra kernel where shapes and dtypes agree)."""
    if pair.shape == log_ratios.shape and pair.dtype == log_ratios.dtype:
        return pair
    return pair.reshape(log_ratios.shape).to(log_ratios.dtype)


def _gated_backward_torch(q, a_raw, coef, gram_a, B, base, in_place: bool = False):
    """``(P, w, base + B M, rho)`` of `_GatedLowRank.backward` with ``q = grad_out B`` and ``base = grad_out^T Z``
    (see there), in torch; ``in_place`` adds into ``base`` itself (no copy of it)."""
    scaled = (q * a_raw).sum(dim=-1, keepdim=True) * coef  # qa times each coefficient
    beta = scaled[:, 1:2]
    p = torch.addcmul(q * coef[:, :1], beta, gram_a)
    m = torch.mm((a_raw * beta).t(), a_raw)
    grad_B = base.addmm_(B, m) if in_place else torch.addmm(base, B, m)
    return p, scaled[:, 2], grad_B, scaled[:, 3:].sum(dim=0)


W_TERM_FROM_BITS = True  # see `_w_term_input`; benchmarks/train_step.py "+wcast" times the cast instead


def _w_term_input(x: Tensor, x_cast: Tensor) -> Tensor:
    """The input as dL/dx's ``w x`` term reads it: ``x_cast`` (x in the adapter's float32), or under torch.compile,
    for a bfloat16 x, x's bits moved up into float32 (exact: the same values).

    Written as a cast, the term is the same graph node as ``x_cast``, which the GEMM for dL/dA needs in memory;
    inductor's kernel for dL/dx then reads that float32 copy, 4 bytes per element, where the bit shift lets it read
    x itself, 2 (at the 8B shape's down projection, 58 against 29 MB). On an H200 that took inductor's kernels from
    1411 to 1305 us per compiled training step of benchmarks/train_step.py (RESULTS.md, eleventh session).
    """
    if W_TERM_FROM_BITS and x.dtype == torch.bfloat16 and x_cast.dtype == torch.float32 and kernels.is_compiling():
        return (x.reshape(x_cast.shape).view(torch.int16).to(torch.int32) << 16).view(torch.float32)
    return x_cast


class _GatedLowRank(torch.autograd.Function):
    """``scaling * G(|u|, |B A u|) * B A u`` with ``u = x / s``: the "lorentz" and "stereographic" branches.

    ``K = k0 exp(rho_k)`` and ``s = s0 exp(rho_s)``, ``log_ratios = (rho_k, rho_s)`` (the layer's parameterisation;
    gradients go to the log-ratios).
    One autograd node per layer, like LoRA's two matmuls. The forward also computes five per-token
    coefficients (`_gate_coefficients`; on CUDA in the Triton kernel of `kernels`), so that the backward is
    LoRA's three matmuls plus a few rank-sized torch operations; only x (in its own dtype), ``a_raw = x A^T``,
    ``Z`` and ``a_raw B^T B`` (rank-sized) and the coefficients are saved. Under torch.compile the rank-sized
    part of the backward is one opaque operation too (two Triton launches on a GPU, `kernels.gate_backward`,
    instead of a handful of small cuBLAS GEMMs, their split-K reductions and inductor kernels; the torch
    operations under ``torch.use_deterministic_algorithms(True)``).
    """

    @staticmethod
    def forward(ctx, x, A, B, log_ratios, k0: float, s0: float, variant: str, scaling: float, theta_max: float):
        out, z, a_raw, coef, gram_a = _gated_forward(x, A, B, log_ratios, k0, s0, variant, scaling, theta_max,
                                                     True)
        ctx.save_for_backward(x, A, B, log_ratios, a_raw, z, coef, gram_a)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # Per token, with q = grad_out B and qa = <q, a_raw> (dL/dG = c qa / s):
        #   P = dL/d a_raw = (c G / s) q + qa k_m (B^T B) a_raw,   w = qa k_n,
        #   dL/dx = P A + w x,   dL/dA = P^T x,   dL/dB = grad_out^T Z + B (a_raw^T diag(qa k_m) a_raw),
        #   dL/d rho_k = sum qa k_K,   dL/d rho_s = sum qa k_s.
        x, A, B, log_ratios, a_raw, z, coef, gram_a = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # torch.mm and skipped no-op casts: this runs once per layer and step, and its cost is host dispatch
        x_cast = x.reshape(-1, x.shape[-1])
        if x_cast.dtype != A.dtype:
            x_cast = x_cast.to(A.dtype)
        grad_out = grad_out.reshape(-1, B.shape[0])
        if grad_out.dtype != A.dtype:
            grad_out = grad_out.to(A.dtype)
        q = torch.mm(grad_out, B)
        base = torch.mm(grad_out.t(), z) if needs[2] else torch.zeros_like(B)  # dL/dB but for the Gram term
        if _OPAQUE_UNDER_COMPILE and kernels.is_compiling():
            p, w, grad_B, rho_pair = torch.ops.hyplora.gated_backward_terms(q, a_raw, coef, gram_a, B, base)
        else:  # eager: a Triton launch on autograd's thread costs more host time than these (see `kernels`)
            p, w, grad_B, rho_pair = _gated_backward_torch(q, a_raw, coef, gram_a, B, base, in_place=True)
        grad_x = grad_A = grad_log_ratios = None
        if needs[1]:
            grad_A = torch.mm(p.t(), x_cast)
        if needs[0]:
            # in place: one float32 x-sized temporary fewer
            grad_x = torch.mm(p, A).addcmul_(_w_term_input(x, x_cast), w.unsqueeze(-1))
            del x_cast
            grad_x = grad_x.to(x.dtype).view(x.shape)
        if not needs[2]:
            grad_B = None
        if needs[3]:
            grad_log_ratios = _log_ratio_grad(rho_pair, log_ratios)
        return grad_x, grad_A, grad_B, grad_log_ratios, None, None, None, None, None


def _lorentz_full_point(a_raw, a_time, norm_x, K, s, theta_max: float):
    """The (r + 1)-point ``P = (sqrt(K + |h|^2), h)`` of "lorentz-full" and the quantities on the way to it."""
    sqrt_k = K.sqrt()
    n = norm_x.unsqueeze(-1) / s
    theta = n.clamp_min(1e-30) / sqrt_k
    clamped = theta > theta_max
    c = theta.clamp_max(theta_max)
    g1 = torch.where(clamped, math.sinh(theta_max) / theta, sinhc(c))
    kcosh = sqrt_k * torch.cosh(c)
    g1_s = g1 / s
    h = a_raw * g1_s + kcosh * a_time
    t = torch.hypot(torch.linalg.vector_norm(h, dim=-1, keepdim=True), sqrt_k)
    return sqrt_k, n, theta, clamped, c, g1, kcosh, g1_s, t, h, torch.cat([t, h], dim=-1)


def _lorentz_full_terms(a_raw, a_time, norm_x, gram, K, s, scaling: float, theta_max: float, with_coefficients):
    """"lorentz-full" in rank space: ``(Z, terms)`` with ``Z = scaling g2 P`` for the (r + 1)-point ``P``.

    With ``n = |x| / s``, ``theta = n / sqrt(K)``, ``c = min(theta, theta_max)``, ``g1 = sinh(c) / theta``:

        h = a_raw g1 / s + sqrt(K) cosh(c) a_time,   P = (sqrt(K + |h|^2), h),
        m = |B P| = sqrt(P^T (B^T B) P),   g2 = asinhc(m / sqrt(K)).

    ``terms`` (for the backward; what `kernels.lorentz_full_forward` computes in one kernel): ``P``, ``P B^T B``,
    per-token scalars ``[scaling g2, kappa = scaling asinhc'(z) / (sqrt(K) m), g1 / s, sqrt(K) cosh(c)]`` and a
    (4 x 3) matrix per token mapping ``(sigma, tau, rho, <q, P>)`` (see `_LorentzFullLowRank.backward`) to
    ``(w, K dL/dK, s dL/ds)``.
    """
    sqrt_k, n, theta, clamped, c, g1, kcosh, g1_s, t, h, point = _lorentz_full_point(
        a_raw, a_time, norm_x, K, s, theta_max)
    gram_point = point @ gram
    m = (point * gram_point).sum(dim=-1, keepdim=True).clamp_min(1e-30).sqrt()
    z = m / sqrt_k
    g2 = asinhc(z)
    Z = point * (scaling * g2)
    if not with_coefficients:
        return Z, None
    g2_prime = _asinhc_prime(z)
    e1_s = torch.where(clamped, -g1 / theta, _sinhc_prime(c)) / s  # (dg1/dtheta) / s
    e2 = torch.where(clamped, torch.zeros_like(c), sqrt_k * torch.sinh(c))  # d(sqrt(K) cosh c)/dtheta
    e3 = 1.0 / (s * s * sqrt_k * n.clamp_min(1e-30))  # dtheta/d|x| / |x|
    zero = torch.zeros_like(theta)
    coefficients = torch.stack([
        torch.cat([e1_s * e3, -0.5 * theta * e1_s, -theta * e1_s - g1_s], dim=-1),  # sigma
        torch.cat([e2 * e3, -0.5 * theta * e2 + 0.5 * kcosh, -theta * e2], dim=-1),  # tau
        torch.cat([zero, K / (2.0 * t), zero], dim=-1),  # rho
        torch.cat([zero, -0.5 * scaling * g2_prime * z, zero], dim=-1),  # <q, P>
    ], dim=1)
    scalars = torch.cat([scaling * g2, scaling * g2_prime / (sqrt_k * m), g1_s, kcosh], dim=-1)
    return Z, (point, gram_point, scalars, coefficients)


def _lorentz_full_forward(x, A, B, log_ratios, k0, s0, scaling: float, theta_max: float, with_coefficients):
    """``(branch, Z, a_raw, terms)`` of "lorentz-full", ``a_raw = x A[:, 1:]^T``."""
    shape = x.shape
    x_cast = x.reshape(-1, shape[-1]).to(A.dtype)
    a_raw = x_cast @ A[:, 1:].t()
    norm_x = torch.linalg.vector_norm(x_cast, dim=-1)
    a_time = A[:, 0].contiguous()
    if _OPAQUE_UNDER_COMPILE and kernels.is_compiling():
        Z, *terms = torch.ops.hyplora.lorentz_full_terms(
            a_raw, a_time, norm_x, B, log_ratios, float(k0), float(s0), float(scaling), float(theta_max))
        terms = tuple(terms) if with_coefficients else None
    else:
        Z, terms = _lorentz_full_kernel_or_torch(a_raw, a_time, norm_x, B.t() @ B, log_ratios, k0, s0, scaling,
                                                 theta_max, with_coefficients)
    out = Z @ B.t()
    return out.reshape(*shape[:-1], B.shape[0]), Z, a_raw, terms


def _lorentz_full_kernel_or_torch(a_raw, a_time, norm_x, gram, log_ratios, k0, s0, scaling: float,
                                  theta_max: float, with_coefficients: bool):
    """``(Z, terms)`` of `_lorentz_full_terms`: the Triton kernel where it applies, else torch."""
    if kernels.supports(a_raw.device, gram.dtype, gram.shape[0], "lorentz-full"):
        return kernels.lorentz_full_forward(a_raw, a_time, norm_x, gram, log_ratios, k0, s0, scaling, theta_max,
                                            with_coefficients)
    K, s = _curvature_and_scale(log_ratios, k0, s0)
    return _lorentz_full_terms(a_raw, a_time, norm_x, gram, K, s, scaling, theta_max, with_coefficients)


# ------------------------------------------------------------------------- opaque operations for torch.compile
# Traced into a compiled graph, the gate formulas (Taylor series, their derivatives, the backward coefficients)
# are hundreds of elementwise operations per layer; inductor then takes minutes to generate code for a model
# (benchmarks/RESULTS.md: 182 s against LoRA's 34 s for the 8B-shaped model of train_step.py, on a CPU). As
# torch.library operations they are one node each, whose implementation (the Triton kernel on a GPU) runs at
# run time, CUDA graphs included.
def _atomic_sums(device: torch.device, dtype: torch.dtype, points: int, variant: str) -> bool:
    """Whether the compiled path's Gram matrix and backward sums use the Triton kernels, whose float32 atomic adds
    make the last bits depend on scheduling: not under ``torch.use_deterministic_algorithms(True)``."""
    return kernels.supports(device, dtype, points, variant) and not torch.are_deterministic_algorithms_enabled()


def _gram(B: Tensor, points: int, variant: str) -> Tensor:
    """``B^T B``; on the Triton path one launch (`kernels.gram_matrix`) instead of cuBLAS's GEMM and its split-K
    reduction (inside a CUDA graph, launches cost GPU time, not host time)."""
    if _atomic_sums(B.device, B.dtype, points, variant):
        return kernels.gram_matrix(B.contiguous())
    return B.t() @ B


def _gated_terms_op(a_raw, norm_x, B, log_ratios, k0, s0, variant, scaling, theta_max):
    gram = _gram(B, a_raw.shape[1], variant)
    return _gated_terms(a_raw, norm_x, gram, log_ratios, k0, s0, variant, scaling, theta_max, True)


def _gated_terms_fake(a_raw, *_):
    return torch.empty_like(a_raw), a_raw.new_empty((a_raw.shape[0], 5)), torch.empty_like(a_raw)


def _gated_backward_terms_op(q, a_raw, coef, gram_a, B, base):
    if _atomic_sums(q.device, B.dtype, q.shape[1], "lorentz"):
        return kernels.gate_backward(q.contiguous(), a_raw, coef, gram_a, B.contiguous(), base.contiguous())
    p, w, grad_B, rho_pair = _gated_backward_torch(q, a_raw, coef, gram_a, B, base)
    return p, w.contiguous(), grad_B, rho_pair


def _gated_backward_terms_fake(q, a_raw, coef, gram_a, B, base):
    return torch.empty_like(q), q.new_empty((q.shape[0],)), torch.empty_like(B), q.new_empty((2,))


def _lorentz_full_backward_terms_op(q, a_raw, point, gram_point, scalars, coefficients, a_time, B, base):
    if _atomic_sums(q.device, B.dtype, q.shape[1], "lorentz-full"):
        return kernels.lorentz_full_backward(q.contiguous(), a_raw, point, gram_point, scalars, coefficients, a_time,
                                             B.contiguous(), base.contiguous())
    p_a, w, grad_B, sums = _lorentz_full_backward_torch(q, a_raw, point, gram_point, scalars, coefficients, a_time,
                                                        B, base)
    return p_a, w.contiguous(), grad_B, sums


def _lorentz_full_backward_terms_fake(q, a_raw, *_rest):
    B = _rest[-2]
    rows, rank = a_raw.shape
    return torch.empty_like(a_raw), q.new_empty((rows,)), torch.empty_like(B), q.new_empty((rank + 2,))


def _lorentz_full_terms_op(a_raw, a_time, norm_x, B, log_ratios, k0, s0, scaling, theta_max):
    gram = _gram(B, a_raw.shape[1] + 1, "lorentz-full")
    Z, terms = _lorentz_full_kernel_or_torch(a_raw, a_time, norm_x, gram, log_ratios, k0, s0, scaling, theta_max,
                                             True)
    return (Z, *terms)


def _lorentz_full_terms_fake(a_raw, *_):
    rows, points = a_raw.shape[0], a_raw.shape[1] + 1
    return (a_raw.new_empty((rows, points)), a_raw.new_empty((rows, points)), a_raw.new_empty((rows, points)),
            a_raw.new_empty((rows, 4)), a_raw.new_empty((rows, 4, 3)))


def _register_opaque_operations() -> bool:
    """``torch.ops.hyplora.gated_terms``, ``.gated_backward_terms``, ``.lorentz_full_terms`` and
    ``.lorentz_full_backward_terms``; False before torch 2.4."""
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:
        return False
    operations = [
        ("gated_terms", _gated_terms_op, _gated_terms_fake,
         "(Tensor a_raw, Tensor norm_x, Tensor B, Tensor log_ratios, float k0, float s0, str variant, "
         "float scaling, float theta_max) -> (Tensor, Tensor, Tensor)"),
        ("gated_backward_terms", _gated_backward_terms_op, _gated_backward_terms_fake,
         "(Tensor q, Tensor a_raw, Tensor coef, Tensor gram_a, Tensor B, Tensor base) "
         "-> (Tensor, Tensor, Tensor, Tensor)"),
        ("lorentz_full_backward_terms", _lorentz_full_backward_terms_op, _lorentz_full_backward_terms_fake,
         "(Tensor q, Tensor a_raw, Tensor point, Tensor gram_point, Tensor scalars, Tensor coefficients, "
         "Tensor a_time, Tensor B, Tensor base) -> (Tensor, Tensor, Tensor, Tensor)"),
        ("lorentz_full_terms", _lorentz_full_terms_op, _lorentz_full_terms_fake,
         "(Tensor a_raw, Tensor a_time, Tensor norm_x, Tensor B, Tensor log_ratios, float k0, float s0, "
         "float scaling, float theta_max) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"),
    ]
    for name, implementation, fake, schema in operations:
        if hasattr(torch.ops.hyplora, name):  # this module imported a second time
            continue
        custom_op(f"hyplora::{name}", implementation, mutates_args=(), schema=schema).register_fake(fake)
    return True


_OPAQUE_UNDER_COMPILE = _register_opaque_operations()


class _LorentzFullLowRank(torch.autograd.Function):
    """The "lorentz-full" branch with ``K = k0 exp(rho_k)``, ``s = s0 exp(rho_s)`` (``log_ratios = (rho_k, rho_s)``);
    one autograd node whose backward is a few rank-sized torch operations on terms the forward computed
    (`_lorentz_full_terms`); under torch.compile one opaque operation (on a GPU two Triton launches,
    `kernels.lorentz_full_backward`)."""

    @staticmethod
    def forward(ctx, x, A, B, log_ratios, k0: float, s0: float, scaling: float, theta_max: float):
        out, Z, a_raw, terms = _lorentz_full_forward(x, A, B, log_ratios, k0, s0, scaling, theta_max, True)
        ctx.save_for_backward(x, A, B, log_ratios, a_raw, Z, *terms)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # With q = grad_out B (per token, r + 1): dL/dP = scaling g2 q + beta (B^T B) P, beta = kappa <q, P>;
        # rho = dL/dP_0 (time); dL/dh = dL/dP_h + rho h / t; sigma = <dL/dh, a_raw>, tau = <dL/dh, a_time>;
        # (w, K dL/dK, s dL/ds) = (sigma, tau, rho, <q, P>) C;  dL/d a_raw = dL/dh g1 / s;
        # dL/dx = dL/d a_raw A_s + w x;  dL/dA = [dL/dh^T sqrt(K) cosh c | dL/d a_raw^T x];
        # dL/dB = grad_out^T Z + B (P^T diag(beta) P).
        x, A, B, log_ratios, a_raw, Z, point, gram_point, scalars, coefficients = ctx.saved_tensors
        shape = x.shape
        x_cast = x.reshape(-1, shape[-1]).to(A.dtype)
        grad_out = grad_out.reshape(-1, B.shape[0]).to(A.dtype)
        q = grad_out @ B
        base = torch.mm(grad_out.t(), Z) if ctx.needs_input_grad[2] else torch.zeros_like(B)  # see _GatedLowRank
        rank_terms = (q, a_raw, point, gram_point, scalars, coefficients, A[:, 0].contiguous(), B, base)
        if _OPAQUE_UNDER_COMPILE and kernels.is_compiling():
            p_a, w, grad_B, sums = torch.ops.hyplora.lorentz_full_backward_terms(*rank_terms)
        else:  # eager: see _GatedLowRank.backward
            p_a, w, grad_B, sums = _lorentz_full_backward_torch(*rank_terms, in_place=True)
        grad_time, rho_pair = sums[:-2], sums[-2:]
        grad_x = grad_A = grad_log_ratios = None
        if ctx.needs_input_grad[1]:
            grad_A = torch.cat([grad_time.unsqueeze(-1), p_a.t() @ x_cast], dim=1)
        if ctx.needs_input_grad[0]:
            # in place: one x-sized temporary fewer
            grad_x = (p_a @ A[:, 1:]).addcmul_(_w_term_input(x, x_cast), w.unsqueeze(-1))
            del x_cast
            grad_x = grad_x.to(x.dtype).reshape(shape)
        if not ctx.needs_input_grad[2]:
            grad_B = None
        if ctx.needs_input_grad[3]:
            grad_log_ratios = _log_ratio_grad(rho_pair, log_ratios)
        return grad_x, grad_A, grad_B, grad_log_ratios, None, None, None, None


def _lorentz_full_backward_torch(q, a_raw, point, gram_point, scalars, coefficients, a_time, B, base,
                                 in_place: bool = False):
    """``(dL/d a_raw, w, base + B M, [dL/dA[:, 0], rho])`` of `_LorentzFullLowRank.backward` (see there), in torch;
    the last is one vector (r + 2). ``in_place`` adds into ``base`` itself."""
    qP = torch.linalg.vecdot(q, point)
    beta = qP.unsqueeze(-1) * scalars[:, 1:2]
    dL_dP = torch.addcmul(q * scalars[:, :1], beta, gram_point)
    rho = dL_dP[:, :1]
    dL_dh = torch.addcmul(dL_dP[:, 1:], rho / point[:, :1], point[:, 1:])
    v = torch.stack([torch.linalg.vecdot(dL_dh, a_raw), dL_dh @ a_time, rho.squeeze(-1), qP], dim=-1)
    terms = (v.unsqueeze(1) @ coefficients).squeeze(1)
    m = (point * beta).t() @ point
    grad_B = base.addmm_(B, m) if in_place else torch.addmm(base, B, m)
    sums = torch.cat([dL_dh.t() @ scalars[:, 3], terms[:, 1:].sum(dim=0)])
    return dL_dh * scalars[:, 2:3], terms[:, 0], grad_B, sums


def _inference_branch(x, A, B, log_ratios, k0, s0, variant: str, scaling: float, theta_max: float) -> Tensor:
    """Any variant's branch without autograd and without the Triton kernel (CPU, torch.compile).

    Every variant's output is a per-token scalar times ``y = B z`` (``z = A x``, or the point ``P`` for
    "lorentz-full"), and the scalar depends on ``|y|``. Without a backward to feed, the cheapest order is to form
    ``y`` first (LoRA's two matmuls) and take its norm, instead of ``|B z|`` through ``B^T B`` as the training
    path does. The gates are written in the dimensionless norms ``theta = |x| / (s sqrt(K))`` and
    ``w = |y| / (s sqrt(K))`` (`_dimensionless_gate`), so that ``K`` and ``s`` enter through one factor per norm
    and one on the output. Under torch.compile this leaves the two matmuls, the row norms and one fused
    elementwise kernel per layer; written with ``n = |x| / s`` and ``sqrt(K)`` in every gate term, inductor
    stored ``s`` and ``sqrt(K)`` in a kernel of their own per layer, which decoding replays in its CUDA graphs.
    """
    shape = x.shape
    x_cast = x.reshape(-1, shape[-1]).to(A.dtype)
    norm_x = torch.linalg.vector_norm(x_cast, dim=-1, keepdim=True)
    rho_k, rho_s = log_ratios.to(A.dtype).unbind()
    per_radius = torch.exp(-0.5 * rho_k - rho_s) / (math.sqrt(k0) * s0)  # 1 / (s sqrt(K))
    theta = norm_x * per_radius
    if variant == "lorentz-full":
        # with h = sqrt(K) h' and P = sqrt(K) P': h' = (g1 / (s sqrt(K))) a_raw + cosh(c) a_time,
        # P' = (sqrt(1 + |h'|^2), h'), y = sqrt(K) B P', branch = scaling sqrt(K) asinhc(|B P'|) B P'
        c = theta.clamp(1e-30, theta_max)
        g1 = torch.where(theta > theta_max, math.sinh(theta_max) / theta.clamp_min(1e-30), sinhc(c))
        h = (x_cast @ A[:, 1:].t()) * (g1 * per_radius) + torch.cosh(c) * A[:, 0]
        time = torch.hypot(torch.linalg.vector_norm(h, dim=-1, keepdim=True), torch.ones_like(theta))
        y = torch.cat([time, h], dim=-1) @ B.t()
        out_scale = math.sqrt(k0) * torch.exp(0.5 * rho_k)
        out = y * (scaling * asinhc(torch.linalg.vector_norm(y, dim=-1, keepdim=True)) * out_scale)
    else:
        y = (x_cast @ A.t()) @ B.t()  # B A x; the branch is (scaling G / s) times this, per token
        w = torch.linalg.vector_norm(y, dim=-1, keepdim=True) * per_radius
        out_scale = torch.exp(-rho_s) / s0
        out = y * (scaling * _dimensionless_gate(theta, w, variant, theta_max) * out_scale)
    return out.reshape(*shape[:-1], B.shape[0])


def _dimensionless_gate(theta: Tensor, w: Tensor, variant: str, theta_max: float) -> Tensor:
    """The gate ``G`` of `_lorentz_gates` / `_stereographic_gates` (no derivatives) in ``theta = n / sqrt(K)`` and
    ``w = m / sqrt(K)``, of which it is a function alone:

        lorentz:        g1 = sinh(min(theta, theta_max)) / theta,   G = g1 asinhc(g1 w)
        stereographic:  g1 = 2 / (1 - theta^2) (theta capped at tanh(theta_max / 2), beyond which
                        g1 = sinh(theta_max) / theta),              G = g1 / (1 + sqrt(1 + (g1 w)^2))
    """
    theta = theta.clamp_min(1e-30)
    if variant == "lorentz":
        g1 = torch.where(theta > theta_max, math.sinh(theta_max) / theta, sinhc(theta.clamp_max(theta_max)))
        return g1 * asinhc(g1 * w)
    edge = math.tanh(theta_max / 2.0)
    inside = theta.clamp_max(edge)
    g1 = torch.where(theta >= edge, math.sinh(theta_max) / theta, 2.0 / (1.0 - inside * inside))
    return g1 / (1.0 + torch.hypot(g1 * w, torch.ones_like(w)))


def gated_branch(
    variant: str, x: Tensor, A: Tensor, B: Tensor, log_ratios: Tensor, k0: float, s0: float,
    scaling: float, theta_max: float,
) -> Tensor:
    """Any variant's branch with ``K = k0 exp(rho_k)``, ``s = s0 exp(rho_s)``, ``log_ratios = (rho_k, rho_s)`` a
    2-element tensor (the layer's parameterisation, which the kernels evaluate themselves)."""
    inference = not torch.is_grad_enabled() or not any(t.requires_grad for t in (x, A, B, log_ratios))
    if inference and not kernels.usable(x, A, variant):
        return _inference_branch(x, A, B, log_ratios, k0, s0, variant, scaling, theta_max)
    if variant == "lorentz-full":
        if inference:
            return _lorentz_full_forward(x, A, B, log_ratios, k0, s0, scaling, theta_max, False)[0]
        return _LorentzFullLowRank.apply(x, A, B, log_ratios, k0, s0, scaling, theta_max)
    if inference:  # decoding: the same computation without an autograd node
        return _gated_forward(x, A, B, log_ratios, k0, s0, variant, scaling, theta_max, False)[0]
    return _GatedLowRank.apply(x, A, B, log_ratios, k0, s0, variant, scaling, theta_max)


def adds_in_place(out: Tensor, variant: str, x: Tensor, A: Tensor) -> bool:
    """Whether `add_gated_branch_` applies: no autograd, the Triton path usable (CUDA, outside torch.compile), and
    ``out`` a contiguous float tensor with x's leading shape."""
    return (not torch.is_grad_enabled() and variant in GATED_VARIANTS and kernels.usable(x, A, variant)
            and out.shape[:-1] == x.shape[:-1] and out.is_contiguous() and out.is_floating_point())


def add_gated_branch_(
    out: Tensor, variant: str, x: Tensor, A: Tensor, B: Tensor, log_ratios: Tensor, k0: float, s0: float,
    scaling: float, theta_max: float,
) -> None:
    """``out += gated_branch(...)`` in place, without autograd (where `adds_in_place` says so).

    This is the eager no-grad path (a prefill, eager decoding), where every launch costs host time. For few
    tokens and layers not too wide (`kernels.fuses`), one Triton kernel does everything (`kernels.add_fused_`).
    Else, where `kernels.two_pass` says so (layers too wide for it, few tokens; "lorentz-full" by default), the
    same kernel with ``|y|`` from B's cached Gram matrix and ``d_out`` split across programs, after a launch
    that splits ``x A^T`` over the input columns; where `kernels.splits` does (off by default), that kernel
    alone.
    Otherwise LoRA's two matmuls give ``y = B A x`` (float32), and one Triton kernel takes ``|x|`` and ``|y|``,
    the gate, and adds ``(scaling G / s) y`` to ``out``, rounding once to its dtype. Either replaces the Gram
    matrix, the rank-space kernel, the norm of x and the separate sum into ``out`` of the training path.
    """
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    out2 = out.view(-1, out.shape[-1])
    if kernels.fuses(x2.shape[0], x2.shape[1], out2.shape[1]):  # few tokens: one launch, where host time decides
        kernels.add_fused_(out2, x2, A.contiguous(), B.contiguous(), log_ratios, k0, s0, variant, scaling, theta_max)
        return
    if kernels.two_pass(x2.shape[0], x2.shape[1], out2.shape[1], variant):  # wider layers, few tokens: two launches
        B = B.contiguous()
        kernels.add_two_pass_(out2, x2, A.contiguous(), B, log_ratios, k0, s0, variant, scaling, theta_max,
                              kernels.cached_gram(B))
        return
    if kernels.splits(x2.shape[0], x2.shape[1], out2.shape[1]):  # wide layers: |y| from B's Gram matrix
        B = B.contiguous()
        kernels.add_fused_(out2, x2, A.contiguous(), B, log_ratios, k0, s0, variant, scaling, theta_max,
                           gram=kernels.cached_gram(B))
        return
    if variant == "lorentz-full":
        # y = B P splits into LoRA's two matmuls on the space coordinates, B's time column and B_s A[:, 0]
        # (`kernels.add_lorentz_full_`): no Gram matrix and no rank-space kernel, one launch more than "lorentz"
        A, B = A.contiguous(), B.contiguous()
        a_raw = torch.mm(x2.to(A.dtype), A[:, 1:].t())
        v = torch.mv(B[:, 1:], A[:, 0])
        kernels.add_lorentz_full_(out2, torch.mm(a_raw, B[:, 1:].t()), x2, a_raw, A, B, v, log_ratios, k0, s0,
                                  scaling, theta_max)
        return
    y = torch.mm(torch.mm(x2.to(A.dtype), A.t()), B.t())
    kernels.add_gated_(out2, y, x2, log_ratios, k0, s0, variant, scaling, theta_max)


def _branch(variant: str, x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float):
    # K = exp(log K): gradients reach K and s through the logs
    log_ratios = torch.cat([K.reshape(1).log(), s.reshape(1).log()])
    return gated_branch(variant, x, A, B, log_ratios, 1.0, 1.0, scaling, theta_max)


def lorentz_branch(x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float) -> Tensor:
    """The "lorentz" branch in its fast form (see module docstring)."""
    return _branch("lorentz", x, A, B, K, s, scaling, theta_max)


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
    return _branch("lorentz-full", x, A, B, K, s, scaling, theta_max)


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


def stereographic_branch(
    x: Tensor, A: Tensor, B: Tensor, K: Tensor, s: Tensor, scaling: float, theta_max: float
) -> Tensor:
    """The "stereographic" branch in its fast form (see module docstring)."""
    return _branch("stereographic", x, A, B, K, s, scaling, theta_max)


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
