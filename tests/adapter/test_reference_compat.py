"""compat="reference": the paper's released code reproduced, checked against values computed by hand."""

from __future__ import annotations

import math

import peft
import pytest
import torch

from hyplora import HypLoraConfig, HypLoraLinear
from hyplora.adapter import functional as Fn


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def reference_by_hand(x: list[float], a_row: list[float], b_col: list[float], k_raw: float, s: float, scaling: float):
    """The released "hyplora" forward for r = 1, written out with the math module."""
    K = softplus(k_raw) + 1e-6
    sqrt_k = math.sqrt(K)
    x_norm = math.sqrt(sum(v * v for v in x))
    factor = sqrt_k * math.sinh(min(x_norm / s / sqrt_k, 12.0)) / x_norm
    hidden = sum(a * v * factor for a, v in zip(a_row, x))
    space = [b * hidden for b in b_col]
    space_norm = math.sqrt(sum(v * v for v in space))
    time = math.sqrt(space_norm**2 + 1.0 / K)  # the bug: 1/K where the maps use K
    t = time / sqrt_k
    arcosh = math.sqrt(2.0 * max(t - 1.0, 1e-6)) if t < 1.01 else math.acosh(max(t, 1.0 + 1e-7))
    return [scaling * sqrt_k * arcosh * v / space_norm for v in space]


@pytest.mark.parametrize(
    "x, a_row, b_col, k_raw",
    [
        ([3.0, 4.0], [1.0, 0.0], [2.0, 0.0], 1.0),  # large |BAx|: arcosh branch
        ([3.0, 4.0], [0.01, 0.0], [0.5, -0.2], 1.0),  # small |BAx|: t < 1, clamped to 1 + 1e-6
        ([0.3, -0.1], [0.7, 0.2], [1.5, 0.1], -2.0),  # K < 1: t slightly above 1, sqrt(2 eps) branch
    ],
)
def test_reference_lorentz_branch_matches_hand_computation(x, a_row, b_col, k_raw):
    s, scaling = 5.0, 4.0
    out = Fn.reference_lorentz_branch(
        torch.tensor([x], dtype=torch.float64),
        torch.tensor([a_row], dtype=torch.float64),
        torch.tensor([[b] for b in b_col], dtype=torch.float64),
        torch.tensor([k_raw], dtype=torch.float64),
        torch.tensor([s], dtype=torch.float64),
        scaling,
    )
    expected = reference_by_hand(x, a_row, b_col, k_raw, s, scaling)
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_reference_dead_zone_has_constant_output_norm():
    """With K = softplus(1) > 1, outputs for |BAx| below sqrt(K - 1/K) all have norm sqrt(K) sqrt(2e-6)."""
    K = softplus(1.0) + 1e-6
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    A = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    norms = []
    for magnitude in (1e-3, 1e-2, 0.1, 0.5):
        B = torch.tensor([[magnitude], [0.0]], dtype=torch.float64)
        out = Fn.reference_lorentz_branch(x, A, B, torch.tensor([1.0], dtype=torch.float64),
                                          torch.tensor([1.0], dtype=torch.float64), 1.0)
        norms.append(out.norm().item())
    assert norms == pytest.approx([math.sqrt(K) * math.sqrt(2e-6)] * 4, rel=1e-12)
    # The correct math is (almost) linear in |BAx| there: log_o keeps small norms.
    correct = [Fn.lorentz_branch(x, A, torch.tensor([[m], [0.0]], dtype=torch.float64),
                                 torch.tensor([K], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                                 1.0, 12.0).norm().item() for m in (1e-3, 1e-2)]
    assert correct[1] / correct[0] == pytest.approx(10.0, rel=1e-3)


def test_reference_stereographic_branch_matches_hand_computation():
    x, k, scaling = [0.6, -0.8], 0.5, 2.0  # |x|^2 = 1
    lifted = [2 * v / (1 + k * 1.0) for v in x]
    hidden = 0.3 * lifted[0] + 0.4 * lifted[1]  # A = [[0.3, 0.4]]
    space = [1.0 * hidden, -2.0 * hidden]  # B = [[1], [-2]]
    time = math.sqrt(sum(v * v for v in space) + k)
    expected = [scaling * v / (1 + math.sqrt(k) * time) for v in space]
    out = Fn.reference_stereographic_branch(
        torch.tensor([x], dtype=torch.float64), torch.tensor([[0.3, 0.4]], dtype=torch.float64),
        torch.tensor([[1.0], [-2.0]], dtype=torch.float64), torch.tensor([k], dtype=torch.float64), scaling)
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=0)


def test_reference_mode_layer_uses_raw_parameters_and_clips_the_curvature_gradient(tiny_llama):
    config = HypLoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], compat="reference", curvature=1.0,
                           init_lora_weights=False)
    model = peft.get_peft_model(tiny_llama, config)
    layer = next(m for m in model.modules() if isinstance(m, HypLoraLinear))
    assert layer.lora_curvature["default"].item() == 1.0  # the raw k, as in the released `hyplora-1.0`
    assert layer.curvature("default").item() == pytest.approx(softplus(1.0) + 1e-6, rel=1e-6)
    assert layer.lora_feature_scale["default"].item() == pytest.approx(math.sqrt(32), rel=1e-7)
    x = torch.randn(3, 32) * 50
    expected = Fn.reference_lorentz_branch(x, layer.lora_A["default"].weight, layer.lora_B["default"].weight,
                                           layer.lora_curvature["default"], layer.lora_feature_scale["default"], 2.0)
    torch.testing.assert_close(layer.hyperbolic_branch(x, "default"), expected)
    (layer.hyperbolic_branch(x, "default") * 1e6).sum().backward()
    assert 0 < layer.lora_curvature["default"].grad.abs().item() <= 0.01


def test_reference_mode_has_no_lorentz_full():
    with pytest.raises(ValueError, match="lorentz-full"):
        HypLoraConfig(variant="lorentz-full", compat="reference")
