"""Host time of one Triton launch, by how it is launched: microseconds per call, against torch operations.

Eager decoding is bound by the host, and a HypLoRA layer's no-grad branch is one Triton launch
(`kernels.add_fused_`). This script times the layer's launch the ways Triton offers, on one token of a
narrow layer (256 -> 256 by default, r = 32, lorentz: a few microseconds of GPU time), back to back, so that the
host's time per call is what is measured:

- ``kernels.add_fused_``: the package's entry point (device guard, block choice, launch), as the layer calls it:
  through `kernels._launch`, which launches the compiled kernel directly when Triton would specialise the call
  as an earlier one; and the same with that off (``kernels.DIRECT_LAUNCH = False``: Triton's JIT entry);
- ``kernel[grid](...)``: Triton's JIT entry alone (binds and specialises the arguments, looks up the compiled
  kernel, launches it);
- ``compiled[grid](...)``: the compiled kernel that the JIT entry returned, launched directly;
- ``compiled.run(...)``: its launcher alone, with the stream given;

and, for scale, one ``add_`` on 16 floats and one ``torch.mm`` of 1 x d by d x r. Each direct launch is
first checked to give the same output as the JIT entry.

    python benchmarks/launch_overhead.py [--json out.json]
"""

from __future__ import annotations

import argparse

import torch
from _common import device_name, per_call_us, versions_line, write_json_atomic



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=256, help="layer width: small, so that the GPU never limits")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("launch_overhead.py times CUDA launches; no CUDA device here")
    device = torch.device("cuda")
    from hyplora.adapter import kernels

    if kernels.triton is None:
        raise SystemExit("Triton is not importable here")
    print(f"device: {device_name(device)} | {versions_line()} | triton {kernels.triton.__version__}")
    torch.set_grad_enabled(False)  # as in decoding
    torch.manual_seed(0)
    d, rank = args.d, args.rank
    x = torch.randn(1, d, device=device, dtype=torch.bfloat16)
    # parameters, as in an adapted layer
    A = torch.nn.Parameter(torch.randn(rank, d, device=device) / d**0.5)
    B = torch.nn.Parameter(torch.randn(d, rank, device=device) * 0.01)
    log_ratios = torch.nn.Parameter(torch.zeros(2, device=device))
    out = torch.randn(1, d, device=device, dtype=torch.bfloat16)

    def package_launch():
        kernels.add_fused_(out, x, A, B, log_ratios, 1.0, 1.0, "lorentz", 2.0, 12.0)

    # the kernel, grid and arguments exactly as the package launches them, caught from its `_launch` call
    calls = []
    through = kernels._launch
    kernels._launch = lambda *arguments: calls.append(arguments) or through(*arguments)
    try:
        package_launch()
    finally:
        kernels._launch = through
    kernel, grid, warps, tensors, numbers, constexprs = calls[0]

    def jit_launch():
        return kernel[grid](*tensors, *numbers, **constexprs, num_warps=warps)

    compiled = jit_launch()
    all_args = (*tensors, *numbers, *constexprs.values())

    def direct_launch():
        compiled[(*grid, *(1,) * (3 - len(grid)))](*all_args)

    def package_direct():
        kernels._launch(kernel, grid, warps, tensors, numbers, constexprs)

    # the same output from each way of launching, each from the same `out` (the kernel adds into it); the package's
    # launch is made once before, so that the compared one is a direct launch
    start = out.clone()
    package_launch()
    if kernels._DIRECT_SUPPORTED and not kernels._COMPILED:
        raise SystemExit("kernels._launch kept no compiled kernel: the package's launches would all be JIT calls")
    results = {}
    for label, fn in [("jit", jit_launch), ("direct", direct_launch), ("package", package_launch)]:
        out.copy_(start)
        fn()
        torch.cuda.synchronize()
        results[label] = out.clone()
    for label in ("direct", "package"):
        if not torch.equal(results[label], results["jit"]):
            raise SystemExit(f"the {label} launch does not give the JIT launch's result")
        print(f"{label} launch: the same output as the JIT launch, bit for bit")

    small = torch.zeros(16, device=device)
    rows = []

    def record(what, stats):
        rows.append({"what": what, "median_us": stats[0], "min_us": stats[1], "max_us": stats[2]})
        print(f"| {what} | {stats[0]:.1f} | {stats[1]:.1f}-{stats[2]:.1f} |", flush=True)

    print("| launch | us per call (median) | min-max |\n|---|---:|---:|")
    record("one aten op (add_ on 16 floats)", per_call_us(lambda: small.add_(1.0), device, args.calls, args.repeats))
    x32 = x.float()
    At = A.t()
    record(f"torch.mm, 1 x {d} by {d} x {rank}", per_call_us(lambda: torch.mm(x32, At), device, args.calls,
                                                             args.repeats))
    record("kernels.add_fused_ (package entry, direct launch)", per_call_us(package_launch, device, args.calls,
                                                                           args.repeats))
    kernels.DIRECT_LAUNCH = False
    record("kernels.add_fused_ (package entry, Triton's JIT entry)", per_call_us(package_launch, device, args.calls,
                                                                                args.repeats))
    kernels.DIRECT_LAUNCH = True
    record("kernels._launch alone (key, lookup, direct launch)", per_call_us(package_direct, device, args.calls,
                                                                              args.repeats))
    record("kernel[grid](...) (Triton's JIT entry)", per_call_us(jit_launch, device, args.calls, args.repeats))
    record("compiled[grid](...) (compiled kernel, direct)", per_call_us(direct_launch, device, args.calls,
                                                                         args.repeats))
    stream = torch.cuda.current_stream().cuda_stream
    try:
        def raw_run():
            compiled.run(1, 1, 1, stream, compiled.function, compiled.packed_metadata, None, None, None, *all_args)

        record("compiled.run(...) (the launcher alone, stream given)", per_call_us(raw_run, device, args.calls,
                                                                                 args.repeats))
    except Exception as error:  # noqa: BLE001 - a Triton version with another launcher signature
        print(f"compiled.run not timed: {type(error).__name__}: {error}")
    if args.json:
        write_json_atomic(args.json, {"device": device_name(device), "versions": versions_line(),
                                      "triton": kernels.triton.__version__, "rows": rows})


if __name__ == "__main__":
    main()
