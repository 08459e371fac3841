"""Decoding speed with the adapter unmerged: HypLoRA variants against stock peft LoRA and the bare model.

Issue 6 asks for HypLoRA / LoRA generated tokens per second >= 0.95 at batch 1 and batch 64, on SmolLM2-135M and
on the Llama-3-8B-shaped model of train_step.py, and for the same numbers against the paper's code path
(compat="reference"). Models have random weights (architecture only):

  smollm2     SmolLM2-135M: hidden 576, intermediate 1536, 30 layers, 9 heads, 3 KV heads, vocab 49152, tied
  llama8b-4l  Llama-3-8B cut to 4 layers: hidden 4096, intermediate 14336, 32 heads, 8 KV heads, vocab 32000
  llama8b     the same with all 32 layers (about 16 GB per model in bf16, one model per method)

Methods: base (no adapter), lora (stock peft), hyplora-lorentz, hyplora-lorentz-full, hyplora-stereographic,
hyplora-reference (compat="reference"); r = 32 on q, k, v, up, down; never merged. One model per method, all
resident at once (same base weights), so that the timed runs can interleave: every repeat runs each method
once, in an order rotated from repeat to repeat, so that drift (clocks, temperature, other load) hits all
methods alike. Each timed run is one ``model.generate`` call: greedy, KV cache (transformers' default dynamic
cache; --cache static: a static cache, one per method and batch size kept from call to call, with which
transformers compiles the decoding step on a GPU), random
prompts of --prompt-len tokens, exactly --new-tokens new tokens (min_new_tokens = max_new_tokens, so EOS cannot
shorten the work). tokens/s = batch x new tokens / seconds of the whole call (prefill included);
CUDA is synchronized before and after. Warm-up runs (not timed) go first, per method and batch size, so that
Triton's kernel cache, cuBLAS and the allocator are warm.

Each repeat also times a call that makes one token, the prefill alone (transformers runs it eager, outside the
compiled decoding step), and the lines after each table give the decoding steps without it.

Columns: ms/step = median seconds / new tokens (prefill included); "/ LoRA" and "/ base" are ratios of median
tokens/s; "paired / LoRA" is the median and range of the per-repeat ratios (same repeat, same drift). The verdict
against the 0.95 target is PASS when both ratio estimates and the 95% bootstrap interval of the paired median
are at or above it, FAIL when all are below, and UNDECIDED when the run was too noisy to tell. us/layer/step is the
adapter's extra time per decoding step and adapted layer, (t_method - t_lora) / (new tokens x adapted layers)
from median times (for LoRA itself: against the base). At batch 1 this is mostly the CPU time spent
dispatching the branch's kernels.

    python benchmarks/decode.py --json decode.json      # on a GPU: both models, batch 1 and 64, ~4 min on an H100
    python benchmarks/decode.py --tiny                  # CPU smoke run, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import os
import statistics
import time
import warnings

import torch
from _common import (
    METHOD_LABELS,
    METHODS,
    MODEL_SHAPES,
    TARGETS,
    TINY_SHAPES,
    adapter_config,
    compile_models_independently,
    device_kernels,
    device_name,
    llama_model,
    median_interval,
    profile_host,
    synchronize,
    versions_line,
    write_json_atomic,
)

ALL_METHODS = ["base"] + METHODS
MODELS = list(MODEL_SHAPES)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama8b-4l,smollm2", help=f"comma-separated, from {MODELS}")
    variants = [m for m in METHOD_LABELS if m not in ALL_METHODS]
    parser.add_argument("--methods", default=",".join(ALL_METHODS),
                        help=f"comma-separated, from {ALL_METHODS}, or {variants}")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per method (interleaved)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per method before the timed ones")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="stop adding repeats to a (model, batch) case once its timed runs took this long "
                             "(at least --min-repeats are run, and every method runs equally often; 0: no limit)")
    parser.add_argument("--min-repeats", type=int, default=3)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--cache", default="dynamic", choices=["dynamic", "static"],
                        help="KV cache; static makes transformers torch.compile the decoding step on a GPU "
                             "(reduce-overhead: CUDA graphs) for every method alike")
    parser.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 (fp32 with --tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny models on CPU in float32, batch 1 and 2, 8 + 8 tokens: a smoke run")
    parser.add_argument("--json", help="write every number (raw times included) to this file")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed runs, profile one generate call per method (torch.profiler): GPU busy "
                             "time and kernels per generated token, and the kernels that take the most GPU time")
    parser.add_argument("--split-max-rows", type=int, default=None,
                        help="set kernels.FUSED_SPLIT_MAX_ROWS for this run: wide layers take the one-kernel no-grad "
                             "path, with d_out split across programs, up to this many tokens (default: the "
                             "package's value; eager decoding only, compiled steps do not use it)")
    parser.add_argument("--fused-max-rows", type=int, default=None,
                        help="set kernels.FUSED_MAX_ROWS and kernels.FUSED_NARROW_MAX_ROWS for this run: the most "
                             "tokens for which an eager no-grad branch is one kernel (0: never, the matmul path "
                             "always; default: the package's values)")
    parser.add_argument("--two-pass-columns", type=int, default=None,
                        help="set kernels.TWO_PASS_COLUMNS for this run: input columns per program in the first "
                             "launch of the two-pass form (default: the package's value)")
    parser.add_argument("--host-profile", action="store_true",
                        help="after the timed runs, run one generate call per method under cProfile: the Python "
                             "functions that take the most host time (where a host-bound step spends it)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.device = "cpu"
        args.dtype = args.dtype or "fp32"
        args.threads = args.threads or 1
        if args.batch_sizes == "1,64":
            args.batch_sizes = "1,2"
        args.prompt_len, args.new_tokens, args.rank = 8, 8, 8
        args.repeats, args.warmup = min(args.repeats, 3), 1
    args.dtype = args.dtype or "bf16"
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.batch_list = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    unknown = [m for m in args.models if m not in MODELS] + [m for m in args.method_list if m not in METHOD_LABELS]
    if unknown:
        parser.error(f"unknown model or method: {unknown}")
    return args


def build_models(name: str, args, device, dtype) -> dict:
    """One model per method, all with the same random base weights; the adapters are never merged."""
    import peft

    shapes = TINY_SHAPES if args.tiny else MODEL_SHAPES
    base = llama_model(shapes[name], device, dtype, seed=0)
    base.eval()
    models = {}
    for method in args.method_list:
        if method == "base":
            models[method] = base
            continue
        torch.manual_seed(1)
        model = peft.get_peft_model(copy.deepcopy(base), adapter_config(method, args.rank))
        model.eval()
        models[method] = model
    if "base" not in models:
        del base
    return models


def adapted_layers(model) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(module, LoraLayer) for module in model.modules())


CACHE = "dynamic"


def static_cache(model, max_len: int):
    """One static KV cache for every ``generate`` call of a model at one batch size (None: dynamic cache).

    A static cache makes transformers compile the decoding step (torch.compile, CUDA graphs) on a GPU. Given
    ``cache_implementation="static"``, transformers 5 allocates a new cache in every call. The cache tensors are
    static inputs of the recorded CUDA graphs, and a cache at new addresses needs a graph of its own: a step
    then checked graphs recorded for earlier caches, or recorded a new one, depending on where the allocator
    put the new cache (benchmarks/RESULTS.md). A serving loop keeps its cache, and so does this.
    """
    if CACHE != "static":
        return None
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=max_len)


def generate_once(model, ids, mask, new_tokens: int, pad_id: int, cache=None) -> torch.Tensor:
    extra = {}
    if cache is not None:
        cache.reset()  # in place: the tensors keep their addresses
        extra["past_key_values"] = cache
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, use_cache=True, pad_token_id=pad_id, **extra)


_ONE_KERNEL_LIMITS = {}  # the dispatch limits in force before any method set its own (see `select_launches`)
# the no-grad paths a method name's suffix forces (`kernels` limits; TWO_PASS_MAX_ROWS for every variant)
_PATH_SUFFIXES = {
    "-matmul": {"FUSED_MAX_ROWS": 0, "FUSED_NARROW_MAX_ROWS": 0, "TWO_PASS_MAX_ROWS": 0},
    "-one-pass": {"TWO_PASS_MAX_ROWS": 0},
    "-two-pass": {"TWO_PASS_MAX_ROWS": 256},
    "-two-pass-all": {"FUSED_MAX_ROWS": 0, "TWO_PASS_MAX_ROWS": 256},
}


def select_launches(method: str) -> None:
    """Per method: Triton's JIT entry for every launch of a "-jit" method, else the direct launches of kept
    compiled kernels (`kernels._launch`, the default); the no-grad paths of `_PATH_SUFFIXES` for a method with
    one of those suffixes, else the package's dispatch limits as set: "-matmul", LoRA's two matmuls and the gate
    kernel for every layer; "-one-pass", no two-pass form; "-two-pass", the two-pass form on the wide layers that
    the one kernel does not take; "-two-pass-all", on every wide layer."""
    from hyplora.adapter import kernels

    kernels.DIRECT_LAUNCH = not method.endswith("-jit")
    names = ("FUSED_MAX_ROWS", "FUSED_NARROW_MAX_ROWS", "TWO_PASS_MAX_ROWS")
    if not _ONE_KERNEL_LIMITS:
        _ONE_KERNEL_LIMITS.update({name: getattr(kernels, name) for name in names})
    forced = dict(next((values for suffix, values in _PATH_SUFFIXES.items() if method.endswith(suffix)), {}))
    if "TWO_PASS_MAX_ROWS" in forced:
        forced["TWO_PASS_MAX_ROWS"] = dict.fromkeys(kernels.VARIANT_IDS, forced["TWO_PASS_MAX_ROWS"])
    for name in names:
        setattr(kernels, name, forced.get(name, _ONE_KERNEL_LIMITS[name]))


@contextlib.contextmanager
def collector_between_repeats():
    """Python's garbage collector off inside the timed calls, as timeit has it (a full collection inside one
    call would charge one method alone); the function yielded collects, to be called between repeats."""
    gc.disable()
    try:
        yield gc.collect
    finally:
        gc.enable()


def run_case(models: dict, name: str, batch: int, args, device) -> dict:
    """Warm-up, then interleaved timed runs of every method at one batch size."""
    vocab = next(iter(models.values())).config.vocab_size
    generator = torch.Generator(device="cpu").manual_seed(1000 + batch)
    ids = torch.randint(1, vocab, (batch, args.prompt_len), generator=generator).to(device)
    mask = torch.ones_like(ids)
    expected = args.prompt_len + args.new_tokens
    caches = {method: static_cache(model, expected) for method, model in models.items()}
    warmup_start = time.perf_counter()
    for method, model in models.items():
        select_launches(method)
        for _ in range(args.warmup):
            generate_once(model, ids, mask, args.new_tokens, pad_id=0, cache=caches[method])
    synchronize(device)
    warmup_s = time.perf_counter() - warmup_start

    methods = list(models)
    seconds = {method: [] for method in methods}
    # a call making one token is the prefill alone (transformers runs it outside the compiled step): timed in
    # the same repeat, it gives the decoding steps' own time, t(new tokens) - t(1), over new tokens - 1 steps
    prefill_seconds = {method: [] for method in methods}
    outputs = {}
    case_start = time.perf_counter()
    with collector_between_repeats() as between_repeats:
        for repeat in range(args.repeats):
            between_repeats()
            shift = repeat % len(methods)
            for method in methods[shift:] + methods[:shift]:
                select_launches(method)
                synchronize(device)
                start = time.perf_counter()
                out = generate_once(models[method], ids, mask, args.new_tokens, pad_id=0, cache=caches[method])
                synchronize(device)
                seconds[method].append(time.perf_counter() - start)
                if out.shape != (batch, expected):
                    raise RuntimeError(f"{method} generated shape {tuple(out.shape)}, expected {(batch, expected)}")
                outputs[method] = out
                if args.new_tokens > 1:
                    synchronize(device)
                    start = time.perf_counter()
                    generate_once(models[method], ids, mask, 1, pad_id=0, cache=caches[method])
                    synchronize(device)
                    prefill_seconds[method].append(time.perf_counter() - start)
            out_of_time = args.max_seconds and time.perf_counter() - case_start > args.max_seconds
            if out_of_time and repeat + 1 >= args.min_repeats:
                break

    profiles = {method: select_launches(method) or profile_generate(models[method], ids, mask, args, device,
                                                                     caches[method])
                for method in methods} \
        if args.profile and device.type == "cuda" else {}

    if args.host_profile:
        for method in methods:
            select_launches(method)
            profiles.setdefault(method, {})["host_profile"] = host_profile_generate(
                models[method], ids, mask, args, device, caches[method])

    tokens = batch * args.new_tokens
    rows = []
    for method in methods:
        times = seconds[method]
        rates = [tokens / t for t in times]
        rows.append({"method": method, "label": METHOD_LABELS[method], "seconds": times,
                     "median_s": statistics.median(times), "tokens_per_s_median": statistics.median(rates),
                     "tokens_per_s_min": min(rates), "tokens_per_s_max": max(rates),
                     "adapted_layers": adapted_layers(models[method]),
                     "same_tokens_as_base": bool(torch.equal(outputs[method], outputs["base"]))
                     if "base" in outputs else None, **profiles.get(method, {})})
        rows[-1].update(decode_only(rows[-1], prefill_seconds[method], batch, args.new_tokens))
    by_method = {row["method"]: row for row in rows}
    lora, base = by_method.get("lora"), by_method.get("base")
    for row in rows:
        row["ratio_to_lora"] = row["tokens_per_s_median"] / lora["tokens_per_s_median"] if lora else None
        row["ratio_to_base"] = row["tokens_per_s_median"] / base["tokens_per_s_median"] if base else None
        # paired ratios (same repeat, so the same drift): their spread shows how much the ratio can be trusted
        paired = [lora_s / t for t, lora_s in zip(row["seconds"], lora["seconds"])] if lora else None
        row["paired_ratio_to_lora"] = paired
        row["paired_ratio_to_lora_median"] = statistics.median(paired) if paired else None
        row["paired_ratio_to_lora_interval"] = median_interval(paired) if paired else None
        reference = base if row["method"] == "lora" else lora
        layers = row["adapted_layers"]
        if reference is not None and layers and row["method"] != "base":
            row["overhead_us_per_layer_step"] = ((row["median_s"] - reference["median_s"]) * 1e6
                                                  / (args.new_tokens * layers))
            row["overhead_against"] = reference["method"]
        else:
            row["overhead_us_per_layer_step"] = None
        if lora is not None and row.get("decode_only_tokens_per_s") and lora.get("decode_only_tokens_per_s"):
            row["decode_only_ratio_to_lora"] = lora["decode_only_s_median"] / row["decode_only_s_median"]
    return {"model": name, "batch": batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            "repeats": len(seconds[methods[0]]), "warmup": args.warmup, "warmup_s": warmup_s,
            "rows": rows}


def decode_only(row: dict, prefill: list, batch: int, new_tokens: int) -> dict:
    """The decoding steps without the prefill: per repeat ``t(new tokens) - t(1 token)``, their median and the
    tokens/s over the ``new tokens - 1`` steps (empty without prefill timings)."""
    if not prefill:
        return {}
    median = statistics.median(total - first for total, first in zip(row["seconds"], prefill))
    return {"prefill_seconds": prefill, "prefill_s_median": statistics.median(prefill),
            "decode_only_s_median": median,
            "decode_only_tokens_per_s": batch * (new_tokens - 1) / median if median > 0 else None}


def profile_generate(model, ids, mask, args, device, cache=None) -> dict:
    """GPU busy time and kernel launches per generated token over one profiled ``generate`` call.

    The profiler sees the kernels inside CUDA graph replays too, so this tells GPU-bound from host-bound
    decoding (wall time per token well above GPU time per token) for compiled and eager decoding alike.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        generate_once(model, ids, mask, args.new_tokens, pad_id=0, cache=cache)
        synchronize(device)
    kernels = device_kernels(prof)
    names = {e.name for e in kernels}
    per_name = [e for e in prof.key_averages() if e.key in names]
    top = sorted(per_name, key=lambda e: e.self_device_time_total, reverse=True)[:12]
    return {"gpu_busy_us_per_token_step": sum(e.device_time_total for e in kernels) / args.new_tokens,
            "kernels_per_token_step": len(kernels) / args.new_tokens,
            "top_kernels": [{"name": e.key[:90], "count": e.count, "gpu_us": e.self_device_time_total}
                            for e in top]}


