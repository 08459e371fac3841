"""Triton kernels for the fast paths of `functional` ("lorentz", "stereographic" and "lorentz-full").

The branch is ``Z @ B^T`` with ``Z = scaling * G(n, m) * a`` per token, ``a = x A^T / s`` (rank-sized),
``n = |x| / s`` and ``m = |B a| = sqrt(a^T (B^T B) a)``. LoRA's own work is the two matmuls; the rest is
per-token and rank-sized, and one kernel does all of it: ``m`` through the Gram matrix, the gates, ``Z``, and
(when a backward will follow) five per-token coefficients that turn the backward into a few rank-sized
torch operations (see `functional._GatedLowRank.backward`).

Eager, the backward has no kernel of its own: it runs on autograd's device thread, where each Triton launch
from Python costs about 0.1 ms of host time (measured on an H200 host, benchmarks/RESULTS.md) against a few
microseconds for a torch operation, and an eager training step at LoRA's sizes is bound by host time. Under
torch.compile with CUDA graphs launches cost no host time, only GPU time, and there the opaque operations of
`functional` run kernels for what would otherwise be small cuBLAS GEMMs with split-K reductions: the Gram
matrix ``B^T B`` (`gram_matrix`, one launch) and the backward's rank-sized work (`gate_backward` and
`lorentz_full_backward`, two launches each). Their sums over rows are float32 atomic adds, so their last bits can
change from run to run; ``torch.use_deterministic_algorithms(True)`` makes `functional` use torch operations
instead.

Without autograd (a prefill, eager decoding) there is no backward to feed, and the cheapest order is LoRA's:
``y = B A x`` by two matmuls, then one kernel (`add_gated_`) takes ``|x|`` and ``|y|`` per token, the gate, and
adds ``scaling G y / s`` into the base layer's output in place. That is four launches per layer instead of seven.
For up to `FUSED_MAX_ROWS` tokens, where the host's time per launch decides, and layers not wider than
`FUSED_MAX_WIDTH`, one kernel (`add_fused_`) does it all, the cast of x and both matmuls included; for narrow
layers up to `FUSED_NARROW_MAX_ROWS` tokens (`fuses`). Wide layers can take it in two launches instead, ``x A^T``
split over the input columns (`add_two_pass_`; on for "lorentz-full", `TWO_PASS_MAX_ROWS`).

Every launch goes through `_launch`, which launches a kept compiled kernel directly where Triton's JIT entry
would choose the same one: in eager decoding that entry cost as much host time as the launch itself.

The curvature and feature scale arrive as ``K = k0 exp(rho_k)``, ``s = s0 exp(rho_s)`` with ``log_ratios = (rho_k,
rho_s)`` (the layer's parameterisation) and are formed inside the kernel, which saves four scalar launches per
layer and call.

Special functions are written with ``exp``/``log``/``sqrt`` and Taylor series near 0 (no libdevice), so the
kernel also runs under ``TRITON_INTERPRET=1`` on a CPU, which is how CI tests it.
"""

from __future__ import annotations

import functools
import math
import os

import torch
from torch.utils.weak import WeakIdKeyDictionary

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - no Triton, or one that fails to import: `functional` uses its eager path
    triton = None
    tl = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_RANK = 128  # a (rows x rank) tile and the rank x rank Gram matrix must fit one program
VARIANT_IDS = {"lorentz": 0, "stereographic": 1, "lorentz-full": 2}


# Host-side integer helpers. Triton's own (`triton.cdiv`, `triton.next_power_of_2`) are constexpr functions in
# Triton 3.6 and later, which unwrap their arguments on every call: about 2 us of host time each
# (benchmarks/dispatch_overhead.py), and each launch of the eager no-grad one kernel made two of them for its
# grid (its blocks are cached). These are plain arithmetic.
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


def is_compiling() -> bool:
    """Whether torch.compile is tracing the caller (False on torch versions without the query)."""
    query = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(query()) if query is not None else False


def usable(x: torch.Tensor, A: torch.Tensor, variant: str) -> bool:
    """Whether the Triton path applies: Triton present, CUDA tensors, float32 adapter, rank <= `MAX_RANK`, and not
    inside torch.compile (which gets the gate computation as one opaque operation, see `functional`).

    ``HYPLORA_TRITON=0`` turns it off; ``HYPLORA_TRITON=interpret`` also runs it on CPU tensors, in Triton's
    interpreter (which needs ``TRITON_INTERPRET=1`` before this module is imported): that is for tests.
    """
    if is_compiling():
        return False
    # "lorentz-full" works on (r + 1)-points
    return supports(x.device, A.dtype, A.shape[0] + (variant == "lorentz-full"), variant)


def supports(device: torch.device, dtype: torch.dtype, points: int, variant: str) -> bool:
    """`usable` for tensors on ``device`` with an adapter of ``dtype`` whose rank-space points have ``points``
    coordinates (r, or r + 1 for "lorentz-full")."""
    mode = os.environ.get("HYPLORA_TRITON", "1")
    if triton is None or mode == "0" or variant not in VARIANT_IDS:
        return False
    if dtype != torch.float32 or points > MAX_RANK:
        return False
    return device.type == "cuda" or (device.type == "cpu" and INTERPRET and mode == "interpret")


# Block sizes and warps per padded rank. Wider tiles spill registers to local memory, which can make a kernel
# many times slower; benchmarks/kernel_registers.py compiles every launch for sm_90 and reports registers and
# spills. ``(tokens per block, warps)`` of the training forward kernels (`_gate_forward_kernel`,
# `_lorentz_full_forward_kernel`) and of `_gate_backward_kernel`, per padded rank up to 64: at rank 16, 64-token
# blocks (measured on an H200, benchmarks/RESULTS.md); at 32, 32 tokens and 8 warps forward and 16 tokens and 4
# warps backward, free of spills (64 tokens and 4 warps spilled 16-24 and 336 bytes per thread; side by side, a
# compiled training step took the same time either way, tenth session); above, 16-token blocks and 8 warps keep
# them free of spills up to rank 64. Read at each launch, so that benchmarks/train_step.py can time others side by side.
GATE_FORWARD_BLOCKS = {16: (64, 4), 32: (32, 8), 64: (16, 8)}
GATE_BACKWARD_BLOCKS = {16: (64, 4), 32: (16, 4), 64: (16, 8)}


def _padded_rank(points: int) -> int:
    return max(16, _next_power_of_2(points))


def _forward_blocks(points: int) -> tuple[int, int, int, int]:
    """``(tokens per block, padded rank, Gram slice, warps)`` of the training forward kernels for ``points``
    rank coordinates (r, or r + 1 for lorentz-full). Up to 64, the Gram matrix is one tile (slice = padded rank),
    blocks from `GATE_FORWARD_BLOCKS`; above, ``a (B^T B)`` is summed over slices of 16 of the rank, with 8 warps:
    the whole 128 x 128 tile spilled 0.6-1.4 KB per thread on sm_90 (benchmarks/kernel_registers.py)."""
    block_r = _padded_rank(points)
    if block_r > 64:
        return 16, block_r, 16, 8
    block_t, warps = GATE_FORWARD_BLOCKS[block_r]
    return block_t, block_r, block_r, warps


def _backward_blocks(rank: int) -> tuple[int, int, int, bool]:
    """``(tokens per block, padded rank, warps, sum M in the kernel)`` of `_gate_backward_kernel`: blocks from
    `GATE_BACKWARD_BLOCKS` up to 64; above, M is one matmul outside (an r x r accumulator per program spilled)."""
    block_r = _padded_rank(rank)
    if block_r > 64:
        return 16, block_r, 8, False
    block_t, warps = GATE_BACKWARD_BLOCKS[block_r]
    return block_t, block_r, warps, True


def _full_backward_config(rank: int) -> tuple[dict, int]:
    """Blocks and warps of `_lorentz_full_backward_kernel` (tiles of the rank space coordinates): 16 tokens per
    block; with 64 tokens it spilled at rank 32."""
    block_r = max(16, _next_power_of_2(rank))
    return {"BLOCK_T": 16, "BLOCK_R": block_r, "SUM_HH": block_r <= 64}, (4 if block_r <= 32 else 8)


# The products of the compiled training path's Gram matrix (`gram_matrix`): "ieee", float32 on the CUDA cores, or
# "tf32x3", three TF32 products on the tensor cores (float32-level accuracy). At rank 100 the "ieee" kernel takes
# about 20 us per call on an H200, a third of a compiled step's GPU time over LoRA's. "tf32x3" passed
# benchmarks/gpu_check.py there but was slower (26 us per call; train_step.py "+gramtf32x3", rank 100: 1.100
# against 1.086 of LoRA's step; rank 32: no difference), so "ieee" stays (benchmarks/RESULTS.md, eleventh session).
GRAM_PRECISION = "ieee"
# At most this many slabs of rows in `gram_matrix`, each adding its r x r product atomically into the same r x r
# floats: more slabs read B in more programs at once, fewer make fewer atomic adds on the same addresses. On an
# H200, 32 and 16 slabs were slower than 128 at ranks 32 and 100 (train_step.py "+gramslabsN", eleventh session).
GRAM_MAX_SLABS = 128


def _gram_config(rank: int) -> tuple[dict, int]:
    """Compile-time constants and warps of `_gram_kernel` for a (n x rank) weight."""
    block_r = _padded_rank(rank)
    return ({"BLOCK_N": {16: 64, 32: 64, 64: 32}.get(block_r, 16), "BLOCK_R": block_r, "PRECISION": GRAM_PRECISION},
            (4 if block_r <= 64 else 8))


