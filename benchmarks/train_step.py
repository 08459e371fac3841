"""Training-step time and peak memory: HypLoRA variants against stock peft LoRA, side by side in one run.

Default configuration (issue 6): a Llama-3-8B-shaped model cut to 4 layers (hidden 4096, intermediate 14336,
32 heads, 8 KV heads, vocabulary 32000) in bf16, random weights, batch 4 x 256 tokens, r = 32 on q, k, v, up
and down projections, AdamW (fused on a GPU, as the Trainer's default), one step = forward + backward +
optimizer step. Prints a table of medians, min-max and ratios to LoRA, names the device and versions, and
writes the numbers as JSON (--json).

    python benchmarks/train_step.py                       # on a GPU
    python benchmarks/train_step.py --compile none,reduce-overhead   # eager and torch.compile'd, side by side
    python benchmarks/train_step.py --tiny --device cpu   # a quick smoke run anywhere

--compile runs every method in each listed mode: "none" (eager), "main-thread" (eager, with the backward on the
calling thread: torch.autograd.set_multithreading_enabled(False); on CUDA autograd otherwise runs it on a
device thread, where each Python backward must take the GIL) or a torch.compile mode ("default",
"reduce-overhead" = with CUDA graphs, "max-autotune-no-cudagraphs"); the model is compiled whole, the optimizer
step stays eager. Ratios compare methods in the same mode (HypLoRA compiled against LoRA compiled).

Besides the methods run by default, "hyplora-lorentz-fixed" and "hyplora-stereographic-fixed" keep K and s fixed
(no learned scalar parameters), to measure what those parameters cost. A HypLoRA method's name may end in
"+fwdTxW" and/or "+bwdTxW": its training gate kernels (forward, backward) then take T tokens per block and W
warps, for that method alone, to time block settings side by side (e.g. hyplora-lorentz+bwd32x8@reduce-overhead);
"+gramtf32x3" makes the compiled path's Gram matrix in three TF32 products (`kernels.GRAM_PRECISION`),
"+gramslabsN" sums it over at most N slabs of rows (`kernels.GRAM_MAX_SLABS`), and "+wcast" takes the compiled
backward's ``w x`` term from the float32 cast of x (`functional.W_TERM_FROM_BITS` off).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import torch
from _common import (
    METHODS,
    TARGETS,
    adapter_config,
    compile_models_independently,
    device_kernels,
    device_name,
    llama_model,
    synchronize,
    write_json_atomic,
)


def build_model(args, device, dtype):
    shape = {"hidden_size": args.hidden, "intermediate_size": args.intermediate, "num_hidden_layers": args.layers,
             "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads, "vocab_size": args.vocab}
    return llama_model(shape, device, dtype, max_position_embeddings=max(2048, args.seq))


EAGER_MODES = ("none", "main-thread")


def split_run(run: str) -> tuple[str, str]:
    """``"lora@reduce-overhead"`` -> ``("lora", "reduce-overhead")``; a plain method name runs eagerly."""
    method, _, mode = run.partition("@")
    return method, mode or "none"


_BLOCK_TABLES = {"fwd": "GATE_FORWARD_BLOCKS", "bwd": "GATE_BACKWARD_BLOCKS"}
_FUNCTIONAL_SETTINGS = ("W_TERM_FROM_BITS",)  # settings of `hyplora.adapter.functional`; the others are `kernels`'s


def padded_rank(rank: int) -> int:
    """The rank as the kernels' tables key it: the next power of 2, at least 16."""
    return max(16, 1 << (rank - 1).bit_length())


