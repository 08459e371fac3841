"""Evaluation speed: GSM8K generation with SmolLM2-135M and a freshly initialised adapter, batched vs batch 1.

Target (issue 4): the GSM8K test set (1319 prompts, up to 256 new tokens) in at most 60 s on one H100 with
our batched generation (left padding + attention mask, prompts sorted by length, greedy, stop at EOS).
The batch-1 reference (plain transformers generate, one prompt at a time, greedy) is measured in the same
run on the first --reference-prompts prompts, and the whole set's batch-1 time is projected from its
tokens/s. For scale, measured earlier on an H100 with transformers' generate on this model: batch 1 gave
37 generated tokens/s, batch 64 gave 878/s.

Examples:
    python benchmarks/eval_speed.py --device cuda                      # the full target run
    python benchmarks/eval_speed.py --device cpu --limit 8 --max-new-tokens 32 --reference-prompts 2

Measured (2026-11-28, one NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, transformers 5.17.0, peft 0.21.2, bf16,
with --random-weights, i.e. SmolLM2's architecture with random weights, so every sequence runs the full 256
tokens: a worst case; the real GGUF model was not available there): batch 1319 took 52.5 s for 337,664
generated tokens (6,432 tokens/s, target met); batch 1 on 2 prompts gave 6.1 tokens/s (about 190 ms per
decoding step with the unmerged HypLoRA adapter, against the ~27 ms per step that 37 tokens/s implies
for the bare model). Rerun on the real model without --random-weights for the paper numbers.

"Generated tokens" are the new tokens of every sequence up to and including its EOS (padding after an
early stop is not counted). Times include tokenization and decoding, exclude model loading and a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", default="hyplora", choices=["hyplora", "lora", "none"],
                        help="freshly initialised adapter to attach (q,k,v,up,down projections)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--limit", type=int, default=None, help="first N GSM8K prompts (default: all 1319)")
    parser.add_argument("--batch-size", default="1319",
                        help="our batched setting (default: all of GSM8K in one batch; for a 135M model the cost "
                             "of a decoding step hardly grows with the batch, so fewer, larger batches win); a "
                             "comma-separated list measures each, the first is checked against the target")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--reference-prompts", type=int, default=16,
                        help="prompts generated one at a time for the batch-1 reference (0: skip)")
    parser.add_argument("--data-dir", default=None, help="data directory holding test/gsm8k.json")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (on a busy CPU, 1 can be much faster than the default)")
    parser.add_argument("--random-weights", action="store_true",
                        help="the model's architecture with random weights (only its config and tokenizer are "
                             "needed): a worst case for time, since no sequence stops at EOS early")
    return parser.parse_args(argv)


def build_model(args, device, dtype):
    import peft

    from hyplora.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    if args.random_weights:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from hyplora.models import resolve_model

        source = resolve_model(args.model)
        config = AutoConfig.from_pretrained(source.name_or_path, **source.from_pretrained_kwargs())
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = load_model(args.model, dtype=dtype)
    targets = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    if args.adapter == "hyplora":
        from hyplora.adapter import HypLoraConfig

        config = HypLoraConfig(r=args.rank, lora_alpha=2 * args.rank, task_type="CAUSAL_LM", target_modules=targets)
        model = peft.get_peft_model(model, config)
    elif args.adapter == "lora":
        config = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, task_type="CAUSAL_LM", target_modules=targets)
        model = peft.get_peft_model(model, config)
    model.to(device=device, dtype=dtype)
    model.eval()
    return model, tokenizer


def timed_generation(model, tokenizer, prompts, *, batch_size, max_new_tokens, device):
    import torch

    from hyplora.evaluate.generation import iter_generate

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    results = [item for batch in iter_generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                               batch_size=batch_size, progress=True) for item in batch]
    sync()
    seconds = time.perf_counter() - start
    results.sort(key=lambda item: item.index)
    return results, seconds


def device_description(device) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from hyplora.evaluate.runner import cpu_name

    return cpu_name() + f", torch threads {torch.get_num_threads()}"


def main(argv=None) -> int:
    args = parse_args(argv)
    import peft
    import torch
    import transformers

    from hyplora.data import load_benchmark
    from hyplora.data.prompts import build_prompt
    from hyplora.evaluate import score
    from hyplora.evaluate.runner import resolve_device, resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    records = load_benchmark("gsm8k", args.data_dir)
    if args.limit:
        records = records[: args.limit]
    prompts = [build_prompt(record) for record in records]

    load_start = time.perf_counter()
    model, tokenizer = build_model(args, device, dtype)
    load_seconds = time.perf_counter() - load_start
    print(f"loaded {args.model} + {args.adapter} adapter on {device} ({dtype}) in {load_seconds:.1f} s", flush=True)

    # warm-up (CUDA context, kernels, allocator) on a few prompts, both shapes
    timed_generation(model, tokenizer, prompts[:2], batch_size=2, max_new_tokens=4, device=device)
    timed_generation(model, tokenizer, prompts[:1], batch_size=1, max_new_tokens=4, device=device)

    batch_sizes = [int(b) for b in str(args.batch_size).split(",") if b.strip()]
    rows, measured = [], []
    for batch_size in batch_sizes:
        results, seconds = timed_generation(model, tokenizer, prompts, batch_size=batch_size,
                                            max_new_tokens=args.max_new_tokens, device=device)
        tokens = sum(item.num_tokens for item in results)
        measured.append((results, seconds, tokens))
        rows.append({"setting": f"batched (ours), batch {batch_size}", "prompts": len(prompts), "tokens": tokens,
                     "seconds": seconds, "tokens_per_s": tokens / seconds})
    ours, ours_s, ours_tokens = measured[0]
    correct = sum(score("gsm8k", item.text, records[item.index].answer).correct for item in ours)
    agreement = None
    if args.reference_prompts > 0:
        subset = prompts[: args.reference_prompts]
        ref, ref_s = timed_generation(model, tokenizer, subset, batch_size=1,
                                      max_new_tokens=args.max_new_tokens, device=device)
        ref_tokens = sum(item.num_tokens for item in ref)
        rows.append({"setting": "batch 1 (reference)", "prompts": len(subset), "tokens": ref_tokens,
                     "seconds": ref_s, "tokens_per_s": ref_tokens / ref_s})
        agreement = sum(a.text == b.text for a, b in zip(ref, ours[: len(subset)]))
        rows.append({"setting": "batch 1, projected to all prompts", "prompts": len(prompts), "tokens": ours_tokens,
                     "seconds": ours_tokens / (ref_tokens / ref_s), "tokens_per_s": ref_tokens / ref_s})

    print()
    weights = " (RANDOM weights: no early EOS, worst case)" if args.random_weights else ""
    print(f"GSM8K eval speed: {args.model}{weights} + fresh {args.adapter} adapter (r={args.rank}), greedy, "
          f"up to {args.max_new_tokens} new tokens, {dtype}".replace("torch.", ""))
    print(f"device: {device_description(device)}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, peft {peft.__version__}")
    print()
    print("| setting | prompts | generated tokens | seconds | tokens/s | speed-up vs batch 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    ref_rate = next((row["tokens_per_s"] for row in rows if row["setting"] == "batch 1 (reference)"), None)
    for row in rows:
        speedup = f"{row['tokens_per_s'] / ref_rate:.1f}x" if ref_rate else "-"
        print(f"| {row['setting']} | {row['prompts']} | {row['tokens']} | {row['seconds']:.1f} | "
              f"{row['tokens_per_s']:.0f} | {speedup} |")
    print()
    if not args.random_weights:
        print(f"accuracy of the batched run (fresh adapter = base model's answers): {correct}/{len(prompts)}")
    if agreement is not None:
        print(f"batched and batch-1 outputs identical for {agreement}/{args.reference_prompts} prompts "
              "(reduced precision can flip a near-tie; float32 on CPU is expected to match)")
    full = len(prompts) == 1319 and args.max_new_tokens == 256
    verdict = ("PASS" if ours_s <= 60 else "FAIL") if full else "n/a (not the full 1319-prompt, 256-token setting)"
    print(f"target <= 60 s for all 1319 prompts at batch {batch_sizes[0]}: {verdict} ({ours_s:.1f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"rows": rows, "device": device_description(device), "dtype": str(dtype),
                       "correct": correct, "identical_outputs": agreement, "args": vars(args),
                       "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                    "peft": peft.__version__, "python": platform.python_version()}},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    sys.exit(main())
