"""Registers and register spills of HypLoRA's Triton kernels, compiled for a GPU architecture without that GPU.

A kernel that runs out of registers spills to local memory (the "stack" below), which can make it many times
slower: a first version of the lorentz-full backward kernel spilled 5 KB per thread and took 175 us per call on
an H200, against 4 us for the gated one (benchmarks/RESULTS.md). This script compiles every kernel launch that
`hyplora.adapter.kernels` makes for the given ranks (`kernels.launch_configs`) with Triton's own toolchain for
the target architecture, and reads each binary's resource usage with the ``cuobjdump`` that Triton ships. It
needs Triton with its NVIDIA backend, but no GPU: the numbers are static properties of the compiled code,
not timings.

    python benchmarks/kernel_registers.py                      # sm_90 (H100 / H200), ranks 8, 16, 32, 64
    python benchmarks/kernel_registers.py --arch 80 --ranks 32 --json F
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

# Compiling needs the real JIT functions, not the interpreter's stand-ins (tests set TRITON_INTERPRET=1).
os.environ["TRITON_INTERPRET"] = "0"

from _common import versions_line, write_json_atomic  # noqa: E402

FLOAT_ARGUMENTS = {"k0", "s0", "scaling", "theta_max", "sinh_theta_max"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (90: H100 / H200)")
    parser.add_argument("--ranks", default="8,16,32,64", help="comma-separated adapter ranks")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def signature(function, constants: dict) -> dict:
    """Triton's argument types: float32 pointers (bf16 for the base output and x of the in-place kernel, as in
    decoding), float32 scalars for the gate constants, int32 sizes."""
    types = {}
    for name in function.arg_names:
        if name in constants:
            types[name] = "constexpr"
        elif name.endswith("_ptr"):
            bf16 = function.__name__.startswith("_add_") and name in ("out_ptr", "x_ptr")
            types[name] = "*bf16" if bf16 else "*fp32"
        else:
            types[name] = "fp32" if name in FLOAT_ARGUMENTS else "i32"
    return types


def resource_usage(cubin: bytes, cuobjdump: str) -> dict:
    """``{"registers": n, "stack_bytes": n}`` from ``cuobjdump --dump-resource-usage``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(cubin)
    try:
        text = subprocess.run([cuobjdump, "--dump-resource-usage", handle.name], capture_output=True, text=True,
                              check=True).stdout
    finally:
        os.unlink(handle.name)
    match = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if match is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output:\n{text}")
    return {"registers": int(match.group(1)), "stack_bytes": int(match.group(2))}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import triton
        from triton.backends.compiler import GPUTarget
    except ImportError as error:
        raise SystemExit(f"this needs Triton with its NVIDIA backend ({error})") from error
    from hyplora.adapter import kernels

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(cuobjdump):
        raise SystemExit(f"Triton's cuobjdump is missing ({cuobjdump}); this Triton has no NVIDIA toolchain")
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    if not ranks or min(ranks) < 1 or max(ranks) + 1 > kernels.MAX_RANK:
        raise SystemExit(f"ranks must lie in 1..{kernels.MAX_RANK - 1}, got {args.ranks!r}")
    target = GPUTarget("cuda", args.arch, 32)
    header = [f"target: sm_{args.arch} (compiled, not run)", versions_line()]
    print("\n".join(header))
    rows = []
    for rank in ranks:
        for name, constants, warps in kernels.launch_configs(rank):
            function = getattr(kernels, name)
            source = triton.compiler.ASTSource(
                fn=function, signature=signature(function, constants),
                constexprs={(function.arg_names.index(k),): v for k, v in constants.items()})
            compiled = triton.compile(source, target=target, options={"num_warps": warps})
            rows.append({"rank": rank, "kernel": name, "constants": constants, "num_warps": warps,
                         **resource_usage(compiled.asm["cubin"], cuobjdump)})
            row = rows[-1]
            print(f"r={rank:<4} {name:32s} {str(constants):70s} warps {warps}: {row['registers']:3d} registers, "
                  f"{row['stack_bytes']:5d} bytes of stack" + ("  <- spills" if row["stack_bytes"] else ""),
                  flush=True)
    if args.json:
        write_json_atomic(args.json, {"header": header, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