def _times_small_blocks(points: int) -> tuple[dict, int]:
    """Blocks and warps of `_matmul_small_kernel`; above a padded rank of 64, M in slices of 16 of the rank."""
    block_r = max(16, _next_power_of_2(points))
    return ({"BLOCK_D": 128 if block_r <= 32 else 32, "BLOCK_R": block_r, "BLOCK_K": block_r if block_r <= 64 else 16},
            (4 if block_r <= 64 else 8))


def launch_configs(rank: int) -> list[tuple[str, dict, int]]:
    """``(kernel name, compile-time constants, warps)`` of every kernel launch for adapters of this rank, as the
    functions below make them (for benchmarks/kernel_registers.py, which compiles each for a given GPU)."""
    forward_t, forward_r, forward_c, forward_warps = _forward_blocks(rank)
    backward_t, backward_r, backward_warps, sum_m = _backward_blocks(rank)
    full_t, full_r, full_c, full_warps = _forward_blocks(rank + 1)
    configs = [("_gram_kernel", *_gram_config(rank)), ("_gram_kernel", *_gram_config(rank + 1))]
    for variant in (0, 1):
        for with_coef in (True, False):
            configs.append(("_gate_forward_kernel", {"VARIANT": variant, "WITH_COEF": with_coef,
                                                     "BLOCK_T": forward_t, "BLOCK_R": forward_r,
                                                     "BLOCK_C": forward_c}, forward_warps))
        configs.append(("_add_gated_kernel", {"VARIANT": variant, "BLOCK": 1024}, 4))
    for with_coef in (True, False):
        configs.append(("_lorentz_full_forward_kernel", {"WITH_COEF": with_coef, "BLOCK_T": full_t, "BLOCK_R": full_r,
                                                         "BLOCK_C": full_c}, full_warps))
    configs.append(("_add_lorentz_full_kernel", {"BLOCK": 1024, "BLOCK_R": _add_lorentz_full_block(rank)}, 4))
    fused, fused_warps = _fused_blocks(rank)
    for variant, time in ((0, 0), (1, 0), (2, 1)):
        for gram, parts in ((0, 0), (1, 0), (1, 16)):  # one kernel; split; the two-pass form's second launch
            configs.append(("_add_fused_kernel", {"VARIANT": variant, "TIME": time, "GRAM": gram, "PARTS": parts,
                                                  **fused}, fused_warps))
        if variant != 1:
            configs.append(("_partial_point_kernel", {"TIME": time, "BLOCK_T": fused["BLOCK_T"],
                                                      "BLOCK_K": TWO_PASS_BLOCK_K, "BLOCK_R": fused["BLOCK_R"]},
                            fused_warps))
    configs += [
        ("_gate_backward_kernel", {"BLOCK_T": backward_t, "BLOCK_R": backward_r, "SUM_M": sum_m}, backward_warps),
        ("_lorentz_full_backward_kernel", *_full_backward_config(rank)),
        ("_matmul_small_kernel", *_times_small_blocks(rank)),
        ("_matmul_small_kernel", *_times_small_blocks(rank + 1)),
    ]
    return configs


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

    @triton.jit(do_not_specialize=["N"])
    def _gram_kernel(x_ptr, out_ptr, N, R, ROWS, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
                     PRECISION: tl.constexpr):
        """``out += X_p^T X_p`` for the p-th slab of ``ROWS`` rows of X (N x R), by atomic adds into ``out``; the
        products at ``PRECISION`` ("ieee" or "tf32x3", `GRAM_PRECISION`)."""
        part = tl.program_id(0)
        cols = tl.arange(0, BLOCK_R)
        col_mask = cols < R
        acc = tl.zeros([BLOCK_R, BLOCK_R], dtype=tl.float32)
        first = part * ROWS
        last = tl.minimum(first + ROWS, N)
        for start in range(first, last, BLOCK_N):
            rows = start + tl.arange(0, BLOCK_N)
            mask = (rows[:, None] < last) & col_mask[None, :]
            x = tl.load(x_ptr + rows[:, None].to(tl.int64) * R + cols[None, :], mask=mask, other=0.0)
            acc += tl.dot(tl.trans(x), x, input_precision=PRECISION)
        tl.atomic_add(out_ptr + cols[:, None] * R + cols[None, :], acc, mask=col_mask[:, None] & col_mask[None, :],
                      sem="relaxed")

    @triton.jit
    def _times_in_rank_slices(left_ptr, rows, row_mask, m_ptr, cols, col_mask, R, BLOCK_ROWS: tl.constexpr,
                              BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        """``left[rows] @ M`` for a row-major (rows x R) ``left`` and (R x R) ``M``, summed over slices of BLOCK_K
        of the rank, so that neither operand is ever whole in registers."""
        product = tl.zeros([BLOCK_ROWS, BLOCK_R], dtype=tl.float32)
        for start in range(0, R, BLOCK_K):
            part = start + tl.arange(0, BLOCK_K)
            part_mask = part < R
            left = tl.load(left_ptr + rows[:, None].to(tl.int64) * R + part[None, :],
                           mask=row_mask[:, None] & part_mask[None, :], other=0.0)
            m = tl.load(m_ptr + part[:, None] * R + cols[None, :], mask=part_mask[:, None] & col_mask[None, :],
                        other=0.0)
            product += tl.dot(left, m, input_precision="ieee")
        return product

    @triton.jit(do_not_specialize=["T"])
    def _gate_backward_kernel(
        q_ptr, a_ptr, coef_ptr, ga_ptr, p_ptr, w_ptr, m_ptr, rho_ptr, beta_ptr, T, R, ROWS,
        BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, SUM_M: tl.constexpr,
    ):
        """The rank-sized part of `functional._GatedLowRank.backward` for one slab of ``ROWS`` tokens.

        With ``qa = <q, a>`` per token: ``p = c0 q + (qa k_m) a B^T B`` and ``w = qa k_n`` per token; this slab's
        terms of ``M = sum_t (qa k_m) a a^T`` and of ``(sum_t qa k_K, sum_t qa k_s)`` are added atomically. Without
        SUM_M (ranks above 64, where an r x r accumulator per program spilled), ``beta = qa k_m`` is stored per
        token instead, for M as one matmul outside."""
        part = tl.program_id(0)
        cols = tl.arange(0, BLOCK_R)
        col_mask = cols < R
        if SUM_M:
            acc = tl.zeros([BLOCK_R, BLOCK_R], dtype=tl.float32)
        acc_k = tl.zeros([BLOCK_T], dtype=tl.float32)
        acc_s = tl.zeros([BLOCK_T], dtype=tl.float32)
        first = part * ROWS
        last = tl.minimum(first + ROWS, T)
        for start in range(first, last, BLOCK_T):
            rows = start + tl.arange(0, BLOCK_T)
            row_mask = rows < last
            mask = row_mask[:, None] & col_mask[None, :]
            tile = rows[:, None].to(tl.int64) * R + cols[None, :]
            q = tl.load(q_ptr + tile, mask=mask, other=0.0)
            a = tl.load(a_ptr + tile, mask=mask, other=0.0)
            ga = tl.load(ga_ptr + tile, mask=mask, other=0.0)
            base = coef_ptr + rows.to(tl.int64) * 5
            c0 = tl.load(base, mask=row_mask, other=0.0)
            qa = tl.sum(q * a, axis=1)
            beta = qa * tl.load(base + 1, mask=row_mask, other=0.0)
            tl.store(p_ptr + tile, c0[:, None] * q + beta[:, None] * ga, mask=mask)
            tl.store(w_ptr + rows, qa * tl.load(base + 2, mask=row_mask, other=0.0), mask=row_mask)
            acc_k += qa * tl.load(base + 3, mask=row_mask, other=0.0)
            acc_s += qa * tl.load(base + 4, mask=row_mask, other=0.0)
            if SUM_M:
                acc += tl.dot(tl.trans(a * beta[:, None]), a, input_precision="ieee")
            else:
                tl.store(beta_ptr + rows, beta, mask=row_mask)
        if SUM_M:
            tl.atomic_add(m_ptr + cols[:, None] * R + cols[None, :], acc,
                          mask=col_mask[:, None] & col_mask[None, :], sem="relaxed")
        tl.atomic_add(rho_ptr, tl.sum(acc_k, axis=0), sem="relaxed")
        tl.atomic_add(rho_ptr + 1, tl.sum(acc_s, axis=0), sem="relaxed")

    @triton.jit(do_not_specialize=["T"])
    def _lorentz_full_backward_kernel(
        q_ptr, a_ptr, p_ptr, gp_ptr, scal_ptr, c_ptr, at_ptr, pa_ptr, w_ptr, m_ptr, v_ptr, beta_ptr, T, R, ROWS,
        BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, SUM_HH: tl.constexpr,
    ):
        """The rank-sized part of `functional._LorentzFullLowRank.backward` for one slab of ``ROWS`` tokens: per
        token ``dL/d a_raw`` and ``w``; atomically, this slab's terms of ``M = sum_t beta P P^T`` ((R + 1)^2
        numbers, at ``m_ptr``) and of ``[dL/dA[:, 0], the two log-ratio gradients]`` (R + 2, at ``v_ptr``).

        Tiles hold the R space coordinates only; the time coordinate (column 0 of the (R + 1)-points) is a
        per-token vector. A tile padded to R + 1 columns would be twice as wide for R = 32, and that version
        spilled kilobytes of registers per thread (benchmarks/kernel_registers.py). Without SUM_HH (ranks above
        64), ``beta`` is stored per token and M's ``sum_t beta h h^T`` block is left to one matmul outside."""
        part = tl.program_id(0)
        cols = tl.arange(0, BLOCK_R)
        col_mask = cols < R
        R1 = R + 1
        a_time = tl.load(at_ptr + cols, mask=col_mask, other=0.0)
        if SUM_HH:
            acc_hh = tl.zeros([BLOCK_R, BLOCK_R], dtype=tl.float32)
        acc_th = tl.zeros([BLOCK_R], dtype=tl.float32)
        acc_tt = tl.zeros([BLOCK_T], dtype=tl.float32)
        acc_time = tl.zeros([BLOCK_R], dtype=tl.float32)
        acc_k = tl.zeros([BLOCK_T], dtype=tl.float32)
        acc_s = tl.zeros([BLOCK_T], dtype=tl.float32)
        first = part * ROWS
        last = tl.minimum(first + ROWS, T)
        for start in range(first, last, BLOCK_T):
            rows = start + tl.arange(0, BLOCK_T)
            row_mask = rows < last
            mask = row_mask[:, None] & col_mask[None, :]
            point_rows = rows.to(tl.int64) * R1
            space = point_rows[:, None] + 1 + cols[None, :]
            q_t = tl.load(q_ptr + point_rows, mask=row_mask, other=0.0)
            t = tl.load(p_ptr + point_rows, mask=row_mask, other=1.0)
            gp_t = tl.load(gp_ptr + point_rows, mask=row_mask, other=0.0)
            q_h = tl.load(q_ptr + space, mask=mask, other=0.0)
            h = tl.load(p_ptr + space, mask=mask, other=0.0)
            gp_h = tl.load(gp_ptr + space, mask=mask, other=0.0)
            tile = rows[:, None].to(tl.int64) * R + cols[None, :]
            a_raw = tl.load(a_ptr + tile, mask=mask, other=0.0)
            scal = scal_ptr + rows.to(tl.int64) * 4
            cg2 = tl.load(scal, mask=row_mask, other=0.0)
            kappa = tl.load(scal + 1, mask=row_mask, other=0.0)
            g1_s = tl.load(scal + 2, mask=row_mask, other=0.0)
            kcosh = tl.load(scal + 3, mask=row_mask, other=0.0)
            qP = q_t * t + tl.sum(q_h * h, axis=1)
            beta = qP * kappa
            rho = cg2 * q_t + beta * gp_t
            dL_dh = cg2[:, None] * q_h + beta[:, None] * gp_h + (rho / t)[:, None] * h
            sigma = tl.sum(dL_dh * a_raw, axis=1)
            tau = tl.sum(dL_dh * a_time[None, :], axis=1)
            base = c_ptr + rows.to(tl.int64) * 12  # (4 x 3) per token, rows (sigma, tau, rho, <q, P>)
            w = (sigma * tl.load(base + 0, mask=row_mask, other=0.0) + tau * tl.load(base + 3, mask=row_mask, other=0.0)
                 + rho * tl.load(base + 6, mask=row_mask, other=0.0) + qP * tl.load(base + 9, mask=row_mask, other=0.0))
            acc_k += (sigma * tl.load(base + 1, mask=row_mask, other=0.0)
                      + tau * tl.load(base + 4, mask=row_mask, other=0.0)
                      + rho * tl.load(base + 7, mask=row_mask, other=0.0)
                      + qP * tl.load(base + 10, mask=row_mask, other=0.0))
            acc_s += (sigma * tl.load(base + 2, mask=row_mask, other=0.0)
                      + tau * tl.load(base + 5, mask=row_mask, other=0.0)
                      + rho * tl.load(base + 8, mask=row_mask, other=0.0)
                      + qP * tl.load(base + 11, mask=row_mask, other=0.0))
            tl.store(w_ptr + rows, w, mask=row_mask)
            tl.store(pa_ptr + tile, dL_dh * g1_s[:, None], mask=mask)
            acc_time += tl.sum(dL_dh * kcosh[:, None], axis=0)
            beta = tl.where(row_mask, beta, 0.0)
            bt = beta * t
            acc_tt += bt * t
            acc_th += tl.sum(bt[:, None] * h, axis=0)
            if SUM_HH:
                acc_hh += tl.dot(tl.trans(h * beta[:, None]), h, input_precision="ieee")
            else:
                tl.store(beta_ptr + rows, beta, mask=row_mask)
        # M = [[sum beta t^2, sum beta t h^T], [sum beta t h, sum beta h h^T]] as an (R + 1) x (R + 1) matrix
        tl.atomic_add(m_ptr, tl.sum(acc_tt, axis=0), sem="relaxed")
        tl.atomic_add(m_ptr + 1 + cols, acc_th, mask=col_mask, sem="relaxed")
        tl.atomic_add(m_ptr + (1 + cols) * R1, acc_th, mask=col_mask, sem="relaxed")
        if SUM_HH:
            tl.atomic_add(m_ptr + (1 + cols[:, None]) * R1 + 1 + cols[None, :], acc_hh,
                          mask=col_mask[:, None] & col_mask[None, :], sem="relaxed")
        tl.atomic_add(v_ptr + cols, acc_time, mask=col_mask, sem="relaxed")
        tl.atomic_add(v_ptr + R, tl.sum(acc_k, axis=0), sem="relaxed")
        tl.atomic_add(v_ptr + R + 1, tl.sum(acc_s, axis=0), sem="relaxed")

    @triton.jit(do_not_specialize=["D"])
    def _matmul_small_kernel(b_ptr, m_ptr, c_ptr, out_ptr, D, R, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
                             BLOCK_K: tl.constexpr):
        """``out = C + B M`` for a tall B and C (D x R) and a small M (R x R). C is added after a round trip through
        ``out`` (behind a barrier: each program reads back only its own tile): added to the `tl.dot` result in
        registers, the compiler spilled 4 KB per thread (benchmarks/kernel_registers.py), and a loop of rank-one
        updates took 3x longer on an H200. With ``BLOCK_K < BLOCK_R`` (a padded rank of 128, where the whole M
        spilled), the product is summed over slices of BLOCK_K of the rank."""
        rows = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
        cols = tl.arange(0, BLOCK_R)
        mask = (rows[:, None] < D) & (cols[None, :] < R)
        tile = rows[:, None].to(tl.int64) * R + cols[None, :]
        if BLOCK_K == BLOCK_R:
            b = tl.load(b_ptr + tile, mask=mask, other=0.0)
            m = tl.load(m_ptr + cols[:, None] * R + cols[None, :], mask=(cols[:, None] < R) & (cols[None, :] < R),
                        other=0.0)
            product = tl.dot(b, m, input_precision="ieee")
        else:
            product = _times_in_rank_slices(b_ptr, rows, rows < D, m_ptr, cols, cols < R, R, BLOCK_D, BLOCK_R, BLOCK_K)
        tl.store(out_ptr + tile, product, mask=mask)
        tl.debug_barrier()
        total = tl.load(out_ptr + tile, mask=mask, other=0.0) + tl.load(c_ptr + tile, mask=mask, other=0.0)
        tl.store(out_ptr + tile, total, mask=mask)

    @triton.jit(do_not_specialize=["T"])
    def _gate_forward_kernel(
        a_ptr, norm_ptr, gram_ptr, log_ratios_ptr, z_ptr, coef_ptr, ga_ptr,
        T, R, k0, s0, scaling, theta_max, sinh_theta_max,
        VARIANT: tl.constexpr, WITH_COEF: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """``BLOCK_C < BLOCK_R`` (ranks above 64): ``a (B^T B)`` summed over slices of BLOCK_C of the rank, so that
        the Gram matrix is never whole in registers (whole, it spilled kilobytes per thread at BLOCK_R = 128)."""
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.arange(0, BLOCK_R)
        row_mask = rows < T
        col_mask = cols < R
        tile = rows[:, None].to(tl.int64) * R + cols[None, :]
        mask = row_mask[:, None] & col_mask[None, :]
        K = k0 * tl.exp(tl.load(log_ratios_ptr))
        s = s0 * tl.exp(tl.load(log_ratios_ptr + 1))
        a_raw = tl.load(a_ptr + tile, mask=mask, other=0.0)
        if BLOCK_C == BLOCK_R:
            gram = tl.load(gram_ptr + cols[:, None] * R + cols[None, :], mask=col_mask[:, None] & col_mask[None, :],
                           other=0.0)
            gram_a = tl.dot(a_raw, gram, input_precision="ieee")  # a (B^T B): for |B a| here, and for the backward
        else:  # a's slices (reloaded) times the same rows of B^T B
            gram_a = _times_in_rank_slices(a_ptr, rows, row_mask, gram_ptr, cols, col_mask, R, BLOCK_T, BLOCK_R,
                                           BLOCK_C)
        m = tl.sqrt(tl.maximum(tl.sum(a_raw * gram_a, axis=1), 1e-30)) / s
        n = tl.load(norm_ptr + rows, mask=row_mask, other=0.0) / s
        G, dG_dn, dG_dm, dG_dK = _gates(n, m, K, theta_max, sinh_theta_max, VARIANT)
        cG_s = scaling * G / s
        tl.store(z_ptr + tile, a_raw * cG_s[:, None], mask=mask)
        if WITH_COEF:
            tl.store(ga_ptr + tile, gram_a, mask=mask)
            s3 = s * s * s
            k_m = scaling * dG_dm / (m * s3)
            base = coef_ptr + rows.to(tl.int64) * 5
            tl.store(base, cG_s, mask=row_mask)
            tl.store(base + 1, k_m, mask=row_mask)
            tl.store(base + 2, scaling * dG_dn / (tl.maximum(n, 1e-30) * s3), mask=row_mask)
            tl.store(base + 3, scaling * K * dG_dK / s, mask=row_mask)
            tl.store(base + 4, -(cG_s + k_m * m * m * s * s + scaling * dG_dn * n / s), mask=row_mask)


    @triton.jit(do_not_specialize=["T"])
    def _lorentz_full_forward_kernel(
        a_ptr, at_ptr, norm_ptr, gram_ptr, log_ratios_ptr, z_ptr, p_ptr, gp_ptr, scal_ptr, c_ptr,
        T, R, k0, s0, scaling, theta_max, sinh_theta_max,
        WITH_COEF: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        """The "lorentz-full" rank space: columns 0..R of a tile are the (R + 1)-point, time first. With
        ``BLOCK_C < BLOCK_R``, ``P (B^T B)`` is summed over slices of the point's coordinates, each slice of P
        formed again from a's (reloaded) slice, as `_gate_forward_kernel` does."""
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.arange(0, BLOCK_R)
        R1 = R + 1
        row_mask = rows < T
        in_h = (cols >= 1) & (cols <= R)
        in_p = cols < R1
        K = k0 * tl.exp(tl.load(log_ratios_ptr))
        s = s0 * tl.exp(tl.load(log_ratios_ptr + 1))
        k = tl.sqrt(K)
        a_raw = tl.load(a_ptr + rows[:, None].to(tl.int64) * R + (cols[None, :] - 1),
                        mask=row_mask[:, None] & in_h[None, :], other=0.0)
        a_t = tl.load(at_ptr + (cols - 1), mask=in_h, other=0.0)
        n = tl.load(norm_ptr + rows, mask=row_mask, other=0.0) / s
        n_safe = tl.maximum(n, 1e-30)
        theta = n_safe / k
        clamped = theta > theta_max
        c = tl.minimum(theta, theta_max)
        sinhc, sinhc_prime = _sinhc_and_prime(c)
        g1 = tl.where(clamped, sinh_theta_max / theta, sinhc)
        e1 = tl.where(clamped, -g1 / theta, sinhc_prime)
        ec = tl.exp(c)
        kcosh = k * 0.5 * (ec + 1.0 / ec)
        e2 = tl.where(clamped, 0.0, k * 0.5 * (ec - 1.0 / ec))
        g1_s = g1 / s
        h = a_raw * g1_s[:, None] + kcosh[:, None] * a_t[None, :]
        t = tl.sqrt(tl.sum(h * h, axis=1) + K)
        P = h + tl.where(cols[None, :] == 0, t[:, None], 0.0)
        if BLOCK_C == BLOCK_R:
            gram = tl.load(gram_ptr + cols[:, None] * R1 + cols[None, :], mask=in_p[:, None] & in_p[None, :],
                           other=0.0)
            GP = tl.dot(P, gram, input_precision="ieee")
        else:
            GP = tl.zeros([BLOCK_T, BLOCK_R], dtype=tl.float32)
            for start in range(0, R1, BLOCK_C):
                part = start + tl.arange(0, BLOCK_C)
                part_h = (part >= 1) & (part <= R)
                a_part = tl.load(a_ptr + rows[:, None].to(tl.int64) * R + (part[None, :] - 1),
                                 mask=row_mask[:, None] & part_h[None, :], other=0.0)
                a_t_part = tl.load(at_ptr + (part - 1), mask=part_h, other=0.0)
                P_part = (a_part * g1_s[:, None] + kcosh[:, None] * a_t_part[None, :]
                          + tl.where(part[None, :] == 0, t[:, None], 0.0))
                gram_rows = tl.load(gram_ptr + part[:, None] * R1 + cols[None, :],
                                    mask=(part < R1)[:, None] & in_p[None, :], other=0.0)
                GP += tl.dot(P_part, gram_rows, input_precision="ieee")
        m = tl.sqrt(tl.maximum(tl.sum(P * GP, axis=1), 1e-30))
        z = m / k
        g2, g2_prime = _asinhc_and_prime(z)
        cg2 = scaling * g2
        tile = rows[:, None].to(tl.int64) * R1 + cols[None, :]
        mask = row_mask[:, None] & in_p[None, :]
        tl.store(z_ptr + tile, P * cg2[:, None], mask=mask)
        if WITH_COEF:
            tl.store(p_ptr + tile, P, mask=mask)
            tl.store(gp_ptr + tile, GP, mask=mask)
            scal = scal_ptr + rows.to(tl.int64) * 4
            tl.store(scal, cg2, mask=row_mask)
            tl.store(scal + 1, scaling * g2_prime / (k * m), mask=row_mask)
            tl.store(scal + 2, g1_s, mask=row_mask)
            tl.store(scal + 3, kcosh, mask=row_mask)
            e1_s = e1 / s
            e3 = 1.0 / (s * s * k * n_safe)
            base = c_ptr + rows.to(tl.int64) * 12  # (4 x 3) per token, see functional._lorentz_full_terms
            tl.store(base + 0, e1_s * e3, mask=row_mask)
            tl.store(base + 1, -0.5 * theta * e1_s, mask=row_mask)
            tl.store(base + 2, -theta * e1_s - g1_s, mask=row_mask)
            tl.store(base + 3, e2 * e3, mask=row_mask)
            tl.store(base + 4, -0.5 * theta * e2 + 0.5 * kcosh, mask=row_mask)
            tl.store(base + 5, -theta * e2, mask=row_mask)
            tl.store(base + 6, 0.0 * t, mask=row_mask)
            tl.store(base + 7, K / (2.0 * t), mask=row_mask)
            tl.store(base + 8, 0.0 * t, mask=row_mask)
            tl.store(base + 9, 0.0 * t, mask=row_mask)
            tl.store(base + 10, -0.5 * scaling * g2_prime * z, mask=row_mask)
            tl.store(base + 11, 0.0 * t, mask=row_mask)


    @triton.jit
    def _squared_norm(ptr, row, D, BLOCK: tl.constexpr):
        """``sum_j v[row, j]^2`` over a contiguous (rows x D) tensor of any float dtype, in float32."""
        offsets = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, D, BLOCK):
            index = start + offsets
            value = tl.load(ptr + row * D + index, mask=index < D, other=0.0).to(tl.float32)
            acc += value * value
        return tl.sum(acc, axis=0)

    @triton.jit
    def _add_gated_kernel(
        out_ptr, y_ptr, x_ptr, log_ratios_ptr, D_IN, D_OUT, k0, s0, scaling, theta_max, sinh_theta_max,
        VARIANT: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """One token per program: ``out += scaling G(|x| / s, |y| / s) y / s`` with ``y = B A x`` (no autograd)."""
        row = tl.program_id(0).to(tl.int64)
        K = k0 * tl.exp(tl.load(log_ratios_ptr))
        s = s0 * tl.exp(tl.load(log_ratios_ptr + 1))
        n = tl.sqrt(_squared_norm(x_ptr, row, D_IN, BLOCK)) / s
        m = tl.sqrt(tl.maximum(_squared_norm(y_ptr, row, D_OUT, BLOCK), 1e-30)) / s
        G, _, _, _ = _gates(n, m, K, theta_max, sinh_theta_max, VARIANT)
        factor = scaling * G / s
        offsets = tl.arange(0, BLOCK)
        for start in range(0, D_OUT, BLOCK):
            index = start + offsets
            mask = index < D_OUT
            y = tl.load(y_ptr + row * D_OUT + index, mask=mask, other=0.0)
            out = tl.load(out_ptr + row * D_OUT + index, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + row * D_OUT + index, (out + factor * y).to(out_ptr.dtype.element_ty), mask=mask)


    @triton.jit
    def _lorentz_full_y(y_ptr, bt_ptr, v_ptr, row, index, mask, D_OUT, BT_STRIDE, t, g1_s, kcosh):
        """Entries ``index`` of ``y = t B[:, 0] + (g1 / s) B_s a + sqrt(K) cosh(c) B_s a_time`` for one token."""
        return (t * tl.load(bt_ptr + index * BT_STRIDE, mask=mask, other=0.0)
                + g1_s * tl.load(y_ptr + row * D_OUT + index, mask=mask, other=0.0)
                + kcosh * tl.load(v_ptr + index, mask=mask, other=0.0))

    @triton.jit
    def _add_lorentz_full_kernel(
        out_ptr, y_ptr, x_ptr, a_ptr, at_ptr, bt_ptr, v_ptr, log_ratios_ptr, D_IN, D_OUT, R, AT_STRIDE, BT_STRIDE,
        k0, s0, scaling, theta_max, sinh_theta_max, BLOCK: tl.constexpr, BLOCK_R: tl.constexpr,
    ):
        """One token per program, "lorentz-full" without autograd: ``out += scaling asinhc(|y| / sqrt(K)) y`` with

            h = (g1 / s) a + sqrt(K) cosh(c) a_time,   t = sqrt(K + |h|^2)     (the point P = (t, h))
            y = B P = t B[:, 0] + (g1 / s) B_s a + sqrt(K) cosh(c) B_s a_time

        for ``a = x A_s^T`` (``a_ptr``), ``B_s a`` (``y_ptr``), ``B_s a_time`` (``v_ptr``), and ``a_time = A[:, 0]``,
        ``B[:, 0]`` read with their row strides from the weights."""
        row = tl.program_id(0).to(tl.int64)
        K = k0 * tl.exp(tl.load(log_ratios_ptr))
        s = s0 * tl.exp(tl.load(log_ratios_ptr + 1))
        k = tl.sqrt(K)
        theta = tl.maximum(tl.sqrt(_squared_norm(x_ptr, row, D_IN, BLOCK)) / s, 1e-30) / k
        c = tl.minimum(theta, theta_max)
        sinhc, _ = _sinhc_and_prime(c)
        g1_s = tl.where(theta > theta_max, sinh_theta_max / theta, sinhc) / s
        ec = tl.exp(c)
        kcosh = k * 0.5 * (ec + 1.0 / ec)
        cols = tl.arange(0, BLOCK_R)
        col_mask = cols < R
        h = (g1_s * tl.load(a_ptr + row * R + cols, mask=col_mask, other=0.0)
             + kcosh * tl.load(at_ptr + cols * AT_STRIDE, mask=col_mask, other=0.0))
        t = tl.sqrt(tl.sum(h * h, axis=0) + K)
        offsets = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, D_OUT, BLOCK):
            index = start + offsets
            y = _lorentz_full_y(y_ptr, bt_ptr, v_ptr, row, index, index < D_OUT, D_OUT, BT_STRIDE, t, g1_s, kcosh)
            acc += y * y
        g2, _ = _asinhc_and_prime(tl.sqrt(tl.maximum(tl.sum(acc, axis=0), 1e-30)) / k)
        factor = scaling * g2
        for start in range(0, D_OUT, BLOCK):
            index = start + offsets
            mask = index < D_OUT
            y = _lorentz_full_y(y_ptr, bt_ptr, v_ptr, row, index, mask, D_OUT, BT_STRIDE, t, g1_s, kcosh)
            out = tl.load(out_ptr + row * D_OUT + index, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + row * D_OUT + index, (out + factor * y).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _fused_y_tile(z, b_ptr, rows_n, n_mask, ranks, r_mask, B_STRIDE, t, TIME: tl.constexpr):
        """Columns ``rows_n`` of ``y = z B_s^T`` (plus ``t B[:, 0]`` for "lorentz-full", ``TIME = 1``) for a block
        of tokens; B_s is B after its ``TIME`` time columns."""
        b = tl.load(b_ptr + TIME + rows_n[:, None] * B_STRIDE + ranks[None, :],
                    mask=n_mask[:, None] & r_mask[None, :], other=0.0)
        y = tl.dot(z, tl.trans(b), input_precision="tf32x3")
        if TIME:
            y += t[:, None] * tl.load(b_ptr + rows_n * B_STRIDE, mask=n_mask, other=0.0)[None, :]
        return y

    @triton.jit
    def _raw_point(x_ptr, a_ptr, rows, row_mask, ranks, r_mask, first, end, D_IN, A_STRIDE, TIME: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr):
        """``(x A_s^T, |x|^2)`` over the input columns ``first`` to ``end`` for a block of tokens (x in its own
        dtype, A_s = A after its ``TIME`` time columns, float32, products "tf32x3")."""
        a = tl.zeros([BLOCK_T, BLOCK_R], dtype=tl.float32)
        squared_x = tl.zeros([BLOCK_T], dtype=tl.float32)
        for start in range(first, end, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            col_mask = cols < end
            x = tl.load(x_ptr + rows[:, None] * D_IN + cols[None, :], mask=row_mask[:, None] & col_mask[None, :],
                        other=0.0).to(tl.float32)
            squared_x += tl.sum(x * x, axis=1)
            weight = tl.load(a_ptr + TIME + ranks[:, None] * A_STRIDE + cols[None, :],
                             mask=r_mask[:, None] & col_mask[None, :], other=0.0)
            a = tl.dot(x, tl.trans(weight), a, input_precision="tf32x3")
        return a, squared_x

    @triton.jit
    def _point_from_raw(a, squared_x, a_ptr, ranks, r_mask, A_STRIDE, K, s, theta_max, sinh_theta_max,
                        BLOCK_T: tl.constexpr, TIME: tl.constexpr):
        """``(a, t)``: ``a`` itself and ``t = 0`` ("lorentz", "stereographic"), or for "lorentz-full" the point's
        space part ``h = (g1 / s) a + sqrt(K) cosh(c) A[:, 0]`` and time coordinate ``t = sqrt(K + |h|^2)``."""
        t = tl.zeros([BLOCK_T], dtype=tl.float32)
        if TIME:
            sqrt_k = tl.sqrt(K)
            theta = tl.maximum(tl.sqrt(squared_x) / s, 1e-30) / sqrt_k
            c = tl.minimum(theta, theta_max)
            sinhc, _ = _sinhc_and_prime(c)
            g1_s = tl.where(theta > theta_max, sinh_theta_max / theta, sinhc) / s
            ec = tl.exp(c)
            kcosh = sqrt_k * 0.5 * (ec + 1.0 / ec)
            a_time = tl.load(a_ptr + ranks * A_STRIDE, mask=r_mask, other=0.0)
            a = g1_s[:, None] * a + kcosh[:, None] * a_time[None, :]
            t = tl.sqrt(tl.sum(a * a, axis=1) + K)
        return a, t

    @triton.jit
    def _partial_point_kernel(x_ptr, a_ptr, part_ptr, squared_ptr, ROWS, D_IN, R, A_STRIDE, SLICE_IN,
                              TIME: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
                              BLOCK_R: tl.constexpr):
        """Pass 1 of the two-pass no-grad branch: program (i, p) forms ``x A_s^T`` and ``|x|^2`` of token block i
        over input columns ``[p SLICE_IN, (p + 1) SLICE_IN)`` and stores them as part p, ``part[p, row, :R]`` and
        ``squared[p, row]``; `_add_fused_kernel` with ``PARTS`` sums the parts in a fixed order (deterministic,
        no atomic adds)."""
        rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
        row_mask = rows < ROWS
        ranks = tl.arange(0, BLOCK_R)
        r_mask = ranks < R
        part = tl.program_id(1)
        first = part * SLICE_IN
        a, squared_x = _raw_point(x_ptr, a_ptr, rows, row_mask, ranks, r_mask, first,
                                  tl.minimum(first + SLICE_IN, D_IN), D_IN, A_STRIDE, TIME, BLOCK_T, BLOCK_K, BLOCK_R)
        tl.store(part_ptr + (part * ROWS + rows[:, None]) * R + ranks[None, :], a,
                 mask=row_mask[:, None] & r_mask[None, :])
        tl.store(squared_ptr + part * ROWS + rows, squared_x, mask=row_mask)

    @triton.jit
    def _gram_squared_norm(a, t, m_ptr, ranks, r_mask, M_STRIDE, TIME: tl.constexpr):
        """``|y|^2 = p^T (B^T B) p`` per token from the Gram matrix of B (``m_ptr``, (R + TIME) squared, rows of
        ``M_STRIDE``), with ``p = a`` or, for "lorentz-full", ``p = (t, h)``: no pass over B."""
        m = tl.load(m_ptr + (TIME + ranks[:, None]) * M_STRIDE + TIME + ranks[None, :],
                    mask=r_mask[:, None] & r_mask[None, :], other=0.0)
        squared = tl.sum(tl.dot(a, m, input_precision="tf32x3") * a, axis=1)
        if TIME:
            m_time = tl.load(m_ptr + TIME + ranks, mask=r_mask, other=0.0)
            squared += 2.0 * t * tl.sum(a * m_time[None, :], axis=1) + t * t * tl.load(m_ptr)
        return tl.maximum(squared, 0.0)

    @triton.jit
    def _add_fused_kernel(
        out_ptr, x_ptr, a_ptr, b_ptr, log_ratios_ptr, m_ptr, part_ptr, squared_ptr, ROWS, D_IN, D_OUT, R, A_STRIDE,
        B_STRIDE, M_STRIDE, SLICE, k0, s0, scaling, theta_max, sinh_theta_max, VARIANT: tl.constexpr,
        TIME: tl.constexpr, GRAM: tl.constexpr, PARTS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    ):
        """A block of tokens per program, the whole no-grad branch in one launch: ``out += branch(x)``.

        Pass 1 forms ``a = x A_s^T`` and ``|x|`` (x in its own dtype, A in float32, products in float32); pass 2
        forms ``y = B a`` a tile at a time for ``|y|``; pass 3 forms the tiles again and adds ``factor y`` into
        ``out``. "lorentz" and "stereographic": ``factor = scaling G(|x| / s, |y| / s) / s``. "lorentz-full"
        (VARIANT 2, TIME 1: A and B carry time columns 0): ``a`` becomes the point's space part ``h = (g1 / s) a +
        sqrt(K) cosh(c) A[:, 0]``, ``y = t B[:, 0] + B_s h`` with ``t = sqrt(K + |h|^2)``, and ``factor = scaling
        asinhc(|y| / sqrt(K))``. B is read twice instead of storing y: for the few tokens of a prefill or an
        eager decoding step, launches cost more than the reads. The products are "tf32x3" (three TF32
        tensor-core products per float32 product, accurate to float32): with exact float32 products ("ieee",
        as the other kernels use) this kernel's GPU time was several times larger (benchmarks/RESULTS.md).

        GRAM = 1 (wide layers): pass 2 takes ``|y|^2`` from the Gram matrix of B (``m_ptr``) instead, and the
        second grid axis splits ``d_out`` into slices of ``SLICE`` columns, each program adding its slice; one
        program would otherwise read the whole of B twice alone. GRAM = 0 has one slice of all ``D_OUT``.

        PARTS > 0 (the two-pass form, with GRAM = 1): pass 1 is `_partial_point_kernel`'s, launched before, and
        this kernel sums its ``PARTS`` parts of ``x A_s^T`` and ``|x|^2`` instead of reading x and A."""
        rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
        row_mask = rows < ROWS
        ranks = tl.arange(0, BLOCK_R)
        r_mask = ranks < R
        K = k0 * tl.exp(tl.load(log_ratios_ptr))
        s = s0 * tl.exp(tl.load(log_ratios_ptr + 1))
        if PARTS:
            a = tl.zeros([BLOCK_T, BLOCK_R], dtype=tl.float32)
            squared_x = tl.zeros([BLOCK_T], dtype=tl.float32)
            for part in range(PARTS):
                a += tl.load(part_ptr + (part * ROWS + rows[:, None]) * R + ranks[None, :],
                             mask=row_mask[:, None] & r_mask[None, :], other=0.0)
                squared_x += tl.load(squared_ptr + part * ROWS + rows, mask=row_mask, other=0.0)
        else:
            a, squared_x = _raw_point(x_ptr, a_ptr, rows, row_mask, ranks, r_mask, 0, D_IN, D_IN, A_STRIDE, TIME,
                                      BLOCK_T, BLOCK_K, BLOCK_R)
        a, t = _point_from_raw(a, squared_x, a_ptr, ranks, r_mask, A_STRIDE, K, s, theta_max, sinh_theta_max, BLOCK_T,
                               TIME)
        if GRAM:
            squared_y = _gram_squared_norm(a, t, m_ptr, ranks, r_mask, M_STRIDE, TIME)
        else:
            squared_y = tl.zeros([BLOCK_T], dtype=tl.float32)
            for start in range(0, D_OUT, BLOCK_N):
                rows_n = start + tl.arange(0, BLOCK_N)
                y = _fused_y_tile(a, b_ptr, rows_n, rows_n < D_OUT, ranks, r_mask, B_STRIDE, t, TIME)
                squared_y += tl.sum(y * y, axis=1)
        norm_y = tl.sqrt(tl.maximum(squared_y, 1e-30))
        if TIME:
            g2, _ = _asinhc_and_prime(norm_y / tl.sqrt(K))
            factor = scaling * g2
        else:
            G, _, _, _ = _gates(tl.sqrt(squared_x) / s, norm_y / s, K, theta_max, sinh_theta_max, VARIANT)
            factor = scaling * G / s
        if GRAM:
            first = tl.program_id(1) * SLICE
            end = tl.minimum(first + SLICE, D_OUT)
        else:  # the one slice: constant loop bounds, as before GRAM existed
            first = 0
            end = D_OUT
        for start in range(first, end, BLOCK_N):
            rows_n = start + tl.arange(0, BLOCK_N)
            n_mask = rows_n < end
            y = _fused_y_tile(a, b_ptr, rows_n, n_mask, ranks, r_mask, B_STRIDE, t, TIME)
            pointers = out_ptr + rows[:, None] * D_OUT + rows_n[None, :]
            mask = row_mask[:, None] & n_mask[None, :]
            out = tl.load(pointers, mask=mask, other=0.0).to(tl.float32)
            tl.store(pointers, (out + factor[:, None] * y).to(out_ptr.dtype.element_ty), mask=mask)


def _on_tensor_device(launch):
    """Run a launch function on the CUDA device of its first argument.

    Triton launches on the current CUDA device and its stream. A layer on another GPU (a model split across GPUs
    with ``device_map``) would otherwise run its kernels on the wrong device, unordered with its inputs."""
    @functools.wraps(launch)
    def on_device(*args, **kwargs):
        device = args[0].device
        if device.type == "cuda" and device.index != torch.cuda.current_device():
            with torch.cuda.device(device):
                return launch(*args, **kwargs)
        return launch(*args, **kwargs)

    return on_device


# Triton's JIT entry, ``kernel[grid](...)``, binds and specialises every argument and looks up the compiled
# kernel on each call: about as much host time as the launch itself (benchmarks/launch_overhead.py). Eager
# decoding makes one such launch per adapted layer and token and is bound by host time, so `_launch` keeps each
# compiled kernel under a key of its call, and launches it directly when the key recurs. Triton (3.6)
# specialises a kernel on no more than the values of its compile-time constants, the launch options (warps), the device, each
# tensor's dtype and whether its address is a multiple of 16, each integer's being 1, a multiple of 16 or beyond
# 32 bits, and the types of other values. The key holds the constants, warps and device, the tensors' dtypes and
# their addresses modulo 16, and the numbers themselves, which tells apart at least as much (a finer key only
# costs a JIT call more), so a direct launch runs the kernel that the JIT entry would have chosen. Every call site
# passes the same Python type at each position (ints for sizes, floats for the rest), as the key assumes: an int 1
# and a float 1.0 are equal keys. ``HYPLORA_DIRECT_LAUNCH=0`` turns direct launches off.
DIRECT_LAUNCH = os.environ.get("HYPLORA_DIRECT_LAUNCH", "1") != "0"
_COMPILED: dict = {}  # key (see `_launch`) -> the compiled kernel that Triton's JIT entry returned for it
_COMPILED_MAX = 4096  # entries; a new token count is a new key (a server's prefills), so the table is bounded


def _direct_launch_supported() -> bool:
    """Triton 3.6 and later (checked on a GPU with 3.6; 3.9's source has the same calls), where a compiled
    kernel's launcher takes ``(grid x, y, z, stream, function, packed metadata, launch metadata, enter hook,
    exit hook, *every parameter)``, as Triton's JIT entry calls it, and ``triton.knobs`` holds the launch hooks.
    Not in the interpreter, which compiles nothing."""
    if triton is None or INTERPRET or not hasattr(triton, "knobs"):
        return False
    try:
        major, minor = (int(part) for part in triton.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (3, 6)


_DIRECT_SUPPORTED = _direct_launch_supported()


@functools.lru_cache(maxsize=None)
def _current_stream():
    """Triton's own query of the current CUDA stream (the torch stream it launches on)."""
    return triton.runtime.driver.active.get_current_stream


def _launch(kernel, grid: tuple, warps: int, tensors: tuple, numbers: tuple, constants: dict) -> None:
    """``kernel[grid](*tensors, *numbers, **constants, num_warps=warps)``: the kernel's tensor parameters come
    first, then its numbers, then its compile-time constants, in the kernel's order. Launched directly through
    the compiled kernel when this call's key (see above) was seen before, else through Triton's JIT entry."""
    global DIRECT_LAUNCH
    key = None
    if DIRECT_LAUNCH and _DIRECT_SUPPORTED:
        device = torch.cuda.current_device()
        key = (id(kernel), warps, device, *constants.values(), *numbers, *[t.dtype for t in tensors],
               *[t.data_ptr() % 16 for t in tensors])
        compiled = _COMPILED.get(key)
        if compiled is not None:
            # the launcher's call as Triton's JIT entry makes it, launch hooks (profilers) included
            arguments = (*tensors, *numbers, *constants.values())
            grid = (*grid, *(1,) * (3 - len(grid)))
            stream = _current_stream()(device)
            runtime = triton.knobs.runtime
            try:
                compiled.run(*grid, stream, compiled.function, compiled.packed_metadata,
                             compiled.launch_metadata(grid, stream, *arguments), runtime.launch_enter_hook,
                             runtime.launch_exit_hook, *arguments)
                return
            except TypeError:  # a launcher that takes other arguments (parsed before launching): JIT entries only
                DIRECT_LAUNCH = False
                _COMPILED.clear()
                key = None
    compiled = kernel[grid](*tensors, *numbers, **constants, num_warps=warps)
    if key is not None and getattr(compiled, "function", None) is not None and (
            list(constants) == _constant_names(kernel, len(tensors) + len(numbers))):
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = compiled


@functools.lru_cache(maxsize=None)
def _constant_names(kernel, runtime: int) -> list:
    """The names of the kernel's parameters after its first ``runtime`` ones (a direct launch passes the
    compile-time constants by position, so they must come in the kernel's order)."""
    return list(kernel.arg_names[runtime:])


@functools.lru_cache(maxsize=None)
def _variant_constants(variant: str, theta_max: float) -> tuple[float, float]:
    # The stereographic gate caps the ball radius at sqrt(K) tanh(theta_max / 2); the kernel gets the tanh.
    if variant == "stereographic":
        return math.tanh(theta_max / 2.0), math.sinh(theta_max)
    return float(theta_max), math.sinh(theta_max)


_ALIGN = 4  # float32s per 16 bytes: inductor asserts that an operation's outputs are 16-byte aligned


def _slabs(rows: int, block: int, most: int) -> tuple[int, int]:
    """``(slabs, rows per slab)``: at most ``most`` slabs of whole blocks covering ``rows`` rows (one if none)."""
    per_slab = _cdiv(_cdiv(max(rows, 1), most), block) * block
    return _cdiv(max(rows, 1), per_slab), per_slab


@_on_tensor_device
def gram_matrix(weight: torch.Tensor) -> torch.Tensor:
    """``W^T W`` (r x r) of a contiguous float32 (n x r) ``weight`` in one launch: slabs of at least 128 rows, at
    most `GRAM_MAX_SLABS` of them, each adding its product atomically (no split-K reduction kernel; the order of
    the float32 additions, hence the last bits, may differ from run to run)."""
    n, rank = weight.shape
    constants, warps = _gram_config(rank)
    slabs, per_slab = _slabs(n, max(128, constants["BLOCK_N"]), GRAM_MAX_SLABS)
    out = torch.zeros((rank, rank), dtype=torch.float32, device=weight.device)
    _launch(_gram_kernel, (slabs,), warps, (weight, out), (n, rank, per_slab), constants)
    return out


@_on_tensor_device
def gate_backward(q, a_raw, coef, gram_a, B, base):
    """The rank-sized part of `functional._GatedLowRank.backward` in two launches: ``(P, w, base + B M, rho)`` with
    ``P = dL/d a_raw`` (rows x r), ``w`` (rows) the coefficient of x in dL/dx, ``B M`` (d_out x r) the Gram term of
    dL/dB, added to ``base`` (its other term) in the second launch, and ``rho`` the two log-ratio gradients (2,).
    The sums over tokens are atomic float32 adds (their last bits may differ from run to run)."""
    rows, rank = q.shape
    block_t, block_r, warps, sum_m = _backward_blocks(rank)
    slabs, per_slab = _slabs(rows, block_t, 32)
    device = q.device
    p = torch.empty_like(q)
    w = torch.empty((rows,), dtype=torch.float32, device=device)
    # the two rho sums, then M: returned tensors start at the buffer's start (inductor requires 16-byte alignment)
    sums = torch.zeros((_ALIGN + (rank * rank if sum_m else 0),), dtype=torch.float32, device=device)
    beta = w if sum_m else torch.empty((rows,), dtype=torch.float32, device=device)
    _launch(_gate_backward_kernel, (slabs,), warps,
            (q, a_raw, coef, gram_a, p, w, sums[_ALIGN:], sums, beta), (rows, rank, per_slab),
            {"BLOCK_T": block_t, "BLOCK_R": block_r, "SUM_M": sum_m})
    m = sums[_ALIGN:] if sum_m else torch.mm((a_raw * beta[:, None]).t(), a_raw)
    return p, w, _times_small(B, m, base, rank), sums[:2]


@_on_tensor_device
def lorentz_full_backward(q, a_raw, point, gram_point, scalars, coefficients, a_time, B, base):
    """`functional._lorentz_full_backward_torch` in two launches: ``(dL/d a_raw, w, base + B M, [dL/dA[:, 0],
    rho])``, the sums over tokens by atomic float32 adds (as in `gate_backward`)."""
    rows, rank = a_raw.shape
    blocks, warps = _full_backward_config(rank)  # tiles of the space coordinates (see the kernel)
    slabs, per_slab = _slabs(rows, blocks["BLOCK_T"], 32)
    device = q.device
    p_a = torch.empty_like(a_raw)
    w = torch.empty((rows,), dtype=torch.float32, device=device)
    points = rank + 1
    vector = _cdiv(rank + 2, _ALIGN) * _ALIGN  # dL/dA[:, 0] and rho, padded; then M (aligned, see above)
    sums = torch.zeros((vector + points * points,), dtype=torch.float32, device=device)
    m = sums[vector:]
    beta = w if blocks["SUM_HH"] else torch.empty((rows,), dtype=torch.float32, device=device)
    _launch(_lorentz_full_backward_kernel, (slabs,), warps,
            (q, a_raw, point, gram_point, scalars, coefficients, a_time, p_a, w, m, sums, beta), (rows, rank, per_slab),
            blocks)
    if not blocks["SUM_HH"]:
        h = point[:, 1:]
        m.view(points, points)[1:, 1:].add_(torch.mm((h * beta[:, None]).t(), h))
    return p_a, w, _times_small(B, m, base, points), sums[:rank + 2]


def _times_small(B, m, base, rank):
    """``base + B M`` for B and base (d x rank) and the (rank x rank) matrix M at the start of ``m``. The sum is
    formed here because ``torch.addmm(base, ...)`` would first copy base into its output (one launch more)."""
    d_out = B.shape[0]
    out = torch.empty_like(B)
    blocks, warps = _times_small_blocks(rank)
    _launch(_matmul_small_kernel, (max(1, _cdiv(d_out, blocks["BLOCK_D"])),), warps,
            (B, m, base, out), (d_out, rank), blocks)
    return out


@_on_tensor_device
def gate_forward(a_raw, norm_x, gram, log_ratios, k0, s0, variant, scaling, theta_max, with_coefficients):
    """``(Z, coefficients, a B^T B)``: ``Z = scaling G a`` (rows x r) and, if asked, the backward's per-token
    coefficients (rows x 5; see `functional._gate_coefficients`) and ``a (B^T B)`` (rows x r), else None."""
    rows, rank = a_raw.shape
    z = torch.empty_like(a_raw)
    coef = torch.empty((rows, 5), dtype=torch.float32, device=a_raw.device) if with_coefficients else z
    gram_a = torch.empty_like(a_raw) if with_coefficients else z
    block_t, block_r, block_c, warps = _forward_blocks(rank)
    theta, sinh_theta = _variant_constants(variant, theta_max)
    if rows:
        _launch(_gate_forward_kernel, (_cdiv(rows, block_t),), warps,
                (a_raw, norm_x, gram, log_ratios, z, coef, gram_a),
                (rows, rank, float(k0), float(s0), float(scaling), theta, sinh_theta),
                {"VARIANT": VARIANT_IDS[variant], "WITH_COEF": with_coefficients, "BLOCK_T": block_t,
                 "BLOCK_R": block_r, "BLOCK_C": block_c})
    return (z, coef, gram_a) if with_coefficients else (z, None, None)


@_on_tensor_device
def lorentz_full_forward(a_raw, a_time, norm_x, gram, log_ratios, k0, s0, scaling, theta_max, with_coefficients):
    """``(Z, terms)`` of "lorentz-full": Z (rows x (r + 1)); terms = ``(P, P B^T B, scalars, C)`` for the backward
    (see `functional._lorentz_full_terms`), or None."""
    rows, rank = a_raw.shape
    device = a_raw.device
    z = torch.empty((rows, rank + 1), dtype=torch.float32, device=device)
    if with_coefficients:
        point, gram_point = torch.empty_like(z), torch.empty_like(z)
        scalars = torch.empty((rows, 4), dtype=torch.float32, device=device)
        coefficients = torch.empty((rows, 4, 3), dtype=torch.float32, device=device)
    else:
        point = gram_point = scalars = coefficients = z
    block_t, block_r, block_c, warps = _forward_blocks(rank + 1)
    if rows:
        _launch(_lorentz_full_forward_kernel, (_cdiv(rows, block_t),), warps,
                (a_raw, a_time, norm_x, gram, log_ratios, z, point, gram_point, scalars, coefficients),
                (rows, rank, float(k0), float(s0), float(scaling), float(theta_max), math.sinh(theta_max)),
                {"WITH_COEF": with_coefficients, "BLOCK_T": block_t, "BLOCK_R": block_r, "BLOCK_C": block_c})
    return z, ((point, gram_point, scalars, coefficients) if with_coefficients else None)


@_on_tensor_device
def add_gated_(out, y, x, log_ratios, k0, s0, variant, scaling, theta_max) -> None:
    """``out += scaling G y / s`` in place, per row, with G from ``|x|`` and ``|y|`` (the no-grad branch).

    ``out`` (rows x d_out, the base layer's output, any float dtype), ``y = x A^T B^T`` (rows x d_out, float32) and
    ``x`` (rows x d_in, any float dtype) are contiguous. One kernel takes both row norms, the gate and the sum,
    in float32, rounding once to ``out``'s dtype.
    """
    rows, d_out = y.shape
    theta, sinh_theta = _variant_constants(variant, theta_max)
    if rows:
        _launch(_add_gated_kernel, (rows,), 4,
                (out, y, x, log_ratios), (x.shape[1], d_out, float(k0), float(s0), float(scaling), theta, sinh_theta),
                {"VARIANT": VARIANT_IDS[variant], "BLOCK": 1024})


@_on_tensor_device
def add_lorentz_full_(out, y_raw, x, a_raw, A, B, v, log_ratios, k0, s0, scaling, theta_max) -> None:
    """The "lorentz-full" counterpart of `add_gated_`: ``out += scaling asinhc(|B P| / sqrt(K)) B P`` in place, per
    row, from ``a_raw = x A_s^T`` (rows x r), ``y_raw = a_raw B_s^T`` (rows x d_out), ``v = B_s A[:, 0]`` (d_out) and
    the weights' time columns ``A[:, 0]``, ``B[:, 0]`` (see `_add_lorentz_full_kernel`; all float32, ``out`` and
    ``x`` any float dtype, rows contiguous)."""
    rows, d_out = y_raw.shape
    rank = a_raw.shape[1]
    if rows:
        _launch(_add_lorentz_full_kernel, (rows,), 4,
                (out, y_raw, x, a_raw, A, B, v, log_ratios),
                (x.shape[1], d_out, rank, A.stride(0), B.stride(0), float(k0), float(s0), float(scaling),
                 float(theta_max), math.sinh(theta_max)),
                {"BLOCK": 1024, "BLOCK_R": _add_lorentz_full_block(rank)})


def _add_lorentz_full_block(rank: int) -> int:
    return max(16, _next_power_of_2(rank))


# Up to FUSED_MAX_ROWS tokens, and for layers with d_in + 2 d_out <= FUSED_MAX_WIDTH, the eager no-grad branch is
# one launch of `_add_fused_kernel` (a prefill at batch 1, an eager decoding step); otherwise LoRA's two cuBLAS
# matmuls and one `add_gated_`/`add_lorentz_full_` launch. Each program of the one kernel reads all of A and twice
# all of B, one tile after another, so its GPU time grows with the width, while the launches it saves cost host
# time (benchmarks/no_grad_branch.py times both paths per layer shape, benchmarks/prefill.py whole models).
# Narrow layers (d_in + 2 d_out <= FUSED_NARROW_WIDTH: a SmolLM2-sized model's) take the one kernel up to
# FUSED_NARROW_MAX_ROWS tokens (a batched prefill): there its GPU time is about the matmul path's, and it saves that
# path's three other launches, which bound a small model's prefill on the host. A wide layer's one kernel leaves
# the GPU idle at a few hundred tokens (too few programs, each reading the whole of A and B) and runs two to four
# times longer than the matmuls. (no_grad_branch.py; benchmarks/RESULTS.md, seventh session.)
FUSED_MAX_ROWS = 256
FUSED_MAX_WIDTH = 16384
FUSED_NARROW_WIDTH = 4096
FUSED_NARROW_MAX_ROWS = 16384
# Wider layers (above FUSED_MAX_WIDTH: Llama-3-8B's up and down projections) can take the one kernel with |y| from
# B's Gram matrix (`cached_gram`) and d_out split in slices of FUSED_SPLIT_COLUMNS across programs, up to
# FUSED_SPLIT_MAX_ROWS tokens (an eager decoding step). Off (0) until timed on a GPU: `no_grad_branch.py` times
# it as "one kernel, split".
FUSED_SPLIT_MAX_ROWS = 0
FUSED_SPLIT_COLUMNS = 512


@functools.lru_cache(maxsize=None)
def _fused_blocks(rank: int) -> tuple[dict, int]:
    """Blocks and warps of `_add_fused_kernel` for adapters of this rank (space rank for "lorentz-full")."""
    block_r = max(16, _next_power_of_2(rank))
    width_k, width_n = {16: (64, 128), 32: (64, 128), 64: (64, 64)}.get(block_r, (32, 32))
    return {"BLOCK_T": 16, "BLOCK_K": width_k, "BLOCK_N": width_n, "BLOCK_R": block_r}, 8


def fuses(rows: int, d_in: int, d_out: int) -> bool:
    """Whether `add_fused_` takes the no-grad branch of ``rows`` tokens of a (d_in -> d_out) layer (see
    `FUSED_MAX_ROWS`, `FUSED_MAX_WIDTH` and the narrow layers' `FUSED_NARROW_WIDTH`, `FUSED_NARROW_MAX_ROWS`)."""
    width = d_in + 2 * d_out
    max_rows = FUSED_NARROW_MAX_ROWS if width <= FUSED_NARROW_WIDTH else FUSED_MAX_ROWS
    return rows <= max_rows and width <= FUSED_MAX_WIDTH


def splits(rows: int, d_in: int, d_out: int) -> bool:
    """Whether a layer that `fuses` does not take still takes the one kernel, with d_out split across programs
    and ``|y|`` from B's Gram matrix (up to `FUSED_SPLIT_MAX_ROWS` tokens)."""
    return rows <= FUSED_SPLIT_MAX_ROWS and not fuses(rows, d_in, d_out)


@_on_tensor_device
def add_fused_(out, x, A, B, log_ratios, k0, s0, variant, scaling, theta_max, gram=None) -> None:
    """``out += branch(x)`` in place by one kernel: no cast of x, no matmul launches (`_add_fused_kernel`).

    ``out`` (rows x d_out) and ``x`` (rows x d_in) have contiguous rows, any float dtype; ``A``, ``B`` and
    ``log_ratios`` are float32 with contiguous rows (A (r, d_in) and B (d_out, r), each with a leading time
    column for "lorentz-full"). With ``gram`` (``B^T B``, float32, contiguous: `cached_gram`), ``|y|`` comes from
    it and the programs split ``d_out`` in slices of `FUSED_SPLIT_COLUMNS` (for wide layers, `splits`)."""
    if x.shape[0]:
        _launch_fused(out, x, A, B, log_ratios, k0, s0, variant, scaling, theta_max, gram)


def _launch_fused(out, x, A, B, log_ratios, k0, s0, variant, scaling, theta_max, gram, partials=None) -> None:
    """The launch of `_add_fused_kernel` for `add_fused_` and, with ``partials = (part, squared, count)`` (pass 1
    of the two-pass form, `_partial_point_kernel`'s output), for `add_two_pass_`."""
    rows, d_in = x.shape
    d_out = out.shape[1]
    theta, sinh_theta = _variant_constants(variant, theta_max)
    blocks, warps = _fused_blocks(A.shape[0])
    slice_columns = FUSED_SPLIT_COLUMNS if gram is not None else d_out
    part, squared, count = partials if partials is not None else (log_ratios, log_ratios, 0)
    _launch(_add_fused_kernel, (_cdiv(rows, blocks["BLOCK_T"]), _cdiv(d_out, slice_columns)), warps,
            (out, x, A, B, log_ratios, gram if gram is not None else log_ratios, part, squared),
            (rows, d_in, d_out, A.shape[0], A.stride(0), B.stride(0), B.shape[1], slice_columns, float(k0),
             float(s0), float(scaling), theta, sinh_theta),
            _fused_constants(variant, gram is not None, count, A.shape[0]))


@functools.lru_cache(maxsize=None)
def _fused_constants(variant: str, gram: bool, parts: int, rank: int) -> dict:
    """The compile-time constants of `_add_fused_kernel`, in its order."""
    return {"VARIANT": VARIANT_IDS[variant], "TIME": int(variant == "lorentz-full"), "GRAM": int(gram),
            "PARTS": parts, **_fused_blocks(rank)[0]}


# Layers too wide for the one kernel (`fuses`: Llama-3-8B's up and down projections) can take the branch, up to
# TWO_PASS_MAX_ROWS[variant] tokens, in two launches instead of the matmul path (`add_two_pass_`):
# `_partial_point_kernel` splits ``x A^T`` and ``|x|^2`` over slices of TWO_PASS_COLUMNS input columns across
# programs, and `_add_fused_kernel` sums the parts, takes ``|y|`` from B's Gram matrix and adds its slice of d_out.
# On an H200 it takes 13-55 us of GPU time on those layers at 1-256 tokens, against 19-79 us for the matmul path.
# Eager decoding is bound by host time, though: there two launches replace "lorentz-full"'s five operations (a
# clear gain), but cost about as much as "lorentz"'s four, which it leaves on the matmul path. Where the one kernel
# is taken, one launch beats two on the host, although the one kernel takes 85-114 us of GPU time on the 8B q and
# k/v shapes (benchmarks/RESULTS.md, tenth session).
TWO_PASS_MAX_ROWS = {"lorentz": 0, "stereographic": 0, "lorentz-full": 256}
TWO_PASS_COLUMNS = 256
TWO_PASS_BLOCK_K = 64  # with the one kernel's token blocks and 8 warps: no spills on sm_90 at ranks 8-127


def two_pass(rows: int, d_in: int, d_out: int, variant: str) -> bool:
    """Whether `add_two_pass_` takes the no-grad branch of ``rows`` tokens of a (d_in -> d_out) layer of this
    variant that the one kernel (`fuses`) does not take."""
    return rows <= TWO_PASS_MAX_ROWS.get(variant, 0) and not fuses(rows, d_in, d_out)


@_on_tensor_device
def add_two_pass_(out, x, A, B, log_ratios, k0, s0, variant, scaling, theta_max, gram) -> None:
    """``out += branch(x)`` in place by two launches (see `TWO_PASS_MAX_ROWS`); arguments as `add_fused_`, with
    ``gram`` (``B^T B``, `cached_gram`) required."""
    rows, d_in = x.shape
    if not rows:
        return
    rank = A.shape[0]
    blocks, warps = _fused_blocks(rank)
    parts = _cdiv(d_in, TWO_PASS_COLUMNS)
    part = torch.empty((parts * rows * rank + parts * rows,), dtype=torch.float32, device=x.device)
    squared = part[parts * rows * rank:]
    _launch(_partial_point_kernel, (_cdiv(rows, blocks["BLOCK_T"]), parts), warps, (x, A, part, squared),
            (rows, d_in, rank, A.stride(0), TWO_PASS_COLUMNS),
            {"TIME": int(variant == "lorentz-full"), "BLOCK_T": blocks["BLOCK_T"], "BLOCK_K": TWO_PASS_BLOCK_K,
             "BLOCK_R": blocks["BLOCK_R"]})
    _launch_fused(out, x, A, B, log_ratios, k0, s0, variant, scaling, theta_max, gram, (part, squared, parts))


_GRAMS = WeakIdKeyDictionary()  # B -> ((address, version, shape), B^T B); an entry goes with its B


def cached_gram(B: torch.Tensor) -> torch.Tensor:
    """``B^T B`` (float32, contiguous) of an adapter's B for the no-grad one kernel on wide layers, computed once
    and reused while B keeps its storage and its version counter (every in-place change, such as an optimizer
    step or ``load_state_dict``, moves the counter and makes it anew)."""
    if B.is_inference():  # no version counter to tell an in-place change by: made anew each call
        with torch.no_grad():
            return torch.mm(B.t(), B).contiguous()
    stamp = (B.data_ptr(), B._version, tuple(B.shape))
    entry = _GRAMS.get(B)
    if entry is None or entry[0] != stamp:
        with torch.no_grad():
            entry = (stamp, torch.mm(B.t(), B).contiguous())
        _GRAMS[B] = entry
    return entry[1]
