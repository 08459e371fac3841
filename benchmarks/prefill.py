"""The prefill alone: one eager no-grad forward over the prompt, HypLoRA against stock peft LoRA.

transformers runs the prefill of ``generate`` eager, outside the compiled decoding step, so its cost is the
host's: Python and kernel launches, once per adapted layer. `decode.py` times it only as a difference of two
``generate`` calls, whose spread is as large as the gap between methods. This script times the forward itself:
the same models as `decode.py` (random weights, r = 32 on q, k, v, up, down, bf16, one model per method, all
resident), a prompt of --prompt-len random tokens, logits for the last position only (as ``generate``
computes them), KV cache off. Methods are interleaved round-robin, --calls forwards per method and repeat.

Columns: ms per forward (median over repeats, min-max), host ms (the time until the Python call returns,
before synchronizing: the host's cost while the GPU keeps up), ratio to LoRA, the extra time per adapted layer
against LoRA, and, with --launches, the GPU kernels and GPU busy time per forward (torch.profiler).
--host-profile runs one forward per method under cProfile and lists the Python functions with the most own
time. --fused-max-rows times each HypLoRA method under several row limits of the one-kernel path (one kernel for
the whole no-grad branch up to that many tokens, else two cuBLAS matmuls and one kernel), each set as both
`kernels.FUSED_MAX_ROWS` and the narrow layers' `kernels.FUSED_NARROW_MAX_ROWS`.

    python benchmarks/prefill.py --model smollm2,llama8b-4l --batch-sizes 1,64 --launches --json prefill.json
    python benchmarks/prefill.py --tiny      # CPU smoke run, seconds
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import (
    METHOD_LABELS,
    MODEL_SHAPES,
    device_kernels,
    device_name,
    profile_host,
    synchronize,
    versions_line,
    write_json_atomic,
)
from decode import ALL_METHODS, MODELS, adapted_layers, build_models


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2,llama8b-4l", help=f"comma-separated, from {MODELS}")
    parser.add_argument("--methods", default="lora,hyplora-lorentz,hyplora-lorentz-full,hyplora-stereographic",
                        help=f"comma-separated, from {ALL_METHODS}")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per method (interleaved)")
    parser.add_argument("--calls", type=int, default=5, help="forwards per method and repeat")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fused-max-rows", default=None,
                        help="comma-separated row limits of the one-kernel path to time each HypLoRA method under, "
                             "side by side (the most tokens for which the no-grad branch is one kernel; 0: never); "
                             "default: the package's value only")
    parser.add_argument("--launches", action="store_true", help="count GPU kernels per forward (torch.profiler)")
    parser.add_argument("--host-profile", action="store_true",
                        help="one forward per method under cProfile: the functions with the most own host time")
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU in float32, 8 tokens: a smoke run")
    parser.add_argument("--json", help="write every number (raw times included) to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.device, args.prompt_len = "cpu", 8
        args.repeats, args.calls = min(args.repeats, 3), min(args.calls, 2)
        if args.batch_sizes == "1,64":
            args.batch_sizes = "1,2"
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        args.batch_list = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    unknown = [m for m in args.models if m not in MODELS] + [m for m in args.method_list if m not in ALL_METHODS]
    if unknown:
        parser.error(f"unknown model or method: {unknown}")
    try:
        args.fused_list = [int(v) for v in args.fused_max_rows.split(",")] if args.fused_max_rows else [None]
    except ValueError:
        parser.error(f"--fused-max-rows must be comma-separated integers, got {args.fused_max_rows!r}")
    if min(args.batch_list, default=0) < 1 or args.prompt_len < 1 or args.repeats < 1 or args.calls < 1:
        parser.error("batch sizes, --prompt-len, --repeats and --calls must be positive")
    return args


def forward(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)


def host_profile(model, ids, mask, device, top: int = 15) -> list[dict]:
    return [{"function": function, "calls": calls, "own_us": own, "cumulative_us": cum}
            for function, calls, own, cum in profile_host(lambda: forward(model, ids, mask), device, top)]


def run_case(models: dict, name: str, batch: int, args, device) -> dict:
    from hyplora.adapter import kernels

    vocab = next(iter(models.values())).config.vocab_size
    generator = torch.Generator(device="cpu").manual_seed(2000 + batch)
    ids = torch.randint(1, vocab, (batch, args.prompt_len), generator=generator).to(device)
    mask = torch.ones_like(ids)
    default_rows = (kernels.FUSED_MAX_ROWS, kernels.FUSED_NARROW_MAX_ROWS)
    # (method, row limit): every HypLoRA method under each value asked for, the others once
    entries = [(method, rows) for method in models
               for rows in (args.fused_list if method.startswith("hyplora") else [None])]

    def setting(entry):
        kernels.FUSED_MAX_ROWS, kernels.FUSED_NARROW_MAX_ROWS = default_rows if entry[1] is None else (entry[1],) * 2
        return models[entry[0]]

    try:
        for entry in entries:  # warm-up: Triton's kernel cache, cuBLAS heuristics, the allocator
            model = setting(entry)
            for _ in range(3):
                forward(model, ids, mask)
        synchronize(device)
        total = {entry: [] for entry in entries}
        host = {entry: [] for entry in entries}
        for repeat in range(args.repeats):
            shift = repeat % len(entries)
            for entry in entries[shift:] + entries[:shift]:
                model = setting(entry)
                synchronize(device)
                start = time.perf_counter()
                for _ in range(args.calls):
                    forward(model, ids, mask)
                returned = time.perf_counter()
                synchronize(device)
                end = time.perf_counter()
                total[entry].append((end - start) / args.calls)
                host[entry].append((returned - start) / args.calls)
        lora_entry = ("lora", None)
        lora = statistics.median(total[lora_entry]) if lora_entry in total else None
        rows = []
        for entry in entries:
            method, fused_rows = entry
            model = setting(entry)
            median = statistics.median(total[entry])
            layers = adapted_layers(model)
            label = METHOD_LABELS[method] + ("" if fused_rows is None else f", one kernel up to {fused_rows} tokens")
            hyplora = method.startswith("hyplora")
            row = {"method": method, "fused_max_rows": kernels.FUSED_MAX_ROWS if hyplora else None,
                   "fused_narrow_max_rows": kernels.FUSED_NARROW_MAX_ROWS if hyplora else None, "label": label,
                   "adapted_layers": layers, "forward_s": total[entry],
                   "host_s": host[entry], "forward_s_median": median, "host_s_median": statistics.median(host[entry]),
                   "ratio_to_lora": median / lora if lora else None,
                   "paired_ratio_to_lora_median": statistics.median(
                       t / l for t, l in zip(total[entry], total[lora_entry])) if lora else None,
                   "extra_us_per_layer": (median - lora) * 1e6 / layers if lora and layers and method != "lora"
                   else None}
            if args.launches and device.type == "cuda":
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    forward(model, ids, mask)
                    synchronize(device)
                kernels_run = device_kernels(prof)
                row["kernels_per_forward"] = len(kernels_run)
                row["gpu_busy_ms"] = sum(e.device_time_total for e in kernels_run) / 1e3
            if args.host_profile:
                row["host_profile"] = host_profile(model, ids, mask, device)
            rows.append(row)
    finally:
        kernels.FUSED_MAX_ROWS, kernels.FUSED_NARROW_MAX_ROWS = default_rows
    return {"model": name, "batch": batch, "prompt_len": args.prompt_len, "repeats": args.repeats,
            "calls": args.calls, "rows": rows}


def print_case(case: dict) -> None:
    print(f"\n### {case['model']}, batch {case['batch']}, prompt {case['prompt_len']}: {case['repeats']} interleaved "
          f"repeats of {case['calls']} forwards (median, min-max)\n")
    print("| method | ms per forward | min-max | host ms | / LoRA (paired) | extra us per adapted layer | kernels "
          "| GPU busy ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in case["rows"]:
        ratio = "-" if row["ratio_to_lora"] is None else \
            f"{row['ratio_to_lora']:.3f} ({row['paired_ratio_to_lora_median']:.3f})"
        extra = "-" if row["extra_us_per_layer"] is None else f"{row['extra_us_per_layer']:.1f}"
        print(f"| {row['label']} | {row['forward_s_median'] * 1e3:.2f} | {min(row['forward_s']) * 1e3:.2f}-"
              f"{max(row['forward_s']) * 1e3:.2f} | {row['host_s_median'] * 1e3:.2f} | {ratio} | {extra} | "
              f"{row.get('kernels_per_forward', '-')} | {format(row['gpu_busy_ms'], '.2f') if 'gpu_busy_ms' in row else '-'} |")
    for row in case["rows"]:
        if "host_profile" in row:
            print(f"\nhost profile (cProfile, one forward), {row['label']}: own us, calls, function")
            for entry in row["host_profile"][:10]:
                print(f"  {entry['own_us']:9.1f}  x{entry['calls']:<6} {entry['function']}")


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    header = [f"device: {device_name(device)}", versions_line(),
              f"eager no-grad forward over the prompt (the prefill), r={args.rank}, {dtype}"]
    print("\n".join(header))
    cases = []
    for name in args.models:
        models = build_models(name, args, device, dtype)
        for batch in args.batch_list:
            case = run_case(models, name, batch, args, device)
            print_case(case)
            cases.append(case)
        del models
    if args.json:
        write_json_atomic(args.json, {"header": header, "args": vars(args), "shapes": MODEL_SHAPES, "cases": cases})


if __name__ == "__main__":
    main()
