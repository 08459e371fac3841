"""Host-side costs of transformers' compiled decoding step, per method: graphs, graph breaks and guard checks.

`decode.py` found SmolLM2's compiled decoding steps bound by host time, with HypLoRA adding about 1 ms per step
over its 150 adapted layers (benchmarks/RESULTS.md). This script measures two candidates for that time without
timing a whole `generate` call:

- how many graphs dynamo compiled for the decoding step, and how many graph breaks it hit (each break is a
  separate compiled call, with its own guards and, on a GPU, its own CUDA graph replay);
- how long the compiled step's guard check takes: the check dynamo runs before every call, timed alone by
  calling the cache entry's guard manager on the step's arguments (the minimum of --samples timings, every
  model compiled first and kept, then timed in turn in each round, so that a slow spell of the machine falls on
  all of them), and how
  many nodes (attribute or item accesses, and leaf guards) its guard tree has, a count that does not vary from
  run to run.

It runs `generate` with a static cache, once to compile and once more, as decode.py does (on a CPU with
transformers' ``_compile_all_devices``, in torch.compile's default mode, since CUDA graphs need a GPU), and
reports per method and per adapted layer.

    python benchmarks/compiled_step_host.py                    # SmolLM2's layer structure, small widths
    python benchmarks/compiled_step_host.py --full-size        # SmolLM2's real widths (the guards do not change)
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import torch
from _common import (
    METHOD_LABELS,
    MODEL_SHAPES,
    adapter_config,
    compile_models_independently,
    device_name,
    last_compiled_step_call,
    llama_model,
    versions_line,
    write_json_atomic,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="base,lora,hyplora-lorentz,hyplora-stereographic")
    parser.add_argument("--layers", default="6,12", help="comma-separated layer counts (the slope gives per-layer costs)")
    parser.add_argument("--full-size", action="store_true", help="SmolLM2's real widths instead of small ones")
    parser.add_argument("--checks", type=int, default=500, help="guard checks timed per sample")
    parser.add_argument("--samples", type=int, default=20,
                        help="timed rounds (every model once per round); the minimum is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def build(method: str, layers: int, args):
    import peft

    shape = dict(MODEL_SHAPES["smollm2"], num_hidden_layers=layers)
    if not args.full_size:
        shape.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                     vocab_size=1000)
    model = llama_model(shape, args.device, torch.float32)
    if method != "base":
        model = peft.get_peft_model(model, adapter_config(method, 8)).base_model.model
    return model.eval()


def prepare(method: str, layers: int, args) -> dict:
    """Compile one model's decoding step and record the step's arguments; the model stays alive (with its cache
    entry) so that every model's guard check can be timed in turn, interleaved."""
    from torch._dynamo.utils import counters
    from transformers import StaticCache
    from transformers.generation.configuration_utils import CompileConfig

    graphs_before = int(counters["stats"]["unique_graphs"])
    breaks_before = int(sum(counters["graph_break"].values()))
    model = build(method, layers, args)
    compile_config = CompileConfig(mode="default" if args.device == "cpu" else "reduce-overhead")
    compile_config._compile_all_devices = True  # a CPU too, for this diagnostic
    ids = torch.randint(1, model.config.vocab_size, (1, 8), device=args.device)
    cache = StaticCache(config=model.config, max_cache_len=24)

    def run_generate(new_tokens: int = 3):
        cache.reset()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, past_key_values=cache,
                       compile_config=compile_config, pad_token_id=0)

    for _ in range(2):
        run_generate(4)
    graphs = int(counters["stats"]["unique_graphs"]) - graphs_before
    breaks = int(sum(counters["graph_break"].values())) - breaks_before

    # The guarded frame is the model's forward (dynamo steps over nn.Module's call wrappers). Its locals are the
    # arguments generate passes to the compiled call: record them on one more call, then replay them.
    code = type(model).forward.__code__
    entries = torch._C._dynamo.eval_frame._debug_get_cache_entry_list(code)
    if not entries:
        raise RuntimeError(f"{method}: no compiled entry for {type(model).__name__}.forward")
    call_args, call_kwargs = last_compiled_step_call(model, run_generate)
    frame_locals = _frame_locals(type(model).forward, model, call_args, call_kwargs)
    # the models of one run share the code object: this model's entry is the one whose guards its call passes
    with torch.no_grad():
        passing = [entry.guard_manager for entry in entries if entry.guard_manager.check(frame_locals)]
        guard_manager = passing[0] if passing else entries[0].guard_manager  # newest first
        if not passing:  # the timing would then measure a check that stops at its first failure
            reason = guard_manager.check_verbose(frame_locals).verbose_code_parts[:1]
            print(f"warning: {method}, {layers} layers: the recorded call fails its guards ({reason})")
    adapted = sum(1 for m in model.modules() if hasattr(m, "lora_A")) if method != "base" else 0
    return {"row": {"method": method, "layers": layers, "adapted_layers": adapted, "graphs": graphs,
                    "graph_breaks": breaks, "guards_pass": bool(passing),
                    "guard_nodes": guard_nodes(guard_manager.root)},
            "guard_manager": guard_manager, "frame_locals": frame_locals, "keep": (model, cache)}


