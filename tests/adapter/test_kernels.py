"""The Triton fast path of every variant, run on the CPU through Triton's interpreter.

The same kernels compile for the GPU (checked there by benchmarks/gpu_check.py); here they must agree with
the eager torch path, which the other adapter tests hold to the float64 step-by-step reference, and with that
reference directly.
"""

import math

import pytest
import torch

pytest.importorskip("triton", reason="Triton is part of the test extras (pip install -e .[test])")

from hyplora.adapter import functional as Fn  # noqa: E402
from hyplora.adapter import kernels  # noqa: E402


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def interpreted(monkeypatch):
    """The Triton path switched on: compiled on a GPU, in Triton's interpreter on a CPU (tests/conftest.py)."""
    if DEVICE == "cpu":
        assert kernels.INTERPRET, "tests/conftest.py sets TRITON_INTERPRET=1 before the kernels are imported"
        monkeypatch.setenv("HYPLORA_TRITON", "interpret")
    return kernels


def test_host_integer_helpers_agree_with_tritons():
    """The launches' grid and block sizes come from plain arithmetic (Triton's own helpers cost host time per call;
    `kernels._cdiv`), with Triton's values for every size a launch meets."""
    import triton

    for a in range(0, 300):
        assert kernels._next_power_of_2(max(a, 1)) == triton.next_power_of_2(max(a, 1))
        for b in (1, 3, 16, 64, 256):
            assert kernels._cdiv(a, b) == triton.cdiv(a, b)
    assert kernels._cdiv(14336, 256) == 56 and kernels._next_power_of_2(129) == 256


def _inputs(rows, d_in, d_out, rank, x_scale, dtype=torch.float32, seed=0, variant="lorentz"):
    full = variant == "lorentz-full"  # A reads (d_in + 1)-points, B (rank + 1)-points
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, d_in, generator=g) * x_scale).to(dtype)
    A = torch.randn(rank, d_in + full, generator=g) / math.sqrt(d_in)
    B = torch.randn(d_out, rank + full, generator=g) * 0.3
    log_ratios = torch.tensor([0.3, -0.2])  # (rho_k, rho_s): K = k0 exp(rho_k), s = s0 exp(rho_s)
    return tuple(t.to(DEVICE) for t in (x, A, B, log_ratios))


def _run(variant, x, A, B, log_ratios, k0, s0, theta_max=12.0, scaling=2.0):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, A, B, log_ratios)]
    out = Fn.gated_branch(variant, *leaves, k0, s0, scaling, theta_max)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)
    (out.float() * weights).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _close(actual, expected, rtol, what, floor=1e-12):
    """Max abs error relative to the largest expected entry (or to `floor`, for sums that cancel to ~0)."""
    scale = expected.abs().max().clamp_min(floor)
    err = (actual.double() - expected.double()).abs().max() / scale
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:.0e}"


CASES = [
    # rows, d_in, d_out, rank, |x| scale, k0, s0, theta_max: small and large geodesic radii, clamped radii,
    # ranks that are not powers of two, row counts that do not fill a block
    (7, 24, 16, 5, 1.0, 1.0, math.sqrt(24), 12.0),
    (70, 48, 40, 20, 3.0, 0.5, 2.0, 12.0),
    (33, 32, 24, 32, 40.0, 2.0, 1.0, 3.0),
    (5, 16, 8, 3, 1e-3, 1.0, 1.0, 12.0),
    # ranks above 64 (and lorentz-full's 65 points at rank 64): the forward kernels sum a (B^T B) over slices
    (21, 40, 24, 64, 2.0, 1.3, 3.0, 12.0),
    (18, 40, 24, 100, 2.0, 1.3, 3.0, 12.0),
]