def split_settings(method: str, rank: int) -> tuple[str, dict]:
    """``"hyplora-lorentz+fwd64x8+bwd32x8+gramtf32x3"`` -> ``("hyplora-lorentz", {"GATE_FORWARD_BLOCKS": (64, 8),
    "GATE_BACKWARD_BLOCKS": (32, 8), "GRAM_PRECISION": "tf32x3"})``: kernel settings for this method's steps only.
    "fwdTxW" / "bwdTxW": the training gate kernels' (tokens per block, warps) at this rank's padded rank
    (`kernels.GATE_FORWARD_BLOCKS`, `kernels.GATE_BACKWARD_BLOCKS`, ranks up to 64); "gramtf32x3": the compiled
    path's Gram matrix in three TF32 products (`kernels.GRAM_PRECISION`); "gramslabsN": that Gram matrix summed
    over at most N slabs of rows (`kernels.GRAM_MAX_SLABS`); "wcast": the compiled backward's ``w x`` term from
    the float32 cast of x, not from x's bits (`functional.W_TERM_FROM_BITS`)."""
    base, *tweaks = method.split("+")
    settings = {}
    for tweak in tweaks:
        if tweak == "gramtf32x3":
            settings["GRAM_PRECISION"] = "tf32x3"
            continue
        if tweak == "wcast":
            settings["W_TERM_FROM_BITS"] = False
            continue
        slabs = re.fullmatch(r"gramslabs(\d+)", tweak)
        if slabs and int(slabs[1]) >= 1:
            settings["GRAM_MAX_SLABS"] = int(slabs[1])
            continue
        match = re.fullmatch(r"(fwd|bwd)(\d+)x(\d+)", tweak)
        tokens, warps = (int(match[2]), int(match[3])) if match else (0, 0)
        if not match or tokens & (tokens - 1) or warps & (warps - 1) or not 16 <= tokens <= 256 or warps > 16:
            raise SystemExit(f"bad kernel setting {tweak!r} in {method!r}: want fwdTxW or bwdTxW (T a power of 2 "
                             "in 16-256 tokens, W a power of 2 up to 16 warps), gramtf32x3, gramslabsN (N >= 1) "
                             "or wcast")
        if padded_rank(rank) > 64:
            raise SystemExit(f"{method!r}: block settings apply at ranks up to 64")
        settings[_BLOCK_TABLES[match[1]]] = (tokens, warps)
    if settings and base == "lora":
        raise SystemExit(f"{method!r}: kernel settings apply to HypLoRA methods")
    return base, settings


def make_run(run: str, args, device, dtype):
    import peft

    from hyplora.adapter import functional, kernels

    method, mode = split_run(run)
    method, settings = split_settings(method, args.rank)
    padded = padded_rank(args.rank)
    model = peft.get_peft_model(build_model(args, device, dtype), adapter_config(method, args.rank))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    # "fused": one multi-tensor kernel per step, what the Hugging Face Trainer (and so `hyplora train`) uses on a
    # GPU by default; "foreach" was this script's choice before, and costs host time per parameter tensor
    # (HypLoRA has four per adapted layer, LoRA two)
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, **{args.optimizer: True})
    generator = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator).to(device)
    forward = model if mode in EAGER_MODES else torch.compile(model, mode=mode)

    owners = {name: functional if name in _FUNCTIONAL_SETTINGS else kernels for name in settings}

    def step():
        saved = {name: getattr(owners[name], name) for name in settings}
        for name, value in settings.items():  # read at each launch or trace (and baked into a recorded CUDA graph)
            setattr(owners[name], name, {**saved[name], padded: value} if name in _BLOCK_TABLES.values() else value)
        try:
            return plain_step()
        finally:
            for name, value in saved.items():
                setattr(owners[name], name, value)

    def plain_step():
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last step's graph outputs may be reused
        loss = forward(input_ids=ids, labels=ids).loss
        if mode == "main-thread":
            with torch.autograd.set_multithreading_enabled(False):
                loss.backward()
        else:
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone()

    return model, step if settings else plain_step


def timed(step, device) -> tuple[float, torch.Tensor]:
    synchronize(device)
    start = time.perf_counter()
    loss = step()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, loss


