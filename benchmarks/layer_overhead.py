"""Host-side cost of one adapted layer: microseconds per call, HypLoRA against stock peft LoRA.

At the sizes of issue 6 a training step is bound by the CPU that issues kernels, not by the GPU (the step's GPU
busy time is well below its wall time), so what a layer costs is mostly Python and launch overhead. This
script isolates it: one ``nn.Linear`` (d_in = d_out = 4096, bf16) with an adapter, forward + backward (and
no-grad forward, as in decoding) called many times back to back on few tokens, so that the GPU never limits;
the time per call is then the host's. Also the raw cost of one aten operation and of one Triton launch, from
the main thread and from inside a backward (autograd's device thread).

    python benchmarks/layer_overhead.py
"""

from __future__ import annotations

import argparse
import os

import torch
from _common import device_name, one_layer_model, per_call_us, versions_line, write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--tokens", default="1,64", help="comma-separated token counts")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"device: {device_name(device)} | {versions_line()}")
    from hyplora.adapter import kernels

    rows = []

    def record(what, tokens, stats):
        rows.append({"what": what, "tokens": tokens, "median_us": stats[0], "min_us": stats[1], "max_us": stats[2]})
        print(f"| {what} | {tokens} | {stats[0]:.1f} | {stats[1]:.1f}-{stats[2]:.1f} |", flush=True)

    print("| what | tokens | us per call (median) | min-max |\n|---|---:|---:|---:|")
    small = torch.zeros(16, device=device)
    record("one aten op (add_ on 16 floats)", 16, per_call_us(lambda: small.add_(1.0), device, args.calls * 5,
                                                             args.repeats))
    if device.type == "cuda" and kernels.triton is not None:
        # One Triton launch (the gate kernel on 4 tokens) from the main thread, and inside a backward, which
        # autograd runs on its device thread, against one torch operation there.
        a_raw = torch.randn(4, 32, device=device)
        norm_x = a_raw.norm(dim=-1)
        gram = torch.eye(32, device=device)
        zero = torch.zeros(2, device=device)

        def launch():
            kernels.gate_forward(a_raw, norm_x, gram, zero, 1.0, 1.0, "lorentz", 1.0, 12.0, True)

        record("Triton launch from the main thread (gate_forward)", 4, per_call_us(launch, device, args.calls,
                                                                                    args.repeats))

        def in_backward(body):
            class Probe(torch.autograd.Function):
                @staticmethod
                def forward(ctx, v):
                    return v * 2

                @staticmethod
                def backward(ctx, grad):
                    body()
                    return grad * 2

            v = torch.ones(8, device=device, requires_grad=True)
            return lambda: Probe.apply(v).sum().backward()

        record("backward of a custom Function doing nothing", 8,
               per_call_us(in_backward(lambda: None), device, args.calls, args.repeats))
        record("... doing one torch operation", 8,
               per_call_us(in_backward(lambda: small.add_(1.0)), device, args.calls, args.repeats))
        record("... doing one Triton launch (gate_forward)", 8,
               per_call_us(in_backward(launch), device, args.calls, args.repeats))
        with torch.autograd.set_multithreading_enabled(False):  # the backward on the calling (main) thread
            record("... doing one Triton launch, autograd multithreading off", 8,
                   per_call_us(in_backward(launch), device, args.calls, args.repeats))
    settings = [("lora", {}), ("lorentz", {}), ("stereographic", {}), ("lorentz-full", {})]
    if device.type == "cuda":
        settings += [("lorentz", {"HYPLORA_TRITON": "0"})]
    for tokens in [int(t) for t in args.tokens.split(",")]:
        for method, options in settings:
            model = one_layer_model(method, args.d, args.rank, device, dtype)
            x = torch.randn(1, tokens, args.d, device=device, dtype=dtype, requires_grad=True)
            label = method + "".join(f" ({k}={v})" for k, v in options.items())
            previous = os.environ.get("HYPLORA_TRITON")
            if "HYPLORA_TRITON" in options:
                os.environ["HYPLORA_TRITON"] = options["HYPLORA_TRITON"]

            def train_call():
                model(x).float().sum().backward()

            def infer_call():
                with torch.no_grad():
                    model(x)

            record(f"{label}: forward + backward", tokens, per_call_us(train_call, device, args.calls, args.repeats))
            record(f"{label}: no-grad forward", tokens, per_call_us(infer_call, device, args.calls, args.repeats))
            if previous is None:
                os.environ.pop("HYPLORA_TRITON", None)
            else:
                os.environ["HYPLORA_TRITON"] = previous
    if args.json:
        write_json_atomic(args.json, {"device": device_name(device), "versions": versions_line(), "rows": rows})


if __name__ == "__main__":
    main()