VARIANTS = ["lorentz", "stereographic", "lorentz-full"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_triton_path_matches_eager_path(interpreted, monkeypatch, variant, case):
    rows, d_in, d_out, rank, x_scale, k0, s0, theta_max = case
    inputs = _inputs(rows, d_in, d_out, rank, x_scale, variant=variant)
    assert kernels.usable(inputs[0], inputs[1], variant)
    fused_out, fused_grads = _run(variant, *inputs, k0, s0, theta_max)
    monkeypatch.setenv("HYPLORA_TRITON", "0")
    assert not kernels.usable(inputs[0], inputs[1], variant)
    eager_out, eager_grads = _run(variant, *inputs, k0, s0, theta_max)
    _close(fused_out, eager_out, 2e-5, "output")
    # The rho gradients are sums over tokens of terms of the output's size, and can cancel to ~0 (for clamped
    # radii the branch no longer depends on s): their scale is the output's L1 norm.
    floor = float(eager_out.abs().sum())
    for name, got, want in zip(["x", "A", "B", "log_ratios"], fused_grads, eager_grads):
        _close(got, want, 5e-5, f"grad {name}", floor=floor if name == "log_ratios" else 1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("rank", [8, 100])  # 100: the forward kernels' sliced Gram product
def test_triton_path_matches_float64_literal_reference(interpreted, variant, rank):
    x, A, B, log_ratios = _inputs(40, 32, 24, rank, 1.0, variant=variant)
    x = x * torch.logspace(-3, 1, 40, device=DEVICE)[:, None]  # radii from the series regime to past the caps
    k0, s0, scaling, theta_max = 1.3, 3.0, 2.0, 6.0
    fused_out, fused_grads = _run(variant, x, A, B, log_ratios, k0, s0, theta_max, scaling)
    leaves = [t.double().requires_grad_(True) for t in (x, A, B, log_ratios)]
    K, s = k0 * torch.exp(leaves[3][0:1]), s0 * torch.exp(leaves[3][1:2])
    literal = Fn.LITERAL_BRANCHES[variant](leaves[0], leaves[1], leaves[2], K, s, scaling, theta_max)
    weights = torch.linspace(-1, 1, literal.numel(), dtype=torch.float64, device=DEVICE).reshape(literal.shape)
    (literal * weights).sum().backward()
    _close(fused_out, literal.detach(), 1e-5, "output")
    floor = float(literal.detach().abs().sum())
    for name, got, leaf in zip(["x", "A", "B", "log_ratios"], fused_grads, leaves):
        _close(got, leaf.grad, 1e-4, f"grad {name}", floor=floor if name == "log_ratios" else 1e-12)


def test_bfloat16_input_gets_bfloat16_gradient_and_float32_math(interpreted, monkeypatch):
    x, A, B, log_ratios = _inputs(20, 32, 16, 8, 2.0, dtype=torch.bfloat16)
    fused_out, fused_grads = _run("lorentz", x, A, B, log_ratios, 1.0, 4.0)
    assert fused_out.dtype == torch.float32 and fused_grads[0].dtype == torch.bfloat16
    monkeypatch.setenv("HYPLORA_TRITON", "0")
    eager_out, eager_grads = _run("lorentz", x, A, B, log_ratios, 1.0, 4.0)
    _close(fused_out, eager_out, 2e-5, "output")
    _close(fused_grads[0].float(), eager_grads[0].float(), 1e-2, "grad x (bfloat16)")
    for got, want in zip(fused_grads[1:], eager_grads[1:]):
        _close(got, want, 5e-5, "adapter gradients")


def test_zero_rows_and_zero_inputs_stay_finite(interpreted):
    x, A, B, log_ratios = _inputs(6, 16, 8, 4, 1.0)
    x[2] = 0.0
    out, grads = _run("lorentz", x, A, B, log_ratios, 1.0, 4.0)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    empty_out, empty_grads = _run("stereographic", x[:0], A, B, log_ratios, 1.0, 4.0)
    assert empty_out.shape == (0, 8) and torch.equal(empty_grads[1], torch.zeros_like(A))


def test_unusable_without_triton_or_for_large_ranks(interpreted, monkeypatch):
    x, A, _, _ = _inputs(4, 16, 8, 4, 1.0)
    assert kernels.usable(x, A, "lorentz")
    assert kernels.usable(x, A, "lorentz-full")
    assert not kernels.usable(x, A, "lorentz-fuller")
    assert not kernels.usable(x, A.double(), "lorentz")
    assert not kernels.usable(x, torch.zeros(kernels.MAX_RANK + 1, 16, device=DEVICE), "lorentz")
    assert not kernels.usable(x, torch.zeros(kernels.MAX_RANK, 17, device=DEVICE), "lorentz-full")
    monkeypatch.setattr(kernels, "triton", None)
    assert not kernels.usable(x, A, "lorentz")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
# rows, d_in, d_out, rank: longer than a block, rows that do not fill a block of tokens, ranks past a power of 2
@pytest.mark.parametrize("shape", [(40, 32, 24, 8), (3, 2500, 1100, 5), (37, 130, 70, 33)])
@pytest.mark.parametrize("path", ["one-kernel", "matmuls-and-kernel", "split", "two-pass"])
def test_in_place_no_grad_branch_matches_float64_literal_reference(interpreted, monkeypatch, variant, out_dtype,
                                                                    shape, path):
    rows, d_in, d_out, rank = shape
    one_kernel = path in ("one-kernel", "split")
    for limit in ("FUSED_MAX_ROWS", "FUSED_NARROW_MAX_ROWS"):
        monkeypatch.setattr(kernels, limit, rows if path == "one-kernel" else rows - 1)
    # "split": d_out in slices of 16 columns (several programs per token block; the last slice partial)
    monkeypatch.setattr(kernels, "FUSED_SPLIT_MAX_ROWS", rows if path == "split" else 0)
    monkeypatch.setattr(kernels, "FUSED_SPLIT_COLUMNS", 16)
    # "two-pass": x A^T in parts of 16 input columns (the last one partial), then the split kernel summing them
    monkeypatch.setattr(kernels, "TWO_PASS_MAX_ROWS", {variant: rows if path == "two-pass" else 0})
    monkeypatch.setattr(kernels, "TWO_PASS_COLUMNS", 16)
    assert kernels.fuses(rows, d_in, d_out) == (path == "one-kernel")
    assert kernels.splits(rows, d_in, d_out) == (path == "split")
    assert kernels.two_pass(rows, d_in, d_out, variant) == (path == "two-pass")
    launched = []
    for name in ("add_fused_", "add_gated_", "add_lorentz_full_", "add_two_pass_"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _name=name, _original=original, **k: launched.append(_name)
                            or _original(*a, **k))
    x, A, B, log_ratios = _inputs(rows, d_in, d_out, rank, 1.0, dtype=torch.bfloat16, variant=variant)
    x = (x.float() * torch.logspace(-3, 1, rows, device=DEVICE)[:, None]).to(torch.bfloat16)  # series to past caps
    k0, s0, scaling, theta_max = 1.3, math.sqrt(d_in) / 4, 2.0, 6.0
    base = torch.randn(rows, d_out, generator=torch.Generator().manual_seed(3)).to(DEVICE, out_dtype)
    out = base.clone()
    with torch.no_grad():
        assert Fn.adds_in_place(out, variant, x, A)
        Fn.add_gated_branch_(out, variant, x, A, B, log_ratios, k0, s0, scaling, theta_max)
    assert launched == (["add_fused_"] if one_kernel else ["add_two_pass_"] if path == "two-pass" else
                        ["add_lorentz_full_" if variant == "lorentz-full" else "add_gated_"])
    K, s = k0 * torch.exp(log_ratios[0:1].double()), s0 * torch.exp(log_ratios[1:2].double())
    literal = Fn.LITERAL_BRANCHES[variant](x.double(), A.double(), B.double(), K, s, scaling, theta_max)
    if out_dtype == torch.float32:
        _close(out - base, literal, 1e-5, "in-place branch")
    else:  # one rounding of base + branch to bfloat16: at most one unit in the last place of the sum
        expected = base.double() + literal
        ulp = expected.abs() * 2.0**-7
        assert ((out.double() - expected).abs() <= ulp + 1e-30).all()
        assert not torch.equal(out, base)


@pytest.mark.parametrize("variant", VARIANTS)
def test_split_one_kernel_follows_in_place_changes_of_B(interpreted, monkeypatch, variant):
    """The wide-layer one kernel takes |y| from a cached Gram matrix of B: an optimizer step (an in-place change)
    or a new B must not leave it stale."""
    rows, d_in, d_out, rank = 5, 48, 40, 8
    monkeypatch.setattr(kernels, "FUSED_MAX_ROWS", 0)
    monkeypatch.setattr(kernels, "FUSED_NARROW_MAX_ROWS", 0)
    monkeypatch.setattr(kernels, "FUSED_SPLIT_MAX_ROWS", rows)
    monkeypatch.setattr(kernels, "FUSED_SPLIT_COLUMNS", 16)
    x, A, B, log_ratios = _inputs(rows, d_in, d_out, rank, 1.0, variant=variant)
    B = torch.nn.Parameter(B)
    K, s = 1.3 * torch.exp(log_ratios[0:1].double()), math.sqrt(d_in) * torch.exp(log_ratios[1:2].double())

    def branch():
        out = torch.zeros(rows, d_out, device=DEVICE)
        with torch.no_grad():
            Fn.add_gated_branch_(out, variant, x, A, B, log_ratios, 1.3, math.sqrt(d_in), 2.0, 6.0)
        return out

    def literal():
        return Fn.LITERAL_BRANCHES[variant](x.double(), A.double(), B.detach().double(), K, s, 2.0, 6.0)

    _close(branch(), literal(), 1e-5, "split, first B")
    first_gram = kernels.cached_gram(B)
    assert kernels.cached_gram(B) is first_gram  # reused while B is unchanged
    with torch.no_grad():
        B.mul_(3.0).add_(0.05)  # an in-place change, as an optimizer step makes
    _close(branch(), literal(), 1e-5, "split, after an in-place change of B")
    assert kernels.cached_gram(B) is not first_gram
    with torch.inference_mode():
        B_inference = B.detach().clone()
    assert torch.equal(kernels.cached_gram(B_inference), kernels.cached_gram(B))


def test_launches_run_on_the_device_of_their_tensors(monkeypatch):
    """Triton launches on the current CUDA device: a layer on another GPU (a model split with device_map) must
    switch to its own device for the launch, and a layer on the current one must not pay for a switch."""
    entered = []

    class FakeDeviceGuard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    class FakeTensor:
        def __init__(self, device):
            self.device = torch.device(device)

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", FakeDeviceGuard)
    launched = []
    launch = kernels._on_tensor_device(lambda out, *rest: launched.append(out.device))
    launch(FakeTensor("cuda:1"), 2)
    assert entered == [torch.device("cuda:1")] and launched == [torch.device("cuda:1")]
    launch(FakeTensor("cuda:0"))
    launch(FakeTensor("cpu"))  # Triton's interpreter (tests)
    assert len(entered) == 1 and len(launched) == 3
    assert all(hasattr(getattr(kernels, name), "__wrapped__") for name in (
        "gram_matrix", "gate_forward", "gate_backward", "lorentz_full_forward", "lorentz_full_backward",
        "add_gated_", "add_lorentz_full_", "add_fused_", "add_two_pass_"))


class _FakeCompiled:
    """What Triton's JIT entry returns: a compiled kernel whose launcher `run` takes the grid, the stream, its
    handles and then every parameter."""

    function = "handle"
    packed_metadata = "metadata"

    def __init__(self, runs, fail=False):
        self.runs, self.fail = runs, fail

    def launch_metadata(self, grid, stream, *args):
        return ("metadata of", grid, stream)

    def run(self, *args):
        if self.fail:
            raise TypeError("this launcher takes other arguments")
        self.runs.append(args)


class _FakeKernel:
    """A Triton kernel with two tensor parameters, two numbers and two compile-time constants."""

    arg_names = ["out_ptr", "x_ptr", "ROWS", "scale", "BLOCK", "VARIANT"]

    def __init__(self, fail=False):
        self.jit_calls, self.runs, self.fail = [], [], fail

    def __getitem__(self, grid):
        def jit_entry(*args, **kwargs):
            self.jit_calls.append((grid, args, kwargs))
            return _FakeCompiled(self.runs, self.fail)
        return jit_entry


@pytest.fixture
def direct_launches(monkeypatch):
    """`kernels._launch` as on a GPU with Triton 3.6: direct launches on, an empty table, device 0, stream 7."""
    monkeypatch.setattr(kernels, "_DIRECT_SUPPORTED", True)
    monkeypatch.setattr(kernels, "DIRECT_LAUNCH", True)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(kernels, "_current_stream", lambda: (lambda device: 7))
    return kernels


def test_direct_launch_repeats_the_jit_entrys_kernel_only_for_the_same_specialisation(direct_launches):
    kernel = _FakeKernel()
    storage = torch.zeros(64)
    out, x = storage[:16], torch.zeros(16, dtype=torch.bfloat16)
    constants = {"BLOCK": 16, "VARIANT": 0}

    def launch(out=out, x=x, rows=1, scale=2.0, constants=constants, grid=(3,)):
        kernels._launch(kernel, grid, 4, (out, x), (rows, scale), constants)
        return len(kernel.jit_calls), len(kernel.runs)

    assert launch() == (1, 0)  # first call: Triton's JIT entry, with the constants by name and the warps
    assert kernel.jit_calls[0] == ((3,), (out, x, 1, 2.0), {"BLOCK": 16, "VARIANT": 0, "num_warps": 4})
    assert launch() == (1, 1)  # the same call again: the kept compiled kernel, directly
    hooks = kernels.triton.knobs.runtime
    assert kernel.runs[0] == (3, 1, 1, 7, "handle", "metadata", ("metadata of", (3, 1, 1), 7),
                              hooks.launch_enter_hook, hooks.launch_exit_hook, out, x, 1, 2.0, 16, 0)
    # what Triton specialises on differs: its JIT entry again
    assert launch(out=storage[1:17]) == (2, 1)  # an address not a multiple of 16 bytes
    assert launch(x=x.float()) == (3, 1)  # another dtype
    assert launch(rows=16) == (4, 1)  # a multiple of 16 where it was 1
    assert launch(constants={"BLOCK": 32, "VARIANT": 0}) == (5, 1)
    assert launch(grid=(5, 2)) == (5, 2) and kernel.runs[-1][:3] == (5, 2, 1)  # the grid is no part of the key
    assert launch(out=storage[16:32]) == (5, 3)  # another tensor at an address of the same kind: direct


def test_direct_launch_needs_the_constants_in_the_kernels_order(direct_launches):
    kernel = _FakeKernel()
    out = torch.zeros(16)
    for _ in range(3):  # passed by position in a direct launch, so never kept in another order
        kernels._launch(kernel, (1,), 4, (out, out), (1, 2.0), {"VARIANT": 0, "BLOCK": 16})
    assert len(kernel.jit_calls) == 3 and not kernel.runs


def test_direct_launch_steps_aside_for_a_launcher_it_does_not_know_and_when_off(direct_launches, monkeypatch):
    out = torch.zeros(16)
    kernel = _FakeKernel(fail=True)
    for _ in range(3):
        kernels._launch(kernel, (1,), 4, (out, out), (1, 2.0), {"BLOCK": 16, "VARIANT": 0})
    assert len(kernel.jit_calls) == 3 and not kernels.DIRECT_LAUNCH  # the failed direct launch turned it off
    kernel = _FakeKernel()  # switched off (HYPLORA_DIRECT_LAUNCH=0 at import): JIT entries, nothing kept
    for _ in range(2):
        kernels._launch(kernel, (1,), 4, (out, out), (1, 2.0), {"BLOCK": 16, "VARIANT": 0})
    assert len(kernel.jit_calls) == 2 and not kernel.runs and not kernels._COMPILED


def test_direct_launch_is_off_in_the_interpreter():
    assert not kernels._DIRECT_SUPPORTED or not kernels.INTERPRET


def test_one_kernel_path_only_for_few_tokens_and_layers_not_too_wide(monkeypatch):
    monkeypatch.setattr(kernels, "FUSED_MAX_ROWS", 64)
    monkeypatch.setattr(kernels, "FUSED_MAX_WIDTH", 1000)
    monkeypatch.setattr(kernels, "FUSED_NARROW_WIDTH", 100)
    monkeypatch.setattr(kernels, "FUSED_NARROW_MAX_ROWS", 4096)
    assert kernels.fuses(64, 500, 250) and kernels.fuses(1, 10, 10)
    assert not kernels.fuses(65, 500, 250)  # too many tokens
    assert not kernels.fuses(1, 500, 251)  # too wide: each program reads d_in + 2 d_out weight rows
    # narrow layers: up to FUSED_NARROW_MAX_ROWS tokens
    assert kernels.fuses(4096, 50, 25) and not kernels.fuses(4097, 50, 25)
    assert not kernels.fuses(65, 50, 26)  # one column wider than narrow: the general limit


def test_two_pass_form_for_lorentz_full_on_the_widest_layers_and_few_tokens(monkeypatch):
    # on by default for "lorentz-full" only, where it replaces the matmul path's five operations (eager decoding
    # of the 8B shape, benchmarks/RESULTS.md); "lorentz"'s four cost about as much host time as two launches
    assert kernels.two_pass(1, 4096, 14336, "lorentz-full") and kernels.two_pass(256, 14336, 4096, "lorentz-full")
    assert not kernels.two_pass(257, 14336, 4096, "lorentz-full")  # more tokens than the limit
    assert not kernels.two_pass(1, 4096, 4096, "lorentz-full")  # the 8B shape's q: one launch, the one kernel's
    assert not kernels.two_pass(1, 576, 1536, "lorentz-full")  # a narrow layer (SmolLM2's up): the one kernel
    assert not kernels.two_pass(1, 14336, 4096, "lorentz") and not kernels.two_pass(1, 14336, 4096, "stereographic")
    monkeypatch.setattr(kernels, "TWO_PASS_MAX_ROWS", {"lorentz": 16})
    assert kernels.two_pass(16, 14336, 4096, "lorentz") and not kernels.two_pass(17, 14336, 4096, "lorentz")
    assert not kernels.two_pass(1, 14336, 4096, "lorentz-full")  # a variant not named: off


def test_one_kernel_limits_take_smollm2_prefill_and_not_a_wide_layers():
    """The defaults: SmolLM2-135M's layers (q/o, k/v, up, down) batch a 64 x 64-token prefill into the one kernel;
    Llama-3-8B's q/o layer (d_in + 2 d_out = 12288) takes it only up to 256 tokens."""
    for d_in, d_out in [(576, 576), (576, 192), (576, 1536), (1536, 576)]:
        assert kernels.fuses(64 * 64, d_in, d_out) and not kernels.fuses(16385, d_in, d_out)
    assert kernels.fuses(256, 4096, 4096) and not kernels.fuses(257, 4096, 4096)
    assert not kernels.fuses(1, 4096, 14336)
    assert not kernels.splits(1, 4096, 14336)  # the split one kernel for wide layers: off until timed on a GPU


def test_in_place_branch_applies_only_without_autograd_and_outside_its_limits(interpreted):
    x, A, B, _ = _inputs(4, 16, 8, 4, 1.0)
    out = torch.zeros(4, 8, device=DEVICE)
    assert not Fn.adds_in_place(out, "lorentz", x, A)  # autograd on
    with torch.no_grad():
        assert all(Fn.adds_in_place(out, variant, x, A) for variant in VARIANTS)
        assert not Fn.adds_in_place(out.t(), "lorentz", x, A)  # not contiguous
        assert not Fn.adds_in_place(out[:3], "lorentz", x, A)  # other rows
        assert not Fn.adds_in_place(out, "lorentz", x, A.double())


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_no_grad_forward_on_the_in_place_path_equals_the_autograd_forward(interpreted, monkeypatch, variant):
    import peft

    from hyplora import HypLoraConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.proj = torch.nn.Linear(48, 40)
    model = peft.get_peft_model(model.to(DEVICE), HypLoraConfig(r=6, target_modules=["proj"], variant=variant,
                                                                init_lora_weights=False))
    x = torch.randn(2, 5, 48, device=DEVICE) * 3.0
    layer = model.base_model.model.proj
    calls = []
    original = Fn.add_gated_branch_
    monkeypatch.setattr(Fn, "add_gated_branch_", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        fast = model(x)
    assert calls == [1]  # the layer took the in-place path
    reference = model(x)  # autograd on: the custom autograd function's forward
    assert reference.requires_grad and layer.lora_A["default"].weight.requires_grad
    _close(fast, reference.detach(), 2e-6, "layer output")


@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
@pytest.mark.parametrize("shape", [(1000, 32), (300, 20), (700, 64), (5, 3), (17000, 8), (0, 4), (600, 100)])
def test_gram_matrix_matches_float64(interpreted, monkeypatch, shape, precision):
    """Weights long enough for several slabs (atomic adds of their products), ranks that are not powers of two,
    a rank above 64, and no rows at all; float32 products or three TF32 ones (`kernels.GRAM_PRECISION`)."""
    monkeypatch.setattr(kernels, "GRAM_PRECISION", precision)
    n, rank = shape  # n, rank
    weight = torch.randn(n, rank, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    expected = weight.double().t() @ weight.double()
    _close(kernels.gram_matrix(weight), expected, 1e-6, "Gram matrix")


@pytest.mark.parametrize("most", [1, 3, 128])
def test_gram_matrix_with_any_number_of_slabs(interpreted, monkeypatch, most):
    """`kernels.GRAM_MAX_SLABS` changes how many programs add into the result, not the result: one slab, slabs
    whose rows do not divide the weight's, and the default."""
    monkeypatch.setattr(kernels, "GRAM_MAX_SLABS", most)
    weight = torch.randn(1000, 20, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    slabs, per_slab = kernels._slabs(1000, 128, most)
    assert slabs == min(most, 8) and slabs * per_slab >= 1000 > (slabs - 1) * per_slab
    _close(kernels.gram_matrix(weight), weight.double().t() @ weight.double(), 1e-6, "Gram matrix")


@pytest.mark.parametrize("shape", [(70, 20, 40), (1000, 32, 100), (5, 3, 7), (300, 64, 50), (3000, 8, 30),
                                   (90, 100, 40)])
def test_backward_kernels_match_the_float64_torch_formulas(interpreted, shape):
    """`kernels.gate_backward` (what the compiled backward runs) against `_gated_backward_torch` in float64, with
    token counts that make several slabs, the last one partial, so the sums over slabs are exercised; rank 100
    takes the form for ranks above 64 (M as one matmul, ``B M`` over slices of the rank)."""
    rows, rank, d_out = shape
    g = torch.Generator().manual_seed(6)
    q, a_raw, gram_a = (torch.randn(rows, rank, generator=g) for _ in range(3))
    coef, B = torch.randn(rows, 5, generator=g), torch.randn(d_out, rank, generator=g)
    base = torch.randn(d_out, rank, generator=g)
    inputs = (q, a_raw, coef, gram_a, B, base)
    got = kernels.gate_backward(*(t.to(DEVICE) for t in inputs))
    expected = Fn._gated_backward_torch(*(t.double() for t in inputs))
    for name, value, want in zip(["P", "w", "base + B M", "rho"], got, expected):
        assert value.shape == want.shape and value.dtype == torch.float32, name
        assert value.data_ptr() % 16 == 0, f"{name}: inductor asserts 16-byte aligned outputs"
        floor = float(want.abs().sum()) if name == "rho" else 1e-12  # sums over tokens that can cancel
        _close(value, want, 1e-5, name, floor=floor)


@pytest.mark.parametrize("shape", [(70, 20, 40), (1000, 32, 100), (5, 3, 7), (3000, 8, 30), (90, 100, 40)])
def test_lorentz_full_backward_kernels_match_the_float64_torch_formulas(interpreted, shape):
    rows, rank, d_out = shape
    g = torch.Generator().manual_seed(8)
    q, point, gram_point = (torch.randn(rows, rank + 1, generator=g) for _ in range(3))
    point[:, 0] = point[:, 0].abs() + 1.0  # the time coordinate sqrt(K + |h|^2) is positive
    a_raw, scalars = torch.randn(rows, rank, generator=g), torch.randn(rows, 4, generator=g)
    coefficients, a_time = torch.randn(rows, 4, 3, generator=g), torch.randn(rank, generator=g)
    B, base = torch.randn(d_out, rank + 1, generator=g), torch.randn(d_out, rank + 1, generator=g)
    inputs = (q, a_raw, point, gram_point, scalars, coefficients, a_time, B, base)
    got = kernels.lorentz_full_backward(*(t.to(DEVICE) for t in inputs))
    expected = Fn._lorentz_full_backward_torch(*(t.double() for t in inputs))
    for name, value, want in zip(["dL/d a_raw", "w", "base + B M", "dL/dA[:, 0] and rho"], got, expected):
        assert value.shape == want.shape and value.dtype == torch.float32, name
        assert value.data_ptr() % 16 == 0, f"{name}: inductor asserts 16-byte aligned outputs"
        floor = float(want.abs().sum()) if name.startswith("dL/dA") else 1e-12  # sums over tokens that can cancel
        _close(value, want, 1e-5, name, floor=floor)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_training_step_on_the_kernel_path_matches_the_eager_torch_path(interpreted, monkeypatch, variant):
    """Under torch.compile the opaque operations run the Gram-parts, gate and backward kernels; loss and gradients
    equal those of the eager torch path (``HYPLORA_TRITON=0``)."""
    import peft

    from hyplora import HypLoraConfig

    from ..conftest import make_tiny_llama

    if DEVICE != "cpu":
        pytest.skip("on a GPU, benchmarks/gpu_check.py checks the compiled path")
    ids = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(7))

    def loss_and_grads(compiled: bool):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = peft.get_peft_model(make_tiny_llama(), HypLoraConfig(
            r=5, lora_alpha=8, target_modules=["q_proj", "down_proj"], variant=variant, init_lora_weights=False))
        run = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
        loss = run(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    calls = []
    for name in ("gram_matrix", "gate_backward", "lorentz_full_backward"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    kernel_loss, kernel_grads = loss_and_grads(compiled=True)
    backward = "lorentz_full_backward" if variant == "lorentz-full" else "gate_backward"
    assert set(calls) == {"gram_matrix", backward}
    # torch.use_deterministic_algorithms(True): no atomic adds, the torch operations (same results)
    calls.clear()
    torch.use_deterministic_algorithms(True)
    try:
        deterministic_loss, deterministic_grads = loss_and_grads(compiled=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert calls == []
    monkeypatch.undo()
    monkeypatch.setenv("HYPLORA_TRITON", "0")
    eager_loss, eager_grads = loss_and_grads(compiled=False)
    for loss, grads in ((kernel_loss, kernel_grads), (deterministic_loss, deterministic_grads)):
        torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
        for name, grad in eager_grads.items():
            _close(grads[name], grad, 5e-5, name, floor=float(grad.abs().max()) + 1e-12)