def profile_steps(method: str, step, device) -> dict:
    """GPU busy time and kernel launches per step (torch.profiler), to tell launch-bound from GPU-bound."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = 3
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    events = prof.key_averages()
    kernels = device_kernels(prof)
    gpu_ms = sum(e.device_time_total for e in kernels) / 1e3 / steps
    launches = len(kernels) / steps
    print(f"--- profile of {steps} steps: {method}: GPU busy {gpu_ms:.1f} ms/step, {launches:.0f} kernels/step")
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=25, max_name_column_width=70))
    names = {e.name for e in kernels}
    per_kernel = sorted(((e.key, e.count / steps, e.self_device_time_total / steps) for e in events if e.key in names),
                        key=lambda item: -item[2])
    kernels = [{"name": name, "per_step": count, "us_per_step": us} for name, count, us in per_kernel]
    return {"gpu_busy_ms": gpu_ms, "kernels_per_step": launches, "kernels": kernels,
            "kernels_by_kind": kernels_by_kind(kernels)}


# What a profiled kernel is, by its name: the adapters' float32 matmuls (cuBLAS's float32 GEMMs, CUTLASS's SIMT
# sgemm, and the split-K reductions cuBLAS adds to long-K ones), HypLoRA's Triton kernels, inductor's fused
# kernels, copies and memsets, and the rest (bf16 GEMMs of the base model, attention, the optimizer).
KERNEL_KINDS = [
    ("float32 GEMMs and split-K reductions",
     re.compile(r"sgemm|gemm_f32|splitKreduce_kernel<\d+, \d+, int, float, float"
                r"|gemvx::kernel<int, int, float|dot_kernel<float")),
    ("HypLoRA Triton kernels", re.compile(r"^_(gram|gate_forward|gate_backward|lorentz_full_forward"
                                         r"|lorentz_full_backward|add_gated|add_lorentz_full|add_fused|matmul_small"
                                         r"|partial_point)_kernel")),
    ("inductor fused kernels", re.compile(r"^triton_")),
    ("copies and memsets", re.compile(r"memcpy|Memcpy|Memset")),
]


def kernel_kind(name: str) -> str:
    return next((kind for kind, pattern in KERNEL_KINDS if pattern.search(name)), "other")


def kernels_by_kind(kernels: list[dict]) -> dict[str, dict]:
    """Per-step GPU time and launches of a `profile_steps` kernel list, summed by `kernel_kind`."""
    kinds = {kind: {"us_per_step": 0.0, "per_step": 0.0} for kind, _ in KERNEL_KINDS + [("other", None)]}
    for kernel in kernels:
        kind = kinds[kernel_kind(kernel["name"])]
        kind["us_per_step"] += kernel["us_per_step"]
        kind["per_step"] += kernel["per_step"]
    return kinds


def measure_all(args, device, dtype) -> list[dict]:
    """Memory one model at a time; then time with every model resident, round-robin (drift hits all alike)."""
    modes = [m.strip() for m in args.compile.split(",") if m.strip()]
    methods = [f"{m}@{mode}" if mode != "none" else m for mode in modes for m in args.methods.split(",")]
    if any(mode not in EAGER_MODES for mode in modes):
        compile_models_independently(8 * len(methods))
    peaks, runs = {}, {}
    for method in methods:
        # peak memory of this model's creation and warm-up steps above what the other models hold: the same as
        # with this model alone on the device (allocated bytes, not the allocator's reserve)
        synchronize(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        runs[method] = make_run(method, args, device, dtype)
        for _ in range(args.warmup):
            runs[method][1]()
        synchronize(device)
        print(f"built {method} and ran {args.warmup} warm-up steps in {time.perf_counter() - start:.1f} s", flush=True)
        peaks[method] = ((torch.cuda.max_memory_allocated(device) - before) / 2**30 if device.type == "cuda"
                         else float("nan"))
    times = {method: [] for method in methods}
    losses = {}
    per_round = max(1, args.steps // args.rounds)
    for round_index in range(args.rounds):
        order = methods[round_index % len(methods):] + methods[: round_index % len(methods)]
        for method in order:
            for _ in range(per_round):
                ms, loss = timed(runs[method][1], device)
                times[method].append(ms)
                losses[method] = loss
    results = []
    for method in methods:
        ts = times[method]
        result = {"method": method, "median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts),
                  "steps": len(ts), "peak_gib": peaks[method], "final_loss": losses[method].item()}
        if args.profile:
            result.update(profile_steps(method, runs[method][1], device))
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=14336)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per method, over all rounds")
    parser.add_argument("--rounds", type=int, default=6, help="round-robin rounds over the methods")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--compile", default="none",
                        help="comma-separated modes, each run for every method: none (eager), main-thread (eager, "
                             "backward on the calling thread), default, reduce-overhead (CUDA graphs), "
                             "max-autotune-no-cudagraphs")
    parser.add_argument("--tiny", action="store_true", help="a small model for a quick smoke run")
    parser.add_argument("--optimizer", choices=["fused", "foreach"], default=None,
                        help="AdamW implementation (default: fused on CUDA, as the Trainer's default, else foreach)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--profile", action="store_true",
                        help="print a torch.profiler table, GPU busy time and kernels per step for each method")
    args = parser.parse_args()
    known = EAGER_MODES + ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    unknown = [m for m in args.compile.split(",") if m.strip() not in known]
    if unknown:
        parser.error(f"unknown --compile mode(s) {unknown}; choose from {', '.join(known)}")
    if args.tiny:
        args.hidden, args.intermediate, args.heads, args.kv_heads, args.layers = 256, 512, 4, 2, 2
        args.vocab, args.seq, args.rank, args.steps, args.warmup = 1000, 64, 8, 3, 1
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    args.optimizer = args.optimizer or ("fused" if device.type == "cuda" else "foreach")

    import peft
    import transformers

    header = (f"device: {device_name(device)} | torch {torch.__version__} | transformers {transformers.__version__} "
              f"| peft {peft.__version__}\nmodel: hidden {args.hidden}, intermediate {args.intermediate}, "
              f"{args.layers} layers, vocab {args.vocab}, {args.dtype}; batch {args.batch} x {args.seq}; r={args.rank} "
              f"on {','.join(TARGETS)}; AdamW ({args.optimizer}); {args.steps} timed steps per method after "
              f"{args.warmup} warm-up, "
              f"interleaved over {args.rounds} round-robin rounds with every model resident; peak memory: a "
              f"model's creation and warm-up above the memory the models built before it hold; modes: "
              f"{args.compile} (method@mode: the model torch.compile'd whole, or main-thread)")
    print(header, flush=True)
    results = measure_all(args, device, dtype)
    print("| method | step median ms | min-max ms | / LoRA | peak GiB | / LoRA |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        method, mode = split_run(r["method"])
        lora = next((q for q in results if q["method"] == ("lora" if mode == "none" else f"lora@{mode}")), None)
        time_ratio = r["median_ms"] / lora["median_ms"] if lora else float("nan")
        memory_ratio = r["peak_gib"] / lora["peak_gib"] if lora else float("nan")
        r.update(time_ratio=time_ratio, memory_ratio=memory_ratio)
        print(f"| {r['method']} | {r['median_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} | {time_ratio:.2f} "
              f"| {r['peak_gib']:.2f} | {memory_ratio:.2f} |"
              + (f" GPU busy {r['gpu_busy_ms']:.1f} ms, {r['kernels_per_step']:.0f} kernels" if args.profile else ""))
    if args.profile and any("kernels_by_kind" in r for r in results):
        kinds = [kind for kind, _ in KERNEL_KINDS] + ["other"]
        print("\nGPU time per step by kind of kernel, us (launches):")
        print("| method | " + " | ".join(kinds) + " |")
        print("|---|" + "---:|" * len(kinds))
        for r in results:
            by_kind = r["kernels_by_kind"]
            print(f"| {r['method']} | " + " | ".join(
                f"{by_kind[k]['us_per_step']:.0f} ({by_kind[k]['per_step']:.0f})" for k in kinds) + " |")
    if args.json:
        write_json_atomic(args.json, {"header": header, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
