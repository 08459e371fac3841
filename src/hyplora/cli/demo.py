"""`hyplora demo`: attach HypLoRA to a model, run one forward/backward step, report what happened."""

from __future__ import annotations

import argparse
import time

from ..models import DEFAULT_MODEL


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="attach HypLoRA to a model and run one training step (a smoke test of the install)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name, .gguf file, directory or hub id")
    parser.add_argument("--variant", default="lorentz", choices=["lorentz", "lorentz-full", "stereographic"])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--text", default="Natalia sold 48 clips in April and half as many in May. The answer is 72.")
    parser.set_defaults(func=run)


def run(args) -> int:
    import peft
    import torch

    from ..adapter import HypLoraConfig, HypLoraLinear
    from ..models import load_model, load_tokenizer

    start = time.perf_counter()
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    config = HypLoraConfig(
        r=args.rank, lora_alpha=args.alpha, variant=args.variant, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    )
    model = peft.get_peft_model(model, config)
    layers = [m for m in model.modules() if isinstance(m, HypLoraLinear)]
    trainable, total = model.get_nb_trainable_parameters()
    print(f"model {args.model}: {total / 1e6:.1f}M parameters, {len(layers)} HypLoRA layers "
          f"({args.variant}, r={args.rank}), {trainable:,} trainable")

    batch = tokenizer(args.text, return_tensors="pt")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(2):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    curvatures = torch.cat([layer.curvature("default").detach() for layer in layers])
    print(f"loss before/after one AdamW step: {losses[0]:.4f} -> {losses[1]:.4f} "
          f"on {batch['input_ids'].shape[1]} tokens")
    print(f"curvature K across layers: min {curvatures.min():.6f}, max {curvatures.max():.6f} (started at 1.0)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