def host_profile_generate(model, ids, mask, args, device, cache=None, top: int = 25) -> list[dict]:
    """The Python functions with the most own host time over one ``generate`` call under cProfile, in
    microseconds per generated token (`_common.profile_host`)."""
    rows = profile_host(lambda: generate_once(model, ids, mask, args.new_tokens, pad_id=0, cache=cache), device, top,
                        per=args.new_tokens)
    return [{"function": function, "calls": calls, "own_us_per_token": own, "cumulative_us_per_token": cum}
            for function, calls, own, cum in rows]


TARGET = 0.95  # HypLoRA / LoRA tokens per second (issue 6)


def conservative_ratio(row: dict) -> float:
    """The lower of the two estimates of HypLoRA / LoRA tokens/s: the ratio of the medians, and the median of
    the per-repeat (paired) ratios. With noisy repeats they can differ by 0.1 (benchmarks/RESULTS.md)."""
    return min(row["ratio_to_lora"], row["paired_ratio_to_lora_median"])


def verdict(row: dict) -> str:
    """PASS when both ratio estimates and the whole 95% bootstrap interval of the paired median are at or above
    the target, FAIL when both estimates and the whole interval are below it, otherwise UNDECIDED: the run was too
    noisy to tell (run it again on a quieter machine, or with more repeats)."""
    low, high = row["paired_ratio_to_lora_interval"]
    if conservative_ratio(row) >= TARGET and low >= TARGET:
        return "PASS"
    if max(row["ratio_to_lora"], row["paired_ratio_to_lora_median"]) < TARGET and high < TARGET:
        return "FAIL"
    return "UNDECIDED"


