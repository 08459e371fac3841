"""Check the HypLoRA branches on the GPU against the literal float64 reference on the CPU.

For each variant (and the reference compat mode) it compares the outputs and the gradients with respect to
x, A, B, K and s of the float32 GPU computation (bf16 input, as in training) with the float64 step-by-step
form, and the no-grad output (the decoding path), and prints the largest relative errors; then the same for
the branches compiled whole by torch.compile (inductor), and, on a GPU, the Triton path against the eager path.
Exits non-zero when an error exceeds the tolerance.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import os
import sys

import torch
from _common import relative_error

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from hyplora.adapter import functional as Fn  # noqa: E402
from hyplora.adapter import kernels  # noqa: E402

TOLERANCE = 1e-3  # relative, float32 GPU math (bf16-rounded inputs are fed to both sides)


def check(variant: str, device: torch.device, compiled: bool = False, r: int = 32) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    d_in, d_out, tokens = 4096, 1024, 512
    full = variant == "lorentz-full"
    x = (torch.randn(tokens, d_in, generator=gen) * torch.logspace(-3, 1.5, tokens)[:, None]).to(torch.bfloat16)
    A = torch.randn(r, d_in + full, generator=gen) / d_in**0.5
    B = torch.randn(d_out, r + full, generator=gen) / r**0.5
    K = torch.tensor([1.3])
    s = torch.tensor([d_in**0.5])
    upstream = torch.randn(tokens, d_out, generator=gen)

    def run(tensors, fn):
        leaves = [t.clone().requires_grad_(True) for t in tensors]
        out = fn(*leaves)
        (out * upstream.to(out)).sum().backward()
        return out.detach(), [leaf.grad for leaf in leaves]

    if variant == "reference":
        fast = lambda x, A, B, K, s: Fn.reference_lorentz_branch(x, A, B, K, s, 4.0)  # noqa: E731
        literal = fast
    else:
        fast = lambda x, A, B, K, s: Fn.BRANCHES[variant](x, A, B, K, s, 4.0, 12.0)  # noqa: E731
        literal = lambda x, A, B, K, s: Fn.LITERAL_BRANCHES[variant](x, A, B, K, s, 4.0, 12.0)  # noqa: E731
    if compiled:  # inductor around the opaque operations (on a GPU: the Gram-parts, gate and backward kernels)
        torch._dynamo.reset()
        fast = torch.compile(fast, fullgraph=True, dynamic=False)
    on_device = [x.float().to(device), A.to(device), B.to(device), K.to(device), s.to(device)]
    gpu = run(on_device, fast)
    cpu = run([x.double(), A.double(), B.double(), K.double(), s.double()], literal)
    errors = {"output": relative_error(gpu[0], cpu[0])}
    for name, g, c in zip(["x", "A", "B", "K", "s"], gpu[1], cpu[1]):
        errors[f"grad {name}"] = relative_error(g, c)
    with torch.no_grad():  # the inference path (decoding): no Gram matrix off the Triton path
        errors["no-grad output"] = relative_error(fast(*on_device), cpu[0])
        # the eager no-grad layer's paths on a GPU: more than kernels.FUSED_MAX_ROWS tokens, two matmuls and one
        # Triton kernel adding into the output; up to it (here d_in + 2 d_out <= FUSED_MAX_WIDTH), one kernel for
        # all (1 token: an eager decoding step)
        out = torch.zeros(tokens, d_out, device=device)
        x_bf16, A_dev, B_dev, K_dev, s_dev = x.to(device), *on_device[1:]
        if not compiled and variant != "reference" and Fn.adds_in_place(out, variant, x_bf16, A_dev):
            log_ratios = torch.cat([K_dev.reshape(1).log(), s_dev.reshape(1).log()])
            assert not kernels.fuses(tokens, d_in, d_out)
            Fn.add_gated_branch_(out, variant, x_bf16, A_dev, B_dev, log_ratios, 1.0, 1.0, 4.0, 12.0)
            errors["in-place no-grad"] = relative_error(out, cpu[0])
            for rows in (1, 200):
                assert kernels.fuses(rows, d_in, d_out)
                part = torch.zeros(rows, d_out, device=device)
                # the last rows: the largest inputs, past the series cut-offs and the radius cap
                Fn.add_gated_branch_(part, variant, x_bf16[-rows:], A_dev, B_dev, log_ratios, 1.0, 1.0, 4.0, 12.0)
                errors[f"one kernel, {rows} rows"] = relative_error(part, cpu[0][-rows:])
    return errors


def _in_place_errors(variant: str, device: torch.device, shapes, token_counts, takes, seed: int) -> dict[str, float]:
    """`functional.add_gated_branch_` against the float64 literal branch for each (d_in, d_out) and token count,
    asserting first that ``takes(tokens, d_in, d_out)`` (the dispatch under test) holds."""
    gen = torch.Generator().manual_seed(seed)
    errors = {}
    full = variant == "lorentz-full"
    for d_in, d_out in shapes:
        A = torch.randn(32, d_in + full, generator=gen) / d_in**0.5
        B = torch.randn(d_out, 32 + full, generator=gen) / 32**0.5
        K, s = torch.tensor([1.3]), torch.tensor([d_in**0.5])
        log_ratios = torch.cat([K.log(), s.log()]).to(device)
        A_dev, B_dev = A.to(device), B.to(device)
        for tokens in token_counts:
            assert takes(tokens, d_in, d_out), (tokens, d_in, d_out)
            scales = torch.logspace(-3, 1.5, tokens)[:, None]
            x = (torch.randn(tokens, d_in, generator=gen) * scales).to(torch.bfloat16)
            reference = Fn.LITERAL_BRANCHES[variant](x.double(), A.double(), B.double(), K.double(), s.double(), 4.0,
                                                     12.0)
            out = torch.zeros(tokens, d_out, device=device)
            with torch.no_grad():
                Fn.add_gated_branch_(out, variant, x.to(device), A_dev, B_dev, log_ratios, 1.0, 1.0, 4.0, 12.0)
            errors[f"{d_in}x{d_out}, {tokens} rows"] = relative_error(out, reference)
    return errors


def check_narrow_one_kernel(variant: str, device: torch.device, token_counts=(4096, 16384),
                            shapes=((576, 576), (1536, 576))) -> dict[str, float]:
    """The eager no-grad one kernel where `kernels.fuses` takes it for a batched prefill: SmolLM2's narrow layers
    (d_in + 2 d_out <= kernels.FUSED_NARROW_WIDTH) at 4096 and 16384 tokens, against the float64 literal branch."""
    return _in_place_errors(variant, device, shapes, token_counts, kernels.fuses, seed=2)


def check_split_one_kernel(variant: str, device: torch.device, token_counts=(1, 16),
                           shapes=((4096, 14336), (14336, 4096)), columns: int | None = None) -> dict[str, float]:
    """The eager no-grad one kernel on wide layers with ``|y|`` from B's Gram matrix and ``d_out`` split across
    programs (`kernels.splits`, off by default: switched on here), against the float64 literal branch."""
    names = ("FUSED_MAX_ROWS", "FUSED_NARROW_MAX_ROWS", "FUSED_SPLIT_MAX_ROWS", "FUSED_SPLIT_COLUMNS")
    saved = {name: getattr(kernels, name) for name in names}
    # the split path for every shape given (small ones too, for the CI run of this check)
    kernels.FUSED_MAX_ROWS = kernels.FUSED_NARROW_MAX_ROWS = 0
    kernels.FUSED_SPLIT_MAX_ROWS = max(token_counts)
    kernels.FUSED_SPLIT_COLUMNS = columns or kernels.FUSED_SPLIT_COLUMNS
    try:
        return _in_place_errors(variant, device, shapes, token_counts, kernels.splits, seed=3)
    finally:
        for name, value in saved.items():
            setattr(kernels, name, value)


def check_two_pass(variant: str, device: torch.device, token_counts=(1, 16),
                   shapes=((4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096)),
                   columns: int | None = None) -> dict[str, float]:
    """The eager no-grad branch in two launches (`kernels.two_pass`; by default lorentz-full's widest layers only,
    switched on here for every shape): ``x A^T`` and ``|x|^2`` split over the input columns, then the split kernel
    summing the parts, with ``|y|`` from B's Gram matrix; against the float64 literal branch, on the 8B shape's
    layers."""
    names = ("TWO_PASS_MAX_ROWS", "TWO_PASS_COLUMNS", "FUSED_MAX_ROWS", "FUSED_NARROW_MAX_ROWS")
    saved = {name: getattr(kernels, name) for name in names}
    kernels.TWO_PASS_MAX_ROWS = dict.fromkeys(kernels.VARIANT_IDS, max(token_counts))
    kernels.TWO_PASS_COLUMNS = columns or kernels.TWO_PASS_COLUMNS
    # the two-pass form for every shape given, those the one kernel takes too (small ones too, for the CI run)
    kernels.FUSED_MAX_ROWS = kernels.FUSED_NARROW_MAX_ROWS = 0
    try:
        return _in_place_errors(variant, device, shapes, token_counts,
                                lambda *shape: kernels.two_pass(*shape, variant), seed=5)
    finally:
        for name, value in saved.items():
            setattr(kernels, name, value)


def check_gram_precision(variant: str, device: torch.device, precision: str = "tf32x3") -> dict[str, float]:
    """The torch.compile'd branch at ranks 32 and 100 with the compiled path's Gram matrix at ``precision``
    (`kernels.GRAM_PRECISION`, switched on here), against the float64 literal branch."""
    saved, kernels.GRAM_PRECISION = kernels.GRAM_PRECISION, precision
    try:
        return {f"r{r} {name}": error for r in (32, 100)
                for name, error in check(variant, device, compiled=True, r=r).items()}
    finally:
        kernels.GRAM_PRECISION = saved


def check_fused_against_eager(variant: str, device: torch.device, x_dtype: torch.dtype,
                              compiled: bool = False) -> dict[str, float]:
    """The Triton path against the eager torch path on the same GPU (same float32 math, bf16 or float32 x);
    ``compiled``: the Triton path torch.compile'd (the opaque operations, and for a bf16 x the backward's ``w x``
    term from x's bits, `functional._w_term_input`)."""
    gen = torch.Generator().manual_seed(1)
    d_in, d_out, r, tokens = 4096, 14336, 32, 1000
    x = (torch.randn(tokens, d_in, generator=gen) * torch.logspace(-3, 1.5, tokens)[:, None]).to(x_dtype).to(device)
    full = variant == "lorentz-full"
    A = (torch.randn(r, d_in + full, generator=gen) / d_in**0.5).to(device)
    B = (torch.randn(d_out, r + full, generator=gen) / r**0.5).to(device)
    log_ratios = torch.tensor([0.2, -0.1], device=device)  # (rho_k, rho_s)
    upstream = torch.randn(tokens, d_out, generator=gen).to(device)

    def branch(*leaves):
        return Fn.gated_branch(variant, *leaves, 1.3, d_in**0.5, 4.0, 12.0)

    if compiled:
        torch._dynamo.reset()
    fast = torch.compile(branch, fullgraph=True, dynamic=False) if compiled else branch

    def run(fn):
        leaves = [t.clone().requires_grad_(True) for t in (x, A, B, log_ratios)]
        out = fn(*leaves)
        (out * upstream).sum().backward()
        return [out.detach()] + [leaf.grad for leaf in leaves[:3]] + [leaves[3].grad[0:1], leaves[3].grad[1:2]]

    assert kernels.usable(x, A, variant), "the Triton path is not in use"
    fused = run(fast)
    os.environ["HYPLORA_TRITON"] = "0"
    try:
        eager = run(branch)
    finally:
        del os.environ["HYPLORA_TRITON"]
    names = ["output", "grad x", "grad A", "grad B", "grad rho_k", "grad rho_s"]
    return {n: ((f.double() - e.double()).norm() / e.double().norm().clamp_min(1e-300)).item()
            for n, f, e in zip(names, fused, eager)}


