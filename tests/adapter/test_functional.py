"""The branch functions: fast forms against step-by-step forms and against geoopt, in float64."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from hyplora.adapter import functional as Fn

VARIANTS = ["lorentz", "lorentz-full", "stereographic"]


def make_inputs(variant: str, seed: int = 0, d_in: int = 12, d_out: int = 10, r: int = 4, x_scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    full = variant == "lorentz-full"
    # rows of x from |x| ~ 1e-8 to |x| ~ 1e3 (past the radius bound for the larger ones)
    x = torch.randn(40, d_in, generator=gen, dtype=torch.float64)
    x = x * torch.logspace(-8, 3, 40, dtype=torch.float64)[:, None] * x_scale
    A = torch.randn(r, d_in + full, generator=gen, dtype=torch.float64) / math.sqrt(d_in)
    B = torch.randn(d_out, r + full, generator=gen, dtype=torch.float64) / math.sqrt(r)
    K = torch.tensor([0.7], dtype=torch.float64)
    s = torch.tensor([math.sqrt(d_in)], dtype=torch.float64)
    return x, A, B, K, s


@pytest.mark.parametrize("K_value", [1e-2, 0.7, 1.0, 30.0])
@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_form_equals_literal_form_float64(variant, K_value):
    x, A, B, K, s = make_inputs(variant)
    K = torch.tensor([K_value], dtype=torch.float64)
    fast = Fn.BRANCHES[variant](x, A, B, K, s, 2.0, 12.0)
    literal = Fn.LITERAL_BRANCHES[variant](x, A, B, K, s, 2.0, 12.0)
    torch.testing.assert_close(fast, literal, rtol=1e-6, atol=1e-300)
    assert torch.isfinite(fast).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_inference_path_equals_training_path(variant):
    """Without autograd the branch takes |B z| from y = z B^T (no Gram matrix); with it, from B^T B."""
    x, A, B, K, s = make_inputs(variant, seed=4)
    with torch.no_grad():
        inference = Fn.BRANCHES[variant](x, A, B, K, s, 2.0, 12.0)
    training = Fn.BRANCHES[variant](x.clone().requires_grad_(True), A, B, K, s, 2.0, 12.0)
    assert training.requires_grad and not inference.requires_grad
    torch.testing.assert_close(inference, training.detach(), rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("variant", ["lorentz", "stereographic"])
@pytest.mark.parametrize("theta_max", [12.0, 1.5])
@pytest.mark.parametrize("K_value", [0.3, 1.0, 7.0])
def test_dimensionless_gate_equals_the_gate_in_n_m_and_K(variant, theta_max, K_value):
    """The no-grad path evaluates G from theta = n / sqrt(K) and w = m / sqrt(K) alone; the training path from n,
    m and K. Inputs span the series cut-offs, the radius cap (theta_max 1.5 caps most rows) and large |y|."""
    K = torch.tensor([K_value], dtype=torch.float64)
    n = torch.logspace(-9, 2, 45, dtype=torch.float64).unsqueeze(-1)
    m = torch.logspace(-7, 3, 45, dtype=torch.float64).flip(0).unsqueeze(-1)
    expected = Fn._GATES[variant](n, m, K, theta_max, derivatives=False)[0]
    gate = Fn._dimensionless_gate(n / K.sqrt(), m / K.sqrt(), variant, theta_max)
    torch.testing.assert_close(gate, expected, rtol=1e-12, atol=0.0)
    if theta_max == 1.5:
        assert (n / K.sqrt() > theta_max).any() and (n / K.sqrt() < 0.3).any()  # both sides of the cap are tested


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_of_fast_and_literal_forms_agree(variant):
    x, A, B, K, s = make_inputs(variant, seed=1)
    grads = []
    for fn in (Fn.BRANCHES[variant], Fn.LITERAL_BRANCHES[variant]):
        leaves = [t.clone().requires_grad_(True) for t in (x, A, B, K, s)]
        out = fn(*leaves, 2.0, 12.0)
        weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
        (out * weights).sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    for fast_grad, literal_grad, name in zip(*grads, ["x", "A", "B", "K", "s"]):
        assert torch.isfinite(fast_grad).all(), name
        torch.testing.assert_close(fast_grad, literal_grad, rtol=1e-6, atol=1e-12, msg=name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant):
    x, A, B, K, s = make_inputs(variant, seed=2, d_in=5, d_out=4, r=3)
    x = x[20:26]  # moderate norms, away from the radius bound where the function has a kink
    leaves = tuple(t.clone().requires_grad_(True) for t in (x, A, B, K, s))
    assert torch.autograd.gradcheck(lambda *t: Fn.BRANCHES[variant](*t, 2.0, 12.0), leaves)


def test_lorentz_branch_matches_geoopt_maps():
    """The "lorentz" branch rebuilt from geoopt's exp/log maps (an independent implementation)."""
    x, A, B, K, s = make_inputs("lorentz", seed=3)
    # Rows with geodesic radius between ~0.1 and ~7: below the radius bound (geoopt does not clamp), and away
    # from the origin, where geoopt's arcosh-based log map loses precision (ours uses asinh).
    x = x[24:32]
    manifold = geoopt.manifolds.Lorentz(k=K.squeeze().clone())
    u = x / s
    point = manifold.expmap0(torch.cat([torch.zeros_like(u[:, :1]), u], -1), project=False)
    space = point[:, 1:] @ A.t() @ B.t()
    time = torch.sqrt(K + (space**2).sum(-1, keepdim=True))
    expected = 3.0 * manifold.logmap0(torch.cat([time, space], -1))[:, 1:]
    ours = Fn.lorentz_branch(x, A, B, K, s, 3.0, 12.0)
    # geoopt's log map has ~1e-7 relative error from its clamps in float64
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("variant", ["lorentz", "stereographic"])
def test_small_inputs_reduce_to_lora(variant):
    """Near the origin every map is the identity to first order, so the branch is scaling * B A x / s.

    ("lorentz-full" is excluded: A and B also read time coordinates, which are not small at the origin.)
    """
    x, A, B, K, s = make_inputs(variant, seed=4)
    x = x[:8]  # |x| <= 1e-6
    out = Fn.BRANCHES[variant](x, A, B, K, s, 2.0, 12.0)
    torch.testing.assert_close(out, 2.0 * (x / s) @ A.t() @ B.t(), rtol=1e-6, atol=1e-30)