def time_guard_checks(prepared: list[dict], args) -> None:
    """Time every model's guard check, the models taking turns in each of --samples rounds (so that a slow spell
    of the machine falls on all of them); the minimum estimates the check, a deterministic piece of work."""
    samples = [[] for _ in prepared]
    with torch.no_grad():
        for _ in range(args.samples):
            for entry, times in zip(prepared, samples):
                check, frame_locals = entry["guard_manager"].check, entry["frame_locals"]
                start = time.perf_counter()
                for _ in range(args.checks):
                    check(frame_locals)
                times.append((time.perf_counter() - start) / args.checks * 1e6)
    for entry, times in zip(prepared, samples):
        entry["row"].update(guard_check_us=min(times), guard_check_us_median=statistics.median(times))


def guard_nodes(manager) -> int:
    """Nodes of a guard tree: managers (each one an attribute or item access on the way) and their leaf guards;
    a dict's managers hold the key and value managers of the entries guarded, besides their children."""
    children = list(manager.get_child_managers())
    if hasattr(manager, "get_key_value_managers"):
        for key_manager, value_manager in manager.get_key_value_managers().values():
            children += [m for m in (key_manager, value_manager) if m is not None]
    return 1 + len(manager.get_leaf_guards()) + sum(guard_nodes(child) for child in children)


def _frame_locals(function, model, call_args, call_kwargs) -> dict:
    """The local variables of ``function(model, *call_args, **call_kwargs)``'s frame on entry: its arguments and
    its closure's variables (transformers wraps ``forward`` in decorators)."""
    bound = inspect.signature(function, follow_wrapped=False).bind(model, *call_args, **call_kwargs)
    bound.apply_defaults()
    cells = zip(function.__code__.co_freevars, function.__closure__ or ())
    return {**dict(bound.arguments), **{name: cell.cell_contents for name, cell in cells}}


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_LABELS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(METHOD_LABELS)}")
    layer_counts = sorted({int(n) for n in args.layers.split(",")})
    compile_models_independently(8 * len(methods) * len(layer_counts))
    header = [f"device: {device_name(torch.device(args.device))}", versions_line(),
              f"SmolLM2 layer structure ({'real' if args.full_size else 'small'} widths), r=8 on q, k, v, up, down"]
    print("\n".join(header))
    prepared = [prepare(method, layers, args) for method in methods for layers in layer_counts]
    time_guard_checks(prepared, args)
    rows = [entry["row"] for entry in prepared]
    print("\n| method | layers | adapted layers | graphs | graph breaks | guards pass | guard nodes | guard check us "
          "(min) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {METHOD_LABELS[r['method']]} | {r['layers']} | {r['adapted_layers']} | {r['graphs']} | "
              f"{r['graph_breaks']} | {r['guards_pass']} | {r['guard_nodes']} | {r['guard_check_us']:.1f} |")
    if len(layer_counts) > 1:
        low, high = layer_counts[0], layer_counts[-1]
        print(f"\nguard check per transformer layer (slope between {low} and {high} layers):")
        for method in methods:
            by_layers = {r["layers"]: r for r in rows if r["method"] == method}
            slope = (by_layers[high]["guard_check_us"] - by_layers[low]["guard_check_us"]) / (high - low)
            nodes = (by_layers[high]["guard_nodes"] - by_layers[low]["guard_nodes"]) / (high - low)
            print(f"  {METHOD_LABELS[method]}: {slope:.1f} us and {nodes:.0f} guard nodes per layer")
    if args.json:
        write_json_atomic(args.json, {"header": header, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