def check_direct_launch(variant: str, device: torch.device) -> tuple[float, set]:
    """The same computations launched through Triton's JIT entry and directly through the kept compiled kernels
    (`kernels._launch`): the eager training forward and backward (the forward kernel), and the no-grad branch on
    the one-kernel path (1 token), the split one kernel (1 token, switched on) and the matmul path (1000
    tokens). Returns the largest absolute difference (0 when bit for bit the same) and the names of the kernels
    launched directly (none if any launch of the second run went through Triton's JIT entry). The compiled path's
    kernels sum with atomic adds, whose last bits vary by themselves, so they are left out."""
    gen = torch.Generator().manual_seed(4)
    d_in, d_out, r = 4096, 1024, 32
    full = variant == "lorentz-full"
    x = (torch.randn(1000, d_in, generator=gen) * torch.logspace(-3, 1.5, 1000)[:, None]).to(torch.bfloat16)
    x = x.to(device)
    A = (torch.randn(r, d_in + full, generator=gen) / d_in**0.5).to(device)
    B = (torch.randn(d_out, r + full, generator=gen) / r**0.5).to(device)
    log_ratios = torch.tensor([0.2, -0.1], device=device)
    upstream = torch.randn(1000, d_out, generator=gen).to(device)

    def run():
        leaves = [t.clone().requires_grad_(True) for t in (x, A, B, log_ratios)]
        out = Fn.gated_branch(variant, *leaves, 1.3, d_in**0.5, 4.0, 12.0)
        (out * upstream).sum().backward()
        results = [out.detach()] + [leaf.grad for leaf in leaves]
        with torch.no_grad():
            for rows in (1, 1000):
                part = torch.zeros(rows, d_out, device=device)
                Fn.add_gated_branch_(part, variant, x[-rows:], A, B, log_ratios, 1.3, d_in**0.5, 4.0, 12.0)
                results.append(part)
            saved = kernels.FUSED_MAX_ROWS, kernels.FUSED_SPLIT_MAX_ROWS
            kernels.FUSED_MAX_ROWS, kernels.FUSED_SPLIT_MAX_ROWS = 0, 1
            try:
                part = torch.zeros(1, d_out, device=device)
                Fn.add_gated_branch_(part, variant, x[-1:], A, B, log_ratios, 1.3, d_in**0.5, 4.0, 12.0)
                results.append(part)
            finally:
                kernels.FUSED_MAX_ROWS, kernels.FUSED_SPLIT_MAX_ROWS = saved
        torch.cuda.synchronize(device)
        return results

    kernels.DIRECT_LAUNCH = False
    try:
        through_jit = run()
    finally:
        kernels.DIRECT_LAUNCH = True
    kernels._COMPILED.clear()
    run()  # keeps the compiled kernels
    jit_function = kernels.triton.runtime.jit.JITFunction
    entries, launched = [], set()
    through_entry = jit_function.run

    def counted(self, *args, **kwargs):  # any launch through Triton's JIT entry in the run below
        entries.append(self)
        return through_entry(self, *args, **kwargs)

    jit_function.run = counted
    try:
        direct = run()
    finally:
        jit_function.run = through_entry
    if not entries:
        launched = {kernel.fn.__name__ for kernel in _kept_kernels()}
    return max((a - b).abs().max().item() for a, b in zip(direct, through_jit)), launched