def test_lorentz_full_at_the_origin_sees_the_time_coordinates():
    """At x = 0 the "lorentz-full" branch is log_o of B (sqrt(K + |A_0 sqrt(K)|^2), A_0 sqrt(K)), not zero."""
    x, A, B, K, s = make_inputs("lorentz-full", seed=4)
    out = Fn.lorentz_full_branch(torch.zeros_like(x[:1]), A, B, K, s, 1.0, 12.0)
    hidden = A[:, 0] * K.sqrt()
    space = B[:, 0] * torch.sqrt(K + hidden @ hidden) + B[:, 1:] @ hidden
    z = space.norm() / K.sqrt()
    torch.testing.assert_close(out[0], space * torch.asinh(z) / z, rtol=1e-12, atol=0)


@pytest.mark.parametrize("variant", ["lorentz", "stereographic"])
def test_branch_is_not_plain_lora_for_large_inputs(variant):
    """The geometry matters: for |x|/s of order sqrt(K) and beyond, the branch differs from LoRA's."""
    x, A, B, K, s = make_inputs(variant, seed=5)
    x = x[30:34]
    out = Fn.BRANCHES[variant](x, A, B, K, s, 2.0, 12.0)
    lora = 2.0 * (x / s) @ A.t() @ B.t()
    assert ((out - lora).norm(dim=-1) / lora.norm(dim=-1) > 0.05).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_agrees_with_float64(variant):
    x, A, B, K, s = make_inputs(variant, seed=6)
    exact = Fn.BRANCHES[variant](x, A, B, K, s, 2.0, 12.0)
    approx = Fn.BRANCHES[variant](*(t.float() for t in (x, A, B, K, s)), 2.0, 12.0)
    torch.testing.assert_close(approx.double(), exact, rtol=2e-4, atol=1e-30)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_float32_copy_of_the_input_is_kept_for_backward(variant):
    """Only per-token and rank-sized float32 tensors are saved; the bf16 input is saved as it is."""
    x, A, B, K, s = make_inputs(variant, seed=7, d_in=64, d_out=48, r=4)
    x = x[10:30].to(torch.bfloat16).requires_grad_(True)
    A, B, K, s = (t.float().requires_grad_(True) for t in (A, B, K, s))
    saved = []

    def pack(tensor):
        saved.append((tensor.dtype, tuple(tensor.shape)))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = Fn.BRANCHES[variant](x, A, B, K, s, 2.0, 12.0)
    big = [entry for entry in saved if len(entry[1]) == 2 and entry[1][0] == x.shape[0] and entry[1][1] >= 48]
    assert big and all(dtype == torch.bfloat16 for dtype, _ in big), big
    out.sum().backward()
    assert x.grad.dtype == torch.bfloat16
    reference_x = x.detach().float().requires_grad_(True)
    Fn.LITERAL_BRANCHES[variant](reference_x, A.detach(), B.detach(), K.detach(), s.detach(), 2.0, 12.0).sum().backward()
    torch.testing.assert_close(x.grad.float(), reference_x.grad, rtol=2e-2, atol=1e-6)


def test_gate_derivatives_match_autograd_across_their_series_cutoffs():
    t = torch.tensor([1e-8, 1e-3, 0.099, 0.101, 0.299, 0.301, 0.49, 0.51, 3.0, 30.0], dtype=torch.float64, requires_grad=True)
    from hyplora.geometry import asinhc, sinhc

    (d_sinhc,) = torch.autograd.grad(sinhc(t).sum(), t)
    (d_asinhc,) = torch.autograd.grad(asinhc(t).sum(), t)
    torch.testing.assert_close(Fn._sinhc_prime(t.detach()), d_sinhc, rtol=1e-9, atol=1e-300)
    torch.testing.assert_close(Fn._asinhc_prime(t.detach()), d_asinhc, rtol=1e-9, atol=1e-300)
    t32 = t.detach().float()
    torch.testing.assert_close(Fn._sinhc_prime(t32).double(), d_sinhc, rtol=2e-5, atol=1e-30)
    torch.testing.assert_close(Fn._asinhc_prime(t32).double(), d_asinhc, rtol=2e-5, atol=1e-30)
