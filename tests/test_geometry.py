"""hyplora.geometry against geoopt's Lorentz manifold (float64) and closed forms, plus stability properties."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch
from geoopt.manifolds.lorentz import math as geoopt_lorentz
from hypothesis import given, settings
from hypothesis import strategies as st

from hyplora import geometry as G

CURVATURES = [1e-3, 0.37, 1.0, 2.5, 1e3]


def random_tangent(n: int, d: int, scale: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scale


def with_zero_time(u: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(u[..., :1]), u], dim=-1)


@pytest.mark.parametrize("K", CURVATURES)
def test_expmap0_logmap0_distance_match_geoopt(K):
    manifold = geoopt.manifolds.Lorentz(k=torch.tensor(K, dtype=torch.float64))
    # geodesic radii from ~0.01 to ~8 in units of sqrt(K)
    u = random_tangent(64, 7, math.sqrt(K)) * torch.logspace(-2, 0.5, 64, dtype=torch.float64)[:, None]
    ours = G.expmap0(u, K)
    theirs = manifold.expmap0(with_zero_time(u), project=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    # geoopt's log map carries ~1e-7 relative error from its own clamps even in float64.
    torch.testing.assert_close(G.logmap0(ours, K), manifold.logmap0(theirs)[..., 1:], rtol=1e-6, atol=1e-9 * math.sqrt(K))
    torch.testing.assert_close(G.distance0(ours, K), manifold.dist0(theirs), rtol=1e-6, atol=0)
    torch.testing.assert_close(G.distance0(ours, K), u.norm(dim=-1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("K", CURVATURES)
def test_inner_and_distance_match_geoopt(K):
    manifold = geoopt.manifolds.Lorentz(k=torch.tensor(K, dtype=torch.float64))
    x = G.expmap0(random_tangent(32, 5, math.sqrt(K), seed=1), K)
    y = G.expmap0(random_tangent(32, 5, math.sqrt(K), seed=2), K)
    torch.testing.assert_close(G.lorentz_inner(x, y), geoopt_lorentz.inner(x, y), rtol=1e-12, atol=0)
    torch.testing.assert_close(G.distance(x, y, K), manifold.dist(x, y), rtol=1e-6, atol=0)
    torch.testing.assert_close(G.distance(x, x, K), torch.zeros(32, dtype=torch.float64), rtol=0, atol=1e-12)


def test_closed_forms_against_hand_values():
    u = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # |u| = 5
    K = 4.0  # sqrt(K) = 2, theta = 2.5
    x = G.expmap0(u, K)
    expected = [2 * math.cosh(2.5), 2 * math.sinh(2.5) * 0.6, 2 * math.sinh(2.5) * 0.8]
    torch.testing.assert_close(x[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=0)
    assert G.lorentz_inner(x, x).item() == pytest.approx(-K, rel=1e-12)
    assert G.time_coordinate(x[..., 1:], K).item() == pytest.approx(expected[0], rel=1e-14)
    torch.testing.assert_close(G.project(x * torch.tensor([7.0, 1, 1], dtype=torch.float64), K), x, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("K", CURVATURES)
def test_round_trip_and_constraint(K, dtype):
    u = (random_tangent(256, 16, math.sqrt(K), seed=3) * torch.logspace(-6, 0.8, 256, dtype=torch.float64)[:, None]).to(dtype)
    x = G.expmap0(u, K)
    assert x.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(G.logmap0(x, K), u, rtol=tol, atol=0)
    residual = (G.lorentz_inner(x, x) + K) / (x[..., 0] ** 2)  # relative to the size of the terms that cancel
    assert residual.abs().max() < (1e-14 if dtype == torch.float64 else 1e-6)
    assert (x[..., 0] > 0).all()


def test_small_norm_limits_have_no_division_by_zero():
    K = 0.5
    zero = torch.zeros(3, 4, dtype=torch.float64)
    origin = G.expmap0(zero, K)
    torch.testing.assert_close(origin[:, 0], torch.full((3,), math.sqrt(K), dtype=torch.float64))
    assert (origin[:, 1:] == 0).all()
    assert (G.logmap0(origin, K) == 0).all()
    assert (G.distance0(origin, K) == 0).all()
    tiny = torch.full((1, 4), 1e-20, dtype=torch.float64)
    torch.testing.assert_close(G.expmap0(tiny, K)[:, 1:], tiny, rtol=1e-15, atol=0)
    for fn in (lambda v: G.expmap0(v, K).sum(), lambda v: G.logmap0(G.expmap0(v, K), K).sum(),
               lambda v: G.distance0(G.expmap0(v, K), K).sum()):
        v = zero.clone().requires_grad_(True)
        fn(v).backward()
        assert torch.isfinite(v.grad).all()


def test_series_branch_joins_the_closed_form_smoothly():
    t = torch.tensor([0.99e-4, 1.01e-4], dtype=torch.float64)
    torch.testing.assert_close(G.sinhc(t), torch.sinh(t) / t, rtol=1e-15, atol=0)
    torch.testing.assert_close(G.asinhc(t), torch.asinh(t) / t, rtol=1e-15, atol=0)


@settings(max_examples=300, deadline=None)
@given(
    log_norm=st.floats(min_value=-30, max_value=math.log10(1e4)),
    zero=st.booleans(),
    log_k=st.floats(min_value=-3, max_value=3),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_no_nan_or_inf_over_the_documented_ranges(log_norm, zero, log_k, dtype, seed):
    K = 10.0**log_k
    direction = torch.randn(2, 8, generator=torch.Generator().manual_seed(seed))
    u = (direction / direction.norm(dim=-1, keepdim=True) * (0.0 if zero else 10.0**log_norm)).to(dtype)
    u.requires_grad_(True)
    x = G.expmap0(u, K)
    u_back = G.logmap0(x, K)
    dist = G.distance0(x, K)
    for value in (x, u_back, dist, G.time_coordinate(x[..., 1:], K), G.lorentz_inner(x, x)):
        assert torch.isfinite(value.float()).all()
    (u_back.float().sum() + dist.float().sum()).backward()
    assert torch.isfinite(u.grad.float()).all()
    theta = u.detach().double().norm(dim=-1) / math.sqrt(K)
    if dtype == torch.float32 and bool((theta < G.MAX_THETA).all()):
        torch.testing.assert_close(u_back.detach(), u.detach(), rtol=1e-4, atol=1e-30)


def test_radius_is_clamped_not_overflowed():
    u = torch.tensor([[1e4, 0.0]])
    x = G.expmap0(u, 1e-3)
    assert torch.isfinite(x).all()
    assert G.distance0(x, 1e-3).item() == pytest.approx(G.MAX_THETA * math.sqrt(1e-3), rel=1e-5)
    assert x[0, 1] > 0 and x[0, 2] == 0  # direction kept


@pytest.mark.parametrize(
    "fn",
    [
        lambda u, K: G.expmap0(u, K),
        lambda u, K: G.logmap0(G.expmap0(u, K) * 1.0, K),
        lambda u, K: G.distance0(torch.cat([G.time_coordinate(u, K), u], -1), K),
        lambda u, K: G.time_coordinate(u, K),
        lambda u, K: G.distance(G.expmap0(u, K), G.expmap0(u.flip(-1), K), K),
    ],
)
def test_gradcheck_float64(fn):
    u = random_tangent(3, 4, 0.7, seed=5).requires_grad_(True)
    K = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (u, K))
