"""Print how the released code's curvature bug changes the HypLoRA branch (numbers quoted in docs/curvature-bug.md).

The released code maps with K = softplus(k) + 1e-6 but recomputes the time coordinate as sqrt(|y|^2 + 1/K).
For K > 1 the point then lies below the hyperboloid's vertex (y_0 / sqrt(K) < 1) until |y| > sqrt(K - 1/K),
arcosh is clamped, and the branch's output norm is a constant however large B A x is.
"""

import math

import torch

from hyplora.adapter import functional as Fn


def main() -> None:
    k_raw = torch.tensor([1.0], dtype=torch.float64)  # the released default, `hyplora-1.0`
    K = Fn.reference_curvature(k_raw)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    A = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # Feature scale chosen so that the mapped input has space part exactly (1, 0): |B A x_s| = |B|.
    s = 1.0 / (math.sqrt(K.item()) * math.asinh(1.0 / math.sqrt(K.item())))
    s = torch.tensor([s], dtype=torch.float64)
    print(f"K = softplus(1) + 1e-6 = {K.item():.6f}; dead zone |BAx| < sqrt(K - 1/K) = "
          f"{math.sqrt(K.item() - 1 / K.item()):.4f}")
    print("| |B A x_s| | reference output norm | correct output norm |")
    print("|---:|---:|---:|")
    for magnitude in (1e-3, 1e-2, 0.1, 0.5, 0.7, 0.75, 1.0, 2.0, 5.0):
        B = torch.tensor([[magnitude], [0.0]], dtype=torch.float64)
        reference = Fn.reference_lorentz_branch(x, A, B, k_raw, s, 1.0).norm().item()
        correct = Fn.lorentz_branch(x, A, B, K, s, 1.0, 12.0).norm().item()
        print(f"| {magnitude:g} | {reference:.6g} | {correct:.6g} |")


if __name__ == "__main__":
    main()