def print_case(case: dict) -> None:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    print(f"\n### {case['model']}, batch {case['batch']}: prompt {case['prompt_len']} + {case['new_tokens']} new "
          f"tokens, {case['repeats']} interleaved repeats (median, min-max)\n")
    print("| method | tokens/s | min-max | ms/step | / LoRA | paired / LoRA median (min-max) | / base | adapted layers "
          "| us/layer/step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in case["rows"]:
        paired = row["paired_ratio_to_lora"]
        paired_text = (f"{row['paired_ratio_to_lora_median']:.3f} ({min(paired):.3f}-{max(paired):.3f})" if paired
                       else "-")
        overhead = row["overhead_us_per_layer_step"]
        overhead_text = "-" if overhead is None else f"{overhead:.1f}" + (
            " (vs base)" if row["overhead_against"] == "base" else "")
        print(f"| {row['label']} | {row['tokens_per_s_median']:.1f} | {row['tokens_per_s_min']:.1f}-"
              f"{row['tokens_per_s_max']:.1f} | {row['median_s'] * 1e3 / case['new_tokens']:.2f} "
              f"| {fmt(row['ratio_to_lora'], '.3f')} | {paired_text} | {fmt(row['ratio_to_base'], '.3f')} "
              f"| {row['adapted_layers']} | {overhead_text} |")
    verdicts = [f"{row['method'].removeprefix('hyplora-')} {verdict(row)} (paired median, 95% interval "
                f"{row['paired_ratio_to_lora_interval'][0]:.3f}-{row['paired_ratio_to_lora_interval'][1]:.3f})"
                for row in case["rows"] if row["method"].startswith("hyplora") and row["ratio_to_lora"] is not None]
    if verdicts:
        print(f"\ntarget HypLoRA / LoRA tokens/s >= {TARGET} (PASS: the median ratio, the paired median and its "
              f"bootstrap interval all at or above it; FAIL: all below; else UNDECIDED, too noisy to tell): "
              f"{', '.join(verdicts)}")
    if any("decode_only_s_median" in row for row in case["rows"]):
        print(f"\nwithout the prefill (a 1-token call timed in the same repeats and subtracted; "
              f"{case['new_tokens'] - 1} decoding steps): prefill ms, decoding tokens/s (/ LoRA)")
        for row in case["rows"]:
            if "decode_only_s_median" in row:
                print(f"  {row['label']}: prefill {row['prefill_s_median'] * 1e3:.1f} ms, "
                      f"{fmt(row['decode_only_tokens_per_s'], '.1f')} tokens/s "
                      f"({fmt(row.get('decode_only_ratio_to_lora'), '.3f')})")
    for row in case["rows"]:
        if "gpu_busy_us_per_token_step" in row:
            print(f"\nprofile, {row['method']}: GPU busy {row['gpu_busy_us_per_token_step']:.0f} us and "
                  f"{row['kernels_per_token_step']:.0f} kernels per decoding step (prefill included); top kernels:")
            for kernel in row["top_kernels"]:
                print(f"  {kernel['gpu_us'] / 1e3:8.2f} ms  x{kernel['count']:<6} {kernel['name']}")
    for row in case["rows"]:
        if "host_profile" in row:
            print(f"\nhost profile (cProfile), {row['method']}: own us per generated token, calls, function")
            for entry in row["host_profile"][:12]:
                print(f"  {entry['own_us_per_token']:9.1f}  x{entry['calls']:<7} {entry['function']}")
    mismatched = [row["method"] for row in case["rows"] if row["same_tokens_as_base"] is False]
    if mismatched:
        print(f"note: tokens differ from the base model's for {mismatched} (fresh adapters add ~0; "
              "a reduced-precision near-tie can flip)")


def main(argv=None) -> int:
    args = parse_args(argv)
    global CACHE
    CACHE = args.cache
    if CACHE == "static":  # one compiled decoding step per method and batch size
        compile_models_independently(4 * len(args.method_list) * len(args.batch_list) * len(args.models))
    if args.threads:
        torch.set_num_threads(args.threads)
    from hyplora.adapter import kernels

    if args.split_max_rows is not None:
        if args.split_max_rows < 0:
            raise SystemExit(f"--split-max-rows must be >= 0, got {args.split_max_rows}")
        kernels.FUSED_SPLIT_MAX_ROWS = args.split_max_rows
    if args.fused_max_rows is not None:
        if args.fused_max_rows < 0:
            raise SystemExit(f"--fused-max-rows must be >= 0, got {args.fused_max_rows}")
        kernels.FUSED_MAX_ROWS = kernels.FUSED_NARROW_MAX_ROWS = args.fused_max_rows
    if args.two_pass_columns is not None:
        if args.two_pass_columns < 1:
            raise SystemExit(f"--two-pass-columns must be >= 1, got {args.two_pass_columns}")
        kernels.TWO_PASS_COLUMNS = args.two_pass_columns
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    header = [f"device: {device_name(device)}" + (f", torch threads {torch.get_num_threads()}"
                                                   if device.type == "cpu" else ""),
              versions_line() + f" | HYPLORA_TRITON={os.environ.get('HYPLORA_TRITON', '1')} | "
              f"kernels.FUSED_MAX_ROWS={kernels.FUSED_MAX_ROWS} FUSED_NARROW_MAX_ROWS={kernels.FUSED_NARROW_MAX_ROWS} "
              f"FUSED_SPLIT_MAX_ROWS={kernels.FUSED_SPLIT_MAX_ROWS} TWO_PASS_MAX_ROWS={kernels.TWO_PASS_MAX_ROWS} "
              f"TWO_PASS_COLUMNS={kernels.TWO_PASS_COLUMNS}",
              f"decode, adapters unmerged: r={args.rank} on {','.join(TARGETS)}; {args.dtype}; greedy generate with "
              f"{args.cache} KV cache; prompt {args.prompt_len}, new tokens {args.new_tokens}; {args.warmup} warm-up + "
              f"{args.repeats} timed runs per method, interleaved, garbage collector off inside them"
              + (" (TINY models)" if args.tiny else "")]
    print("\n".join(header), flush=True)
    cases = []
    for name in args.models:
        start = time.perf_counter()
        models = build_models(name, args, device, dtype)
        print(f"\nbuilt {name} x {len(models)} methods in {time.perf_counter() - start:.1f} s", flush=True)
        for batch in args.batch_list:
            start = time.perf_counter()
            case = run_case(models, name, batch, args, device)
            case["wall_s"] = time.perf_counter() - start
            cases.append(case)
            print_case(case)
            print(f"\n({name}, batch {batch}: {case['wall_s']:.1f} s, of which warm-up {case['warmup_s']:.1f} s)",
                  flush=True)
            if args.json:
                write_json_atomic(args.json, {"header": header, "args": vars(args), "cases": cases})
        del models
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