def _kept_kernels():
    by_id = {id(value): value for value in vars(kernels).values() if isinstance(value, kernels.triton.JITFunction)}
    return {by_id[key[0]] for key in kernels._COMPILED if key[0] in by_id}


def report(title: str, variants: list[str], check) -> bool:
    """Print ``check(variant)``'s relative errors per variant against `TOLERANCE`; True if any exceeds it."""
    print(title)
    failed = False
    for variant in variants:
        errors = check(variant)
        worst = max(errors.values())
        failed |= worst > TOLERANCE
        print(f"{variant:14s} " + "  ".join(f"{k} {v:.1e}" for k, v in errors.items())
              + ("  OK" if worst <= TOLERANCE else "  FAIL"))
    return failed


def main() -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}")
    gated = ["lorentz", "lorentz-full", "stereographic"]
    failed = report("GPU fast path (Triton where usable) against the float64 literal reference on the CPU:",
                    gated + ["reference"], lambda variant: check(variant, device))
    failed |= report("torch.compile'd (inductor, fullgraph) branches against the float64 literal reference on the CPU:",
                     gated, lambda variant: check(variant, device, compiled=True))
    failed |= report("GPU fast path at rank 100 (the training forward kernels sum a B^T B over slices of the rank), "
                     "against the float64 literal reference on the CPU:", gated,
                     lambda variant: check(variant, device, r=100))
    if device.type == "cuda":
        failed |= report("torch.compile'd branches at ranks 32 and 100 with B^T B in three TF32 products "
                         "(kernels.GRAM_PRECISION = \"tf32x3\", switched on for this check), against the float64 "
                         "literal reference on the CPU:", gated, lambda variant: check_gram_precision(variant, device))
        failed |= report("eager no-grad one kernel on narrow layers at a batched prefill's token counts, against the "
                         "float64 literal reference on the CPU:", gated,
                         lambda variant: check_narrow_one_kernel(variant, device))
        failed |= report("eager no-grad one kernel on wide layers, |y| from B's Gram matrix, d_out split (switched on "
                         "for this check), against the float64 literal reference on the CPU:", gated,
                         lambda variant: check_split_one_kernel(variant, device))
        failed |= report("eager no-grad branch in two launches, x A^T split over the input columns (switched on for "
                         "this check), against the float64 literal reference on the CPU:", gated,
                         lambda variant: check_two_pass(variant, device))
        print("direct launches of the kept compiled kernels against Triton's JIT entry (kernels._launch), bit for "
              "bit:")
        for variant in gated:
            difference, launched = check_direct_launch(variant, device)
            bad = difference != 0 or not launched
            failed |= bad
            print(f"{variant:14s} largest difference {difference:.1e}; launched directly: {', '.join(sorted(launched))}"
                  + ("  FAIL" if bad else "  OK"))
        print("Triton path against the eager path on the GPU (HYPLORA_TRITON=0), bf16 and float32 x, and the "
              "Triton path torch.compile'd with a bf16 x:")
        for variant in ["lorentz", "stereographic", "lorentz-full"]:
            for x_dtype, compiled in ((torch.bfloat16, False), (torch.float32, False), (torch.bfloat16, True)):
                errors = check_fused_against_eager(variant, device, x_dtype, compiled)
                # grad x of a bf16 input is rounded to bf16 on both sides, possibly differently
                limits = {k: (1e-2 if k == "grad x" and x_dtype == torch.bfloat16 else 1e-4) for k in errors}
                bad = any(errors[k] > limits[k] for k in errors)
                failed |= bad
                label = str(x_dtype) + (", compiled" if compiled else "")
                print(f"{variant:14s} {label:25s} " + "  ".join(f"{k} {v:.1e}" for k, v in errors.items())
                      + ("  FAIL" if bad else "  OK"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
