"""transformers' compiled decoding step alone, per method: the host time to issue it and its latency.

`decode.py` times whole ``generate`` calls. On SmolLM2 at batch 1 its decoding steps are bound by the host (wall
time per step about twice the GPU busy time), and HypLoRA's steps took longer than LoRA's while their GPU busy
time was the same (benchmarks/RESULTS.md). This script takes the step out of ``generate`` to say where the
difference is: in the compiled step (dynamo's guards, the CUDA graph replay and its input checks, the GPU work) or
in the Python that ``generate`` runs around it.

Per method: a static cache and two ``generate`` calls, which make transformers compile the decoding step and
record its CUDA graphs, with the compiled call wrapped to keep the arguments of the last decoding step. Then
interleaved repeats call that step directly, --calls times per method and repeat:

  issue    the call alone, from an idle GPU, not waiting for the GPU: the host time to issue one step;
  step     the call followed by a synchronize: issue, then the GPU work that was not hidden behind it.

and one cProfile of --calls issued steps per method (own host time per step of the Python functions).

    python benchmarks/decode_step.py --model smollm2 --methods lora,hyplora-lorentz --json step.json   # a GPU
    python benchmarks/decode_step.py --tiny --calls 20 --repeats 2                                       # CPU smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from _common import (
    METHOD_LABELS,
    MODEL_SHAPES,
    compile_models_independently,
    device_name,
    last_compiled_step_call,
    profile_host,
    synchronize,
    versions_line,
    write_json_atomic,
)

import decode


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--methods", default="lora,hyplora-lorentz,hyplora-stereographic")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--calls", type=int, default=100, help="step calls per method and repeat")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the small CPU shapes of decode.py")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    args.method_list = args.methods.split(",")
    unknown = [m for m in args.method_list if m not in METHOD_LABELS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(METHOD_LABELS)}")
    return args


def captured_step(model, ids, mask, cache, new_tokens: int = 4):
    """The compiled decoding step of ``model`` and the keyword arguments of its last call in a ``generate``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if ids.device.type == "cpu":  # transformers compiles the step only on accelerators unless told to (no CUDA graphs)
        from transformers.generation.configuration_utils import CompileConfig

        inner.generation_config.compile_config = CompileConfig(mode="default")
        inner.generation_config.compile_config._compile_all_devices = True
    decode.generate_once(model, ids, mask, new_tokens, pad_id=0, cache=cache)  # compiles (on a GPU: graphs)
    compiled = inner._compiled_call
    call_args, call_kwargs = last_compiled_step_call(
        inner, lambda: decode.generate_once(model, ids, mask, new_tokens, pad_id=0, cache=cache))
    # newer transformers' static cache layers count the tokens written (in place, on the device); put the counts
    # back before every timed call, so that each writes the same cache position and none runs past the end
    counters = [layer.cumulative_length for layer in getattr(cache, "layers", [])
                if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor)]
    saved = [counter.clone() for counter in counters]

    def rewind():
        if counters:
            torch._foreach_copy_(counters, saved)

    return rewind, lambda: compiled(*call_args, **call_kwargs)


def time_calls(rewind_and_step, device, calls: int) -> tuple[list[float], list[float]]:
    """Per call, microseconds: (issue, step)."""
    rewind, step = rewind_and_step
    issue, latency = [], []
    with torch.no_grad():
        for _ in range(calls):
            rewind()
            synchronize(device)
            start = time.perf_counter()
            step()
            issue.append((time.perf_counter() - start) * 1e6)
            rewind()
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            latency.append((time.perf_counter() - start) * 1e6)
    return issue, latency


def main(argv=None) -> int:
    args = parse_args(argv)
    decode.CACHE = "static"
    compile_models_independently(4 * len(args.method_list))
    device = torch.device(args.device)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    header = [f"device: {device_name(device)}", versions_line(),
              f"compiled decoding step of {args.model}{' (TINY)' if args.tiny else ''}, batch {args.batch}, "
              f"r={args.rank}; {args.calls} calls x {args.repeats} interleaved repeats per method"]
    print("\n".join(header), flush=True)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    models = decode.build_models(args.model, argparse.Namespace(tiny=args.tiny, method_list=args.method_list,
                                                                rank=args.rank), device, dtype)
    vocab = next(iter(models.values())).config.vocab_size
    ids = torch.randint(1, vocab, (args.batch, 64), generator=torch.Generator().manual_seed(7)).to(device)
    mask = torch.ones_like(ids)
    steps = {method: captured_step(model, ids, mask, decode.static_cache(model, 64 + 8))
             for method, model in models.items()}
    for step in steps.values():  # warm: the first replays of a recorded graph can be slower
        time_calls(step, device, 5)
    issue = {method: [] for method in steps}
    latency = {method: [] for method in steps}
    methods = list(steps)
    for repeat in range(args.repeats):
        shift = repeat % len(methods)
        for method in methods[shift:] + methods[:shift]:
            i, s = time_calls(steps[method], device, args.calls)
            issue[method].append(statistics.median(i))
            latency[method].append(statistics.median(s))
    rows = []
    for method in methods:
        with torch.no_grad():
            rewind, step = steps[method]
            profile = profile_host(lambda: [(rewind(), step()) for _ in range(args.calls)], device, 12,
                                   per=args.calls)
        rows.append({"method": method, "label": METHOD_LABELS[method],
                     "issue_us_median": statistics.median(issue[method]), "issue_us": issue[method],
                     "step_us_median": statistics.median(latency[method]), "step_us": latency[method],
                     "host_profile": [{"function": f, "calls": c, "own_us_per_step": own, "cumulative_us_per_step": cum}
                                      for f, c, own, cum in profile]})
    lora = next((row for row in rows if row["method"] == "lora"), None)
    print("\n| method | issue us (median of repeat medians) | min-max | step us | min-max | step - LoRA's us |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        extra = "-" if lora is None else f"{row['step_us_median'] - lora['step_us_median']:+.1f}"
        print(f"| {row['label']} | {row['issue_us_median']:.1f} | {min(row['issue_us']):.1f}-{max(row['issue_us']):.1f} "
              f"| {row['step_us_median']:.1f} | {min(row['step_us']):.1f}-{max(row['step_us']):.1f} | {extra} |")
    for row in rows:
        print(f"\nhost profile, {row['method']} (own / cumulative us per step, cProfile adds its own cost):")
        for entry in row["host_profile"]:
            print(f"  {entry['own_us_per_step']:8.1f} {entry['cumulative_us_per_step']:8.1f}  x{entry['calls']:<6d} "
                  f"{entry['function']}")
    if args.json:
        write_json_atomic(args.json, {"header": header, "args": {k: v for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
