"""Triton kernels for the gated fast path of `functional` ("lorentz" and "stereographic").

The branch is ``Z @ B^T`` with ``Z = scaling * G(n, m) * a`` per token, ``a = x A^T / s`` (rank-sized),
``n = |x| / s`` and ``m = |B a| = sqrt(a^T (B^T B) a)``. LoRA's own work is the two matmuls; everything else
is per-token and rank-sized, and these kernels do it in as few launches as LoRA needs for its scaling and
casts, so that a HypLoRA layer costs about what a LoRA layer costs:

- `cast_and_sumsq`: x (any float dtype) -> float32 copy for the matmul and ``|x|^2`` per row, one read of x;
- `gate_forward`: ``m`` through the Gram matrix, the gates, ``Z``, and the per-token ``(n, m)`` saved for
  backward (gates are recomputed there, not saved);
- `gate_backward`: every rank-sized gradient term in one pass (see `functional._GatedLowRank.backward` for
  the formulas, which the eager path computes with the same names);
- `row_axpy`: ``grad_x = (P A + w x)`` cast to x's dtype, optionally writing the float32 x that ``grad_A``
  needs, so no float32 copy of x is kept alive between forward and backward.

The curvature and feature scale arrive as ``K = k0 exp(rho_k)``, ``s = s0 exp(rho_s)`` (the layer's
parameterisation) and are formed inside the kernels, which saves four scalar launches per layer and call.

Special functions are written with ``exp``/``log``/``sqrt`` and Taylor series near 0 (no libdevice), so the
kernels also run under ``TRITON_INTERPRET=1`` on a CPU, which is how CI tests them.
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: `functional` uses its eager path
    triton = None
    tl = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_RANK = 128  # a (rows x rank) tile and the rank x rank Gram matrix must fit one program
VARIANT_IDS = {"lorentz": 0, "stereographic": 1}


def usable(x: torch.Tensor, A: torch.Tensor, variant: str) -> bool:
    """Whether the Triton path applies: Triton present, CUDA tensors, float32 adapter, rank <= `MAX_RANK`.

    ``HYPLORA_TRITON=0`` turns it off; ``HYPLORA_TRITON=interpret`` also runs it on CPU tensors, in Triton's
    interpreter (which needs ``TRITON_INTERPRET=1`` before this module is imported): that is for tests.
    """
    mode = os.environ.get("HYPLORA_TRITON", "1")
    if triton is None or mode == "0" or variant not in VARIANT_IDS:
        return False
    if A.dtype != torch.float32 or A.shape[0] > MAX_RANK:
        return False
    return x.device.type == "cuda" or (x.device.type == "cpu" and INTERPRET and mode == "interpret")


def _rank_blocks(rank: int) -> tuple[int, int]:
    block_r = max(16, triton.next_power_of_2(rank))
    block_t = {16: 64, 32: 64, 64: 32}.get(block_r, 16)
    return block_t, block_r


if triton is not None:

    @triton.jit
    def _sinhc_and_prime(t):
        """``sinh(t)/t`` and its derivative for t >= 0; Taylor series below 0.5 (the closed forms cancel)."""
        big = t >= 0.5
        t_small = tl.where(big, 0.0, t)
        t2 = t_small * t_small
        series = 1.0 + t2 * (
            0.16666666666666666
            + t2 * (0.008333333333333333 + t2 * (1.984126984126984e-04 + t2 * (2.7557319223985893e-06
                    + t2 * (2.505210838544172e-08 + t2 * 1.6059043836821613e-10))))
        )
        series_prime = t_small * (
            0.3333333333333333
            + t2 * (0.03333333333333333 + t2 * (1.1904761904761906e-03 + t2 * (2.2045855379188714e-05
                    + t2 * (2.505210838544172e-07 + t2 * 1.9270852604185937e-09))))
        )
        tb = tl.where(big, t, 1.0)
        ep = tl.exp(tb)
        em = 1.0 / ep
        sh = 0.5 * (ep - em)
        ch = 0.5 * (ep + em)
        value = tl.where(big, sh / tb, series)
        prime = tl.where(big, (tb * ch - sh) / (tb * tb), series_prime)
        return value, prime

    @triton.jit
    def _asinhc_and_prime(z):
        """``asinh(z)/z`` and its derivative for z >= 0; series below 0.3; no overflow for large z."""
        big = z >= 0.3
        z_small = tl.where(big, 0.0, z)
        z2 = z_small * z_small
        series = 1.0 + z2 * (-0.16666666666666666 + z2 * (0.075 + z2 * (-0.044642857142857144 + z2 * (
            0.030381944444444444 + z2 * (-0.022372159090909092 + z2 * (0.017352764423076924 + z2 * (
                -0.01396484375 + z2 * 0.011551800896139705)))))))
        series_prime = z_small * (-0.3333333333333333 + z2 * (0.3 + z2 * (-0.26785714285714285 + z2 * (
            0.24305555555555555 + z2 * (-0.2237215909090909 + z2 * (0.20823317307692307 + z2 * (
                -0.19550781250000002 + z2 * (0.18482881433823528 + z2 * -0.17570897152549342))))))))
        zb = tl.where(big, z, 1.0)
        inverse = 1.0 / zb
        root = tl.sqrt(1.0 + inverse * inverse)  # sqrt(1 + 1/z^2)
        asinh = tl.log(zb) + tl.log(1.0 + root)
        value = tl.where(big, asinh * inverse, series)
        prime = tl.where(big, (1.0 / root - asinh) * inverse * inverse, series_prime)
        return value, prime

    @triton.jit
    def _gates(n, m, K, theta_max, sinh_theta_max, VARIANT: tl.constexpr):
        """``(G, dG/dn, dG/dm, dG/dK)`` per token; the formulas of `functional._lorentz_gates` and
        `functional._stereographic_gates`."""
        sqrt_k = tl.sqrt(K)
        if VARIANT == 0:
            theta = tl.maximum(n, 1e-30) / sqrt_k
            clamped = theta > theta_max
            safe = tl.minimum(theta, theta_max)
            sinhc, sinhc_prime = _sinhc_and_prime(safe)
            g1 = tl.where(clamped, sinh_theta_max / theta, sinhc)
            dg1_dtheta = tl.where(clamped, -g1 / theta, sinhc_prime)
            z = g1 * m / sqrt_k
            g2, dg2_dz = _asinhc_and_prime(z)
            dG_dg1 = g2 + g1 * dg2_dz * m / sqrt_k
            dG_dn = dG_dg1 * dg1_dtheta / sqrt_k
            dG_dm = g1 * g1 * dg2_dz / sqrt_k
            dG_dK = -(g1 * dg2_dz * z + dG_dg1 * dg1_dtheta * theta) / (2.0 * K)
        else:
            n = tl.maximum(n, 1e-30)
            radius = sqrt_k * theta_max  # theta_max here carries tanh(theta_max / 2), see the wrapper
            capped = n >= radius
            inside = tl.minimum(n, radius)
            gap = K - inside * inside
            g1 = tl.where(capped, sqrt_k * sinh_theta_max / n, 2.0 * K / gap)
            dg1_dn = tl.where(capped, -g1 / n, 4.0 * K * inside / (gap * gap))
            dg1_dK = tl.where(capped, g1 / (2.0 * K), -2.0 * inside * inside / (gap * gap))
            w = g1 * m
            big = tl.maximum(w, sqrt_k)
            small = tl.minimum(w, sqrt_k)
            ratio = small / big
            root = big * tl.sqrt(1.0 + ratio * ratio)  # sqrt(K + w^2) without overflow
            denom = sqrt_k + root
            g2 = sqrt_k / denom
            dg2_dw = -sqrt_k * (w / root) / (denom * denom)
            dg2_dK = w * w / (2.0 * sqrt_k * root * denom * denom)
            dG_dg1 = g2 + g1 * dg2_dw * m
            dG_dn = dG_dg1 * dg1_dn
            dG_dm = g1 * g1 * dg2_dw
            dG_dK = g1 * dg2_dK + dG_dg1 * dg1_dK
        return g1 * g2, dG_dn, dG_dm, dG_dK

    @triton.jit(do_not_specialize=["D"])
    def _cast_and_sumsq_kernel(x_ptr, out_ptr, sumsq_ptr, D, BLOCK_D: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        offsets = tl.arange(0, BLOCK_D)
        total = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for start in range(0, D, BLOCK_D):
            cols = start + offsets
            mask = cols < D
            x = tl.load(x_ptr + row * D + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + row * D + cols, x, mask=mask)
            total += x * x
        tl.store(sumsq_ptr + row, tl.sum(total, axis=0))

    @triton.jit(do_not_specialize=["T"])
    def _gate_forward_kernel(
        a_ptr, sumsq_ptr, gram_ptr, rho_k_ptr, rho_s_ptr, z_ptr, nm_ptr,
        T, R, k0, s0, scaling, theta_max, sinh_theta_max,
        VARIANT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.arange(0, BLOCK_R)
        row_mask = rows < T
        col_mask = cols < R
        tile = rows[:, None].to(tl.int64) * R + cols[None, :]
        mask = row_mask[:, None] & col_mask[None, :]
        K = k0 * tl.exp(tl.load(rho_k_ptr))
        s = s0 * tl.exp(tl.load(rho_s_ptr))
        a = tl.load(a_ptr + tile, mask=mask, other=0.0) / s
        gram = tl.load(gram_ptr + cols[:, None] * R + cols[None, :], mask=col_mask[:, None] & col_mask[None, :],
                       other=0.0)
        m = tl.sqrt(tl.maximum(tl.sum(a * tl.dot(a, gram, input_precision="ieee"), axis=1), 1e-30))
        n = tl.sqrt(tl.load(sumsq_ptr + rows, mask=row_mask, other=0.0)) / s
        G, _dn, _dm, _dK = _gates(n, m, K, theta_max, sinh_theta_max, VARIANT)
        tl.store(z_ptr + tile, a * (scaling * G)[:, None], mask=mask)
        tl.store(nm_ptr + rows * 2, n, mask=row_mask)
        tl.store(nm_ptr + rows * 2 + 1, m, mask=row_mask)

    @triton.jit(do_not_specialize=["T"])
    def _gate_backward_kernel(
        q_ptr, a_ptr, nm_ptr, gram_ptr, rho_k_ptr, rho_s_ptr,
        p_ptr, z_ptr, ab_ptr, w_ptr, partial_ptr,
        T, R, k0, s0, scaling, theta_max, sinh_theta_max,
        VARIANT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.arange(0, BLOCK_R)
        row_mask = rows < T
        col_mask = cols < R
        tile = rows[:, None].to(tl.int64) * R + cols[None, :]
        mask = row_mask[:, None] & col_mask[None, :]
        K = k0 * tl.exp(tl.load(rho_k_ptr))
        s = s0 * tl.exp(tl.load(rho_s_ptr))
        a = tl.load(a_ptr + tile, mask=mask, other=0.0) / s
        q = tl.load(q_ptr + tile, mask=mask, other=0.0)
        gram = tl.load(gram_ptr + cols[:, None] * R + cols[None, :], mask=col_mask[:, None] & col_mask[None, :],
                       other=0.0)
        n = tl.load(nm_ptr + rows * 2, mask=row_mask, other=1.0)
        m = tl.load(nm_ptr + rows * 2 + 1, mask=row_mask, other=1.0)
        G, dG_dn, dG_dm, dG_dK = _gates(n, m, K, theta_max, sinh_theta_max, VARIANT)
        dL_dG = scaling * tl.sum(q * a, axis=1)
        dL_dn = dL_dG * dG_dn
        beta = dL_dG * dG_dm / m
        dL_da = (scaling * G)[:, None] * q + beta[:, None] * tl.dot(a, gram, input_precision="ieee")
        tl.store(p_ptr + tile, dL_da / s, mask=mask)
        tl.store(z_ptr + tile, a * (scaling * G)[:, None], mask=mask)
        tl.store(ab_ptr + tile, a * (beta / s)[:, None], mask=mask)
        tl.store(w_ptr + rows, dL_dn / (tl.maximum(n, 1e-30) * s * s), mask=row_mask)
        # per-token terms of dL/d(rho_k) = K dL/dK and dL/d(rho_s) = s dL/ds
        tl.store(partial_ptr + rows * 2, dL_dG * dG_dK * K, mask=row_mask)
        tl.store(partial_ptr + rows * 2 + 1, -(tl.sum(dL_da * a, axis=1) + dL_dn * n), mask=row_mask)

    @triton.jit(do_not_specialize=["D"])
    def _row_axpy_kernel(y_ptr, x_ptr, w_ptr, out_ptr, xf_ptr, D, WRITE_XF: tl.constexpr, BLOCK_D: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask = cols < D
        x = tl.load(x_ptr + row * D + cols, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + row * D + cols, mask=mask, other=0.0)
        w = tl.load(w_ptr + row)
        tl.store(out_ptr + row * D + cols, (y + w * x).to(out_ptr.dtype.element_ty), mask=mask)
        if WRITE_XF:
            tl.store(xf_ptr + row * D + cols, x, mask=mask)


# ------------------------------------------------------------------------------------------------ launching
# Triton's launch path binds and specialises every argument in Python on each call, which costs more CPU time
# than these kernels take on the GPU, and a training step is CPU-bound at LoRA's sizes. Once a kernel is
# compiled for a specialisation, later launches go straight to the compiled kernel's launcher. The calling
# convention of that launcher differs between Triton versions, so the first launch of each specialisation is
# also made directly in each candidate convention and must reproduce the regular launch's outputs bit for bit
# (the kernels are deterministic); otherwise the regular path stays in use.
_direct_launchers: dict = {}
_direct_disabled = os.environ.get("HYPLORA_TRITON_DIRECT", "1") == "0"


def _specialisation(arg) -> object:
    if isinstance(arg, torch.Tensor):
        return (arg.dtype, arg.data_ptr() % 16 == 0)
    if isinstance(arg, bool) or not isinstance(arg, int):
        return type(arg)
    return (arg == 1, arg % 16 == 0)


def _launch(kernel, grid: tuple, args: tuple, constexprs: dict, outputs: tuple[torch.Tensor, ...]) -> None:
    """``kernel[grid](*args, **constexprs)``, via the compiled kernel's launcher once that is known to work."""
    if _direct_disabled or INTERPRET:
        kernel[grid](*args, **constexprs)
        return
    key = (kernel, tuple(constexprs.items()), tuple(_specialisation(a) for a in args))
    launcher = _direct_launchers.get(key)
    if launcher:
        launcher[grid](*args)
        return
    if launcher is False:  # no direct convention worked for this specialisation
        kernel[grid](*args, **constexprs)
        return
    compiled = kernel[grid](*args, **constexprs)
    expected = [out.clone() for out in outputs]
    _direct_launchers[key] = False
    for convention in ("all arguments", "runtime arguments"):
        full = args + tuple(constexprs.values()) if convention == "all arguments" else args
        try:
            compiled[grid](*full)
        except Exception:  # noqa: BLE001 - a convention this Triton version does not use
            continue
        if all(torch.equal(out, want) for out, want in zip(outputs, expected)):
            _direct_launchers[key] = _Launcher(compiled, len(full) - len(args), constexprs)
            return
        for out, want in zip(outputs, expected):
            out.copy_(want)
    return


