"""One adapted layer's no-grad branch in isolation: the one-kernel path against two matmuls and one kernel.

`functional.add_gated_branch_` adds the branch into the base layer's output without autograd (a prefill, an
eager decoding step). Up to `kernels.FUSED_MAX_ROWS` tokens (`kernels.FUSED_NARROW_MAX_ROWS` for layers with
``d_in + 2 d_out`` at most `kernels.FUSED_NARROW_WIDTH`) and a width ``d_in + 2 d_out`` of at most
`kernels.FUSED_MAX_WIDTH` it makes one Triton launch (`kernels.add_fused_`), whose programs each read A once
and B twice, one tile after another; beyond, it makes four launches (cast of x, two cuBLAS matmuls, one Triton
kernel). Where `kernels.splits` says so (up to `kernels.FUSED_SPLIT_MAX_ROWS` tokens, off by default), the one
kernel takes ``|y|`` from B's Gram matrix and splits d_out across programs ("one kernel, split"); where
`kernels.two_pass` does (layers too wide for the one kernel, up to `kernels.TWO_PASS_MAX_ROWS` tokens; on by
default for "lorentz-full" only), a first launch splits ``x A^T`` over the input columns and the split kernel
sums its parts ("two passes"). This script times the four paths for each (d_in, d_out) of the benchmark models
and several token counts, r = 32, bf16 x and output, float32 adapter: GPU time per call (CUDA events around
back-to-back calls of a path whose launches are queued ahead), then the same calls timed on the host until they
return (the host's cost while the GPU keeps up). The dispatch limits in `kernels` are read off this table: the
one-kernel path pays in GPU time what it saves in host time.

    python benchmarks/no_grad_branch.py --json no_grad_branch.json
    python benchmarks/no_grad_branch.py --rows 4096,16384,65536 \
        --shapes 576x576,576x192,576x1536,1536x576,2048x2048,2048x8192,8192x2048   # batched prefills
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import device_name, versions_line, write_json_atomic

# (d_in, d_out) of the adapted layers: SmolLM2-135M (q/o, k/v, up, down), then the Llama-3-8B shape
SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576), (4096, 4096), (4096, 1024), (4096, 14336),
          (14336, 4096)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,64,256", help="comma-separated token counts")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--variant", default="lorentz", choices=["lorentz", "stereographic", "lorentz-full"])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--shapes", default=",".join(f"{i}x{o}" for i, o in SHAPES),
                        help="comma-separated d_in x d_out (default: SmolLM2-135M's and Llama-3-8B's layers)")
    parser.add_argument("--two-pass-columns", type=int, default=None,
                        help="input columns per program of the two-pass form's first launch "
                             "(kernels.TWO_PASS_COLUMNS; default: the package's value)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    try:
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
        if any(len(shape) != 2 or min(shape) < 1 for shape in shapes):
            raise ValueError
    except ValueError:
        parser.error(f"--shapes must be comma-separated D_INxD_OUT pairs of positive integers, got {args.shapes!r}")
    if args.two_pass_columns is not None and args.two_pass_columns < 1:
        parser.error(f"--two-pass-columns must be >= 1, got {args.two_pass_columns}")
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark times CUDA kernels; no GPU here")
    from hyplora.adapter import functional as Fn
    from hyplora.adapter import kernels

    if args.two_pass_columns is not None:
        kernels.TWO_PASS_COLUMNS = args.two_pass_columns
    device = torch.device("cuda")
    header = [f"device: {device_name(device)}", versions_line(),
              f"no-grad branch, variant {args.variant}, r={args.rank}, bf16 x and output, float32 adapter, "
              f"two passes over {kernels.TWO_PASS_COLUMNS} input columns per program"]
    print("\n".join(header))
    print("\n| d_in | d_out | tokens | one kernel: GPU us | host us | matmuls + kernel: GPU us | host us | "
          "one kernel, split: GPU us | host us | two passes: GPU us | host us | default path |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    full = args.variant == "lorentz-full"
    rows_out = []
    names = ("FUSED_MAX_ROWS", "FUSED_MAX_WIDTH", "FUSED_NARROW_WIDTH", "FUSED_NARROW_MAX_ROWS",
             "FUSED_SPLIT_MAX_ROWS", "TWO_PASS_MAX_ROWS")
    limits = {name: getattr(kernels, name) for name in names}

    def set_limits(values: dict) -> None:
        for name, value in values.items():
            setattr(kernels, name, value)

    try:
        for d_in, d_out in shapes:
            generator = torch.Generator(device=device).manual_seed(0)
            A = torch.randn(args.rank, d_in + full, device=device, generator=generator) / d_in**0.5
            B = torch.randn(d_out, args.rank + full, device=device, generator=generator) * 0.1
            log_ratios = torch.zeros(2, device=device)
            for rows in [int(r) for r in args.rows.split(",")]:
                x = torch.randn(rows, d_in, device=device, generator=generator).to(torch.bfloat16)
                out = torch.zeros(rows, d_out, device=device, dtype=torch.bfloat16)
                set_limits(limits)
                default = ("two passes" if kernels.two_pass(rows, d_in, d_out, args.variant) else "one kernel"
                           if kernels.fuses(rows, d_in, d_out) else "one kernel, split"
                           if kernels.splits(rows, d_in, d_out) else "matmuls + kernel")
                timings = {}
                width = d_in + 2 * d_out
                off, on = {}, {args.variant: rows}  # two-pass limits
                forced = {"one kernel": (rows, width, width, rows, 0, off), "matmuls + kernel": (0, 0, 0, 0, 0, off),
                          "one kernel, split": (0, 0, 0, 0, rows, off), "two passes": (0, 0, 0, 0, 0, on)}
                for name, values in forced.items():
                    set_limits(dict(zip(names, values)))

                    def call():
                        Fn.add_gated_branch_(out, args.variant, x, A, B, log_ratios, 1.0, d_in**0.5, 2.0, 12.0)

                    for _ in range(5):
                        call()
                    torch.cuda.synchronize()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    # GPU time: a long kernel queued first keeps the host ahead, so the events time the GPU
                    torch.cuda._sleep(int(2e7))
                    start.record()
                    for _ in range(args.calls):
                        call()
                    end.record()
                    torch.cuda.synchronize()
                    gpu_us = start.elapsed_time(end) * 1e3 / args.calls
                    begin = time.perf_counter()
                    for _ in range(args.calls):
                        call()
                    host_us = (time.perf_counter() - begin) * 1e6 / args.calls
                    torch.cuda.synchronize()
                    timings[name] = (gpu_us, host_us)
                (fg, fh), (mg, mh), (sg, sh), (tg, th) = (timings[name] for name in forced)
                print(f"| {d_in} | {d_out} | {rows} | {fg:.1f} | {fh:.1f} | {mg:.1f} | {mh:.1f} | {sg:.1f} | {sh:.1f} "
                      f"| {tg:.1f} | {th:.1f} | {default} |", flush=True)
                rows_out.append({"d_in": d_in, "d_out": d_out, "tokens": rows, "one_kernel_gpu_us": fg,
                                 "one_kernel_host_us": fh, "matmuls_gpu_us": mg, "matmuls_host_us": mh,
                                 "split_gpu_us": sg, "split_host_us": sh, "two_pass_gpu_us": tg,
                                 "two_pass_host_us": th, "default": default})
    finally:
        set_limits(limits)
    if args.json:
        write_json_atomic(args.json, {"header": header, "args": vars(args), "rows": rows_out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
