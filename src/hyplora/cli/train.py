"""`hyplora train`: fine-tune a causal LM with HypLoRA, LoRA or DoRA (transformers' Trainer, stock peft).

Settings resolve as: built-in defaults (the paper's) < ``--recipe`` < flags given on the command line.
With ``--resume``, the run's saved config.json replaces the defaults and recipe, and flags still override it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import HypLoraUserError

S = argparse.SUPPRESS  # flags not given stay out of the namespace, so recipe values are not overridden


def _add(group, *flags, **kwargs):
    kwargs.setdefault("default", S)
    group.add_argument(*flags, **kwargs)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a causal LM with HypLoRA, LoRA or DoRA",
        description=(
            "Fine-tune a causal LM with an adapter. Defaults are the paper's settings (r=32; q,k,v,up,down; "
            "lr 3e-4; 3 epochs; batch 4 x 4 accumulation; warmup 100; cutoff 256; alpha 64 LoRA/DoRA, 128 "
            "HypLoRA); a --recipe replaces them and flags override both."
        ),
    )
    g = parser.add_argument_group("run")
    _add(g, "--recipe", help="packaged recipe name (e.g. smollm2-demo, paper-math-hyplora) or a YAML file")
    _add(g, "--model", help="embedded model (smollm2-135m default, gemma3-270m), .gguf file, directory or hub id")
    _add(g, "--data", help="task (builtin, math, commonsense, gsm8k, mawps, boolq, ...), a .json/.jsonl file, "
                           "hf:NAME[:SPLIT], or a comma-separated mix (default builtin)")
    _add(g, "--data-dir", dest="data_dir", help="data directory with train/ and test/ (default $HYPLORA_DATA_DIR "
                                                "or ../shared/data)")
    _add(g, "--output-dir", dest="output_dir", help="where the adapter, config, log and plot go "
                                                    "(default runs/<recipe or method-data>-<UTC time>)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue the run in --output-dir from its last checkpoint (or from CHECKPOINT)")
    _add(g, "--seed", type=int, help="seed for everything (default 42)")
    _add(g, "--list-recipes", action="store_true", help="list packaged recipes and exit")

    g = parser.add_argument_group("data processing")
    _add(g, "--template", choices=["alpaca", "chat"], help="prompt template (default alpaca)")
    _add(g, "--cutoff-len", dest="cutoff_len", type=int, help="max tokens per example, right-truncated (default 256)")
    _add(g, "--max-train-samples", dest="max_train_samples", type=int, help="train on a seeded random slice")
    _add(g, "--builtin-size", dest="builtin_size", type=int, help="size of the built-in synthetic train set (2000)")
    _add(g, "--dedup", action=argparse.BooleanOptionalAction, help="drop training records duplicating a test "
                                                                   "question (default on)")

    g = parser.add_argument_group("adapter")
    _add(g, "--method", choices=["hyplora", "lora", "dora"], help="adapter (default hyplora)")
    _add(g, "--rank", "-r", type=int, help="rank r (default 32)")
    _add(g, "--alpha", "--lora-alpha", dest="lora_alpha", type=float, help="alpha (default 64 LoRA/DoRA, 128 HypLoRA)")
    _add(g, "--dropout", "--lora-dropout", dest="lora_dropout", type=float, help="adapter dropout (default 0.05)")
    _add(g, "--target-modules", dest="target_modules", help="comma-separated module names "
                                                            "(default q_proj,k_proj,v_proj,up_proj,down_proj)")
    _add(g, "--variant", choices=["lorentz", "lorentz-full", "stereographic"], help="HypLoRA branch (lorentz)")
    _add(g, "--curvature", type=float, help="HypLoRA initial K (default 1.0)")
    _add(g, "--learn-curvature", dest="learn_curvature", action=argparse.BooleanOptionalAction,
         help="learn K (default on)")
    _add(g, "--feature-scale", dest="feature_scale", type=float, help="HypLoRA initial input scale "
                                                                      "(default sqrt(in_features))")
    _add(g, "--learn-feature-scale", dest="learn_feature_scale", action=argparse.BooleanOptionalAction,
         help="learn the feature scale (default on)")
    _add(g, "--max-radius", dest="max_radius", type=float, help="HypLoRA geodesic radius clamp (default 12)")
    _add(g, "--compat", choices=["reference"], help="reproduce the paper's released code exactly")

    g = parser.add_argument_group("optimisation")
    _add(g, "--lr", "--learning-rate", dest="learning_rate", type=float, help="learning rate (default 3e-4)")
    _add(g, "--epochs", "--num-epochs", dest="num_epochs", type=float, help="epochs (default 3)")
    _add(g, "--batch-size", dest="batch_size", type=int, help="per-device micro batch (default 4)")
    _add(g, "--grad-accum", "--gradient-accumulation-steps", dest="gradient_accumulation_steps", type=int,
         help="gradient accumulation steps (default 4; effective batch = batch size x this x devices)")
    _add(g, "--warmup-steps", "--warmup", dest="warmup_steps", type=int, help="warmup steps (default 100)")
    _add(g, "--scheduler", "--lr-scheduler", dest="lr_scheduler", help="learning-rate schedule (default linear)")
    _add(g, "--weight-decay", dest="weight_decay", type=float, help="AdamW weight decay (default 0)")
    _add(g, "--max-grad-norm", dest="max_grad_norm", type=float, help="gradient clipping (default 1.0)")
    _add(g, "--max-steps", dest="max_steps", type=int, help="stop after this many optimiser steps (overrides epochs)")
    _add(g, "--precision", choices=["fp32", "bf16", "fp16"], help="fp32 (default) or mixed bf16/fp16")
    _add(g, "--bf16", dest="precision", action="store_const", const="bf16", help="same as --precision bf16")
    _add(g, "--fp32", dest="precision", action="store_const", const="fp32", help="same as --precision fp32")
    _add(g, "--gradient-checkpointing", dest="gradient_checkpointing", action=argparse.BooleanOptionalAction,
         help="recompute activations to save memory (default off)")
    _add(g, "--torch-compile", dest="torch_compile", action=argparse.BooleanOptionalAction,
         help="compile the model with torch.compile (inductor; the first steps compile, later ones are faster "
              "on a GPU; default off)")

    g = parser.add_argument_group("bookkeeping")
    _add(g, "--logging-steps", dest="logging_steps", type=int, help="log every N steps (default 1)")
    _add(g, "--save-steps", dest="save_steps", type=int, help="checkpoint every N steps (default 200)")
    _add(g, "--save-total-limit", dest="save_total_limit", type=int, help="checkpoints kept (default 2)")
    _add(g, "--num-workers", dest="dataloader_num_workers", type=int, help="data loader workers (default 0)")
    _add(g, "--trust-remote-code", dest="trust_remote_code", action="store_true",
         help="allow a hub model's own code to run (off by default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _overrides(args) -> dict:
    skip = {"func", "command", "resume", "list_recipes", "no_progress"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _release_process_group() -> None:
    """The command owns its process: shut the process group down before exit (NCCL warns otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run(args) -> int:
    from ..training.config import list_recipes, resolve_config
    from ..training.trainer import CONFIG_NAME, train

    if getattr(args, "list_recipes", False):
        from ..training.config import load_recipe, recipes_dir

        import yaml

        for name in list_recipes():
            text = (recipes_dir() / f"{name}.yaml").read_text(encoding="utf-8")
            description = (yaml.safe_load(text) or {}).get("description", "")
            print(f"{name:28s} {description}")
            load_recipe(name)
        return 0

    overrides = _overrides(args)
    base = None
    if args.resume:
        output_dir = overrides.get("output_dir")
        if not output_dir:
            raise HypLoraUserError("--resume needs --output-dir (the directory of the run to continue)")
        saved = Path(output_dir) / CONFIG_NAME
        if saved.is_file():
            try:
                base = json.loads(saved.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise HypLoraUserError(f"{saved}: unreadable saved config: {exc}") from exc
            for key in ("versions", "effective_batch_size"):
                base.pop(key, None)
            overrides.pop("recipe", None)  # the saved config already includes the recipe's values
    config = resolve_config(overrides, base=base)
    from ..training.trainer import _is_main_process

    main = _is_main_process()  # under accelerate launch / torchrun, only rank 0 reports
    if main:
        print(f"hyplora train: {config.method} on {config.data!r} with {config.model} -> {config.output_dir}")
    result = train(config, resume=args.resume, disable_tqdm=True if args.no_progress else None,
                   log=print if main else (lambda *_: None))
    _release_process_group()
    if not main:
        return 0
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    print(f"finished {result.global_step} steps in {result.runtime_s:.0f} s, final loss {loss}")
    print(f"adapter: {result.adapter_dir}")
    print(f"log:     {result.log_path}")
    print(f"plot:    {result.plot_path}")
    print(f"config:  {result.output_dir / CONFIG_NAME}")
    return 0
