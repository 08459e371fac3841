"""`hyplora eval`: evaluate a model (optionally with an adapter) on the reasoning benchmarks."""

from __future__ import annotations

import argparse

from ..errors import HypLoraUserError
from ..models import DEFAULT_MODEL


def register(subparsers) -> None:
    from ..evaluate.scoring import PROTOCOLS

    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model or adapter on arithmetic / commonsense benchmarks",
        description=(
            "Generate answers for benchmark prompts in left-padded, length-sorted batches (greedy by default), "
            "score them, and write <task>.jsonl (one line per example, resumable), summary.json and results.md "
            "to --output-dir. Running the same command again resumes an interrupted run."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", help="model name, .gguf file, directory or hub id (default: the model the adapter "
                                        f"was trained on, per its `hyplora train` run; else {DEFAULT_MODEL})")
    parser.add_argument("--adapter", help="adapter directory (HypLoRA, LoRA or DoRA) to attach to the model")
    parser.add_argument(
        "--tasks", required=True,
        help="comma-separated tasks and groups: math (mawps,svamp,gsm8k,aqua), math-all, commonsense, or names "
             "such as gsm8k,svamp,boolq; builtin = the seeded synthetic test split (needs no data directory)",
    )
    parser.add_argument("--output-dir", required=True, help="directory for the JSON lines, summary and table")
    parser.add_argument("--data-dir", help="data directory holding test/ (default: $HYPLORA_DATA_DIR or ../shared/data)")
    parser.add_argument(
        "--task-file", action="append", default=[], metavar="TASK=PATH",
        help="read TASK's records from PATH (LLM-Adapters JSON or JSON lines) instead of the data directory; "
             "repeatable",
    )
    parser.add_argument("--protocol", default="hyplora", choices=PROTOCOLS,
                        help="answer extraction: ours, or the paper harness's rules (reference); the summary "
                             "reports the accuracy under every protocol as well")
    parser.add_argument("--max-new-tokens", type=int,
                        help="new-token limit for every task (default: 256 arithmetic, 32 commonsense)")
    parser.add_argument("--num-beams", type=int, default=1, help="1: greedy decoding; more: beam search")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="prompts per generate call (halved automatically on CUDA out-of-memory)")
    parser.add_argument("--template", choices=["alpaca", "chat"],
                        help="prompt template (default: the one the adapter was trained with, per its "
                             "`hyplora train` run; else alpaca)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "float64"],
                        help="model weights dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N examples of each task")
    parser.add_argument("--seed", type=int,
                        help="seed recorded in the summary (the adapter's training seed; default: a 'seed' found "
                             "in a JSON file of the adapter directory). Decoding is deterministic.")
    parser.add_argument("--label", help="configuration name for `hyplora compare` (runs sharing it are averaged)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a hub model's own Python code to run (off by default)")
    parser.set_defaults(func=run)


def parse_task_files(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        task, sep, path = value.partition("=")
        if not sep or not task.strip() or not path.strip():
            raise HypLoraUserError(f"--task-file wants TASK=PATH, got {value!r}")
        out[task.strip().lower()] = path.strip()
    return out


def run(args) -> int:
    import sys

    from ..data import resolve_tasks
    from ..evaluate.runner import EvalSettings, read_adapter_info, read_training_config, run_evaluation

    tasks = resolve_tasks(args.tasks)
    training = None
    if args.adapter:
        read_adapter_info(args.adapter)  # a clear error for a missing or broken adapter directory
        training = read_training_config(args.adapter)
    model, template = args.model, args.template
    if training:
        for option, given, trained in (("--model", model, training.get("model")),
                                       ("--template", template, training.get("template"))):
            if given and trained and given != trained:
                print(f"hyplora eval: warning: {option} {given!r} differs from the adapter's training run "
                      f"({trained!r})", file=sys.stderr)
        model = model or training.get("model")
        template = template or training.get("template")
    settings = EvalSettings(
        model=model or DEFAULT_MODEL,
        adapter=args.adapter,
        tasks=tasks,
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        task_files=parse_task_files(args.task_file),
        protocol=args.protocol,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        batch_size=args.batch_size,
        template=template or "alpaca",
        dtype=args.dtype,
        device=args.device,
        limit=args.limit,
        seed=args.seed,
        label=args.label,
        progress=not args.no_progress,
        trust_remote_code=args.trust_remote_code,
    )
    summary = run_evaluation(settings)
    print(f"\nwrote {args.output_dir}/summary.json, results.md and one .jsonl per task")
    return 0 if summary["complete"] else 1
