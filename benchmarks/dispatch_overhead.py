"""Host time of the eager no-grad layer's Python path to its Triton launch, on any machine.

Eager decoding is bound by host time, and a HypLoRA layer's no-grad branch there is one Triton launch
(`kernels.add_fused_`) behind a few checks: the layer's settings, `functional.adds_in_place`, the dispatch in
`functional.add_gated_branch_`, the device guard, the grid and block sizes, the launch arguments. This script times
that path alone: ``HypLoraLinear._add_branch_in_place`` on one token of a (d -> d) layer, back to back, with
`kernels._launch` replaced by a call that does nothing, so that neither the launch nor the GPU is in the figure.
On a machine without a GPU it runs the layer on CPU tensors, with Triton's interpreter switched on (nothing is
interpreted: nothing is launched). The same run also times the path with Triton's own ``triton.cdiv`` and
``triton.next_power_of_2`` in `kernels` (what it used before the eleventh session; on this path they size the grid,
the blocks being cached), side by side, and one call of ``triton.cdiv`` and of ``kernels._cdiv``.

    python benchmarks/dispatch_overhead.py [--json out.json]
"""

from __future__ import annotations

import argparse
import os

import torch

if not torch.cuda.is_available():  # before `kernels` is imported: the Triton path on CPU tensors
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("HYPLORA_TRITON", "interpret")

from _common import device_name, one_layer_model, per_call_us, versions_line, write_json_atomic  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--variants", default="lorentz,stereographic,lorentz-full")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    from hyplora.adapter import kernels

    if kernels.triton is None:
        raise SystemExit("Triton is not installed: the no-grad layer has no Triton path to time")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"device: {device_name(device)} | {versions_line()} | Triton {kernels.triton.__version__}")
    print(f"d = {args.d}, r = {args.rank}, 1 token; kernels._launch replaced by a call that does nothing; median "
          f"of {args.repeats} repeats of {args.calls} calls")
    rows = []

    def record(what: str, stats) -> None:
        rows.append({"what": what, "median_us": stats[0], "min_us": stats[1], "max_us": stats[2]})
        print(f"| {what} | {stats[0]:.2f} | {stats[1]:.2f}-{stats[2]:.2f} |", flush=True)

    print("| what | us per call (median) | min-max |\n|---|---:|---:|")
    record("triton.cdiv(1000, 16)", per_call_us(lambda: kernels.triton.cdiv(1000, 16), device, args.calls,
                                                args.repeats))
    record("kernels._cdiv(1000, 16)", per_call_us(lambda: kernels._cdiv(1000, 16), device, args.calls, args.repeats))
    launches = []
    helpers = {"package": (kernels._cdiv, kernels._next_power_of_2),
               "Triton's helpers": (kernels.triton.cdiv, kernels.triton.next_power_of_2)}
    saved_launch, saved_helpers = kernels._launch, helpers["package"]
    kernels._launch = lambda *arguments: launches.append(arguments[0])
    try:
        with torch.no_grad():
            for variant in args.variants.split(","):
                layer = one_layer_model(variant, args.d, args.rank, device, dtype).base_model.model.proj
                x = torch.randn(1, 1, args.d, device=device, dtype=dtype)
                result = layer.base_layer(x)
                for label, (cdiv, next_power_of_2) in helpers.items():
                    kernels._cdiv, kernels._next_power_of_2 = cdiv, next_power_of_2
                    launches.clear()
                    if not layer._add_branch_in_place(result, x, "default"):
                        raise SystemExit(f"{variant}: the layer did not take the in-place no-grad path")
                    kernel = getattr(launches[0], "__name__", launches[0])
                    stats = per_call_us(lambda: layer._add_branch_in_place(result, x, "default"), device,
                                        args.calls, args.repeats)
                    record(f"{variant}: layer path to the launch of {kernel}, {label}", stats)
    finally:
        kernels._launch = saved_launch
        kernels._cdiv, kernels._next_power_of_2 = saved_helpers
    if args.json:
        write_json_atomic(args.json, {"device": device_name(device), "versions": versions_line(),
                                      "triton": kernels.triton.__version__, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