class _Launcher:
    """A compiled kernel plus how many constexpr values its launcher takes after the runtime arguments."""

    def __init__(self, compiled, extra: int, constexprs: dict):
        self.compiled = compiled
        self.tail = tuple(constexprs.values())[:extra] if extra else ()

    def __getitem__(self, grid):
        runner = self.compiled[grid]
        tail = self.tail
        return lambda *args: runner(*args, *tail)


def _variant_constants(variant: str, theta_max: float) -> tuple[float, float]:
    # The stereographic gate caps the ball radius at sqrt(K) tanh(theta_max / 2); the kernel gets the tanh.
    if variant == "stereographic":
        return math.tanh(theta_max / 2.0), math.sinh(theta_max)
    return theta_max, math.sinh(theta_max)


def cast_and_sumsq(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x as float32, |x|^2 per row)`` for a 2-D x, reading x once."""
    x = x.contiguous()
    rows, width = x.shape
    out = torch.empty((rows, width), dtype=torch.float32, device=x.device)
    sumsq = torch.empty((rows,), dtype=torch.float32, device=x.device)
    if rows:
        _launch(_cast_and_sumsq_kernel, (rows,), (x, out, sumsq, width),
                {"BLOCK_D": min(2048, triton.next_power_of_2(width))}, (out, sumsq))
    return out, sumsq


def gate_forward(a_raw, sumsq, gram, rho_k, rho_s, k0, s0, variant, scaling, theta_max):
    """``(Z, nm)``: ``Z = scaling G a`` (rows x r) and the per-token ``(n, m)`` (rows x 2)."""
    rows, rank = a_raw.shape
    z = torch.empty_like(a_raw)
    nm = torch.empty((rows, 2), dtype=torch.float32, device=a_raw.device)
    block_t, block_r = _rank_blocks(rank)
    theta, sinh_theta = _variant_constants(variant, theta_max)
    if rows:
        _launch(
            _gate_forward_kernel, (triton.cdiv(rows, block_t),),
            (a_raw, sumsq, gram, rho_k, rho_s, z, nm, rows, rank, float(k0), float(s0), float(scaling), theta,
             sinh_theta),
            {"VARIANT": VARIANT_IDS[variant], "BLOCK_T": block_t, "BLOCK_R": block_r}, (z, nm),
        )
    return z, nm


def gate_backward(q, a_raw, nm, gram, rho_k, rho_s, k0, s0, variant, scaling, theta_max):
    """``(P, Z, ab, w, partials)``; see `functional._GatedLowRank.backward` for what each is."""
    rows, rank = a_raw.shape
    p, z, ab = torch.empty_like(a_raw), torch.empty_like(a_raw), torch.empty_like(a_raw)
    w = torch.empty((rows,), dtype=torch.float32, device=a_raw.device)
    partials = torch.empty((rows, 2), dtype=torch.float32, device=a_raw.device)
    block_t, block_r = _rank_blocks(rank)
    theta, sinh_theta = _variant_constants(variant, theta_max)
    if rows:
        _launch(
            _gate_backward_kernel, (triton.cdiv(rows, block_t),),
            (q, a_raw, nm, gram, rho_k, rho_s, p, z, ab, w, partials, rows, rank, float(k0), float(s0),
             float(scaling), theta, sinh_theta),
            {"VARIANT": VARIANT_IDS[variant], "BLOCK_T": block_t, "BLOCK_R": block_r}, (p, z, ab, w, partials),
        )
    return p, z, ab, w, partials


def row_axpy(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, want_float_x: bool):
    """``(y + w[:, None] x)`` in x's dtype, and x as float32 if asked (else None); y float32, all 2-D."""
    x = x.contiguous()
    rows, width = x.shape
    out = torch.empty_like(x)
    x_float = torch.empty((rows, width), dtype=torch.float32, device=x.device) if want_float_x else out
    block_d = min(1024, triton.next_power_of_2(width))
    if rows:
        _launch(_row_axpy_kernel, (rows, triton.cdiv(width, block_d)), (y, x, w, out, x_float, width),
                {"WRITE_XF": want_float_x, "BLOCK_D": block_d}, (out, x_float))
    return out, (x_float if want_float_x else None)
