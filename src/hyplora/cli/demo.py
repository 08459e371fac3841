"""`hyplora demo`: the README's main job - evaluate, fine-tune with HypLoRA, evaluate again (CPU, minutes)."""

from __future__ import annotations

import argparse

from ..models import DEFAULT_MODEL


def register(subparsers) -> None:
    from ..training.demo import DemoSettings

    defaults = DemoSettings()
    parser = subparsers.add_parser(
        "demo",
        help="evaluate SmolLM2-135M, fine-tune it with HypLoRA, evaluate again (CPU, a few minutes)",
        description=(
            "The main job, on the built-in synthetic arithmetic word problems (no data directory needed): "
            "evaluate the model on a slice of the synthetic test split (the `builtin` eval task), fine-tune "
            "it with HypLoRA (the smollm2-demo recipe), evaluate the adapter on the same slice, and print a "
            "before/after table and "
            "where the adapter, training log, loss plot, evaluation outputs and summary JSON went. Running the "
            "same command again resumes an interrupted demo (finished stages are reused)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output-dir", default=defaults.output_dir, help="where everything is written")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name, .gguf file, directory or hub id")
    parser.add_argument("--max-steps", type=int, default=argparse.SUPPRESS,
                        help="training steps (default: the smollm2-demo recipe's, 16)")
    parser.add_argument("--train-samples", type=int, default=argparse.SUPPRESS,
                        help="training examples, a seeded slice of the built-in train split "
                             "(default: the recipe's, 64)")
    parser.add_argument("--eval-size", type=int, default=defaults.eval_size,
                        help="problems of the builtin task (the synthetic test split, 500 in all) evaluated "
                             "before and after")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                        help="new-token limit per answer when evaluating")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="prompts per generate call")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..training.demo import DemoSettings, run_demo

    start = time.perf_counter()
    settings = DemoSettings(
        output_dir=args.output_dir, model=args.model, max_steps=getattr(args, "max_steps", None),
        train_samples=getattr(args, "train_samples", None),
        eval_size=args.eval_size, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    result = run_demo(settings)
    summary = result.summary
    paths = summary["paths"]
    change = summary["accuracy_change"]
    print()
    print(f"Accuracy on {summary['eval']['data']} (greedy, up to {summary['eval']['max_new_tokens']} new tokens):")
    print()
    print(result.table)
    print()
    training = summary["training"]
    loss = f"{training['final_loss']:.4f}" if training.get("final_loss") is not None else "n/a"
    change_text = f"{100 * change:+.1f} points" if change is not None else "n/a"
    print(f"accuracy change: {change_text}; final training loss {loss} after {training['global_step']} steps")
    print(f"adapter:      {paths['adapter']}")
    print(f"training log: {paths['training_log']}")
    print(f"loss plot:    {paths['loss_plot']}")
    print(f"eval outputs: {paths['eval_base']}, {paths['eval_adapter']}")
    print(f"summary:      {paths['summary']} (table: {paths['table']})")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
