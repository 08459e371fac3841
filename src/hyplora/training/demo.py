"""The README's main job (`hyplora demo`): evaluate a model, fine-tune it with HypLoRA, evaluate it again.

Everything runs on the built-in synthetic arithmetic word problems (`hyplora.data.synthetic`), so no data
directory and no network are needed. The stages use the library's own pipeline: `run_evaluation` on the
``builtin`` task (the seeded synthetic test split, numeric-answer scoring) for both evaluations, limited to
its first ``eval_size`` problems, and `train` (the ``smollm2-demo`` recipe) for the fine-tuning.

Output directory layout::

    demo.json                  the demo's settings; a re-run must use the same ones (it then resumes)
    eval-base/                 `hyplora eval` output for the model without adapter (builtin.jsonl, ...)
    train/                     `hyplora train` output: adapter/, train_log.jsonl, loss_curve.png, summary.json, ...
    eval-adapter/              `hyplora eval` output for the model with the trained adapter
    summary.json               before/after accuracy and unparseable rate, the paths above, and the seconds
                               each stage took (model loading included) in the invocation that ran it
    results.md                 the before/after table

Every stage resumes: a finished stage is reused, an interrupted training continues from its last checkpoint,
and an interrupted evaluation generates only the missing examples.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import HypLoraUserError
from ..models import DEFAULT_MODEL
from .config import write_json_atomic

DEMO_RECIPE = "smollm2-demo"
EVAL_TASK = "builtin"  # the synthetic test split as an evaluation task (numeric-answer scoring)
SETTINGS_NAME = "demo.json"
SUMMARY_NAME = "summary.json"
TABLE_NAME = "results.md"
BASE_DIR, TRAIN_DIR, ADAPTER_EVAL_DIR = "eval-base", "train", "eval-adapter"


@dataclass
class DemoSettings:
    output_dir: str = "runs/demo"
    model: str = DEFAULT_MODEL
    recipe: str = DEMO_RECIPE
    max_steps: int | None = None  # None: the recipe's
    train_samples: int | None = None  # None: the recipe's max_train_samples
    eval_size: int = 32  # problems of the synthetic test split evaluated before and after
    max_new_tokens: int = 96  # about 1.5x the longest reference solution (64 SmolLM2 tokens in the first 32)
    batch_size: int = 8  # prompts per generate call (a progress-bar step)
    progress: bool = True

    def identity(self) -> dict:
        """The settings that decide the results; a resumed demo must have the same ones."""
        out = asdict(self)
        for key in ("output_dir", "batch_size", "progress"):
            out.pop(key)
        return out

    def validate(self) -> None:
        from ..data.synthetic import BUILTIN_TEST_SIZE

        for name, value in (("--eval-size", self.eval_size), ("--max-new-tokens", self.max_new_tokens),
                            ("--batch-size", self.batch_size), ("--max-steps", self.max_steps),
                            ("--train-samples", self.train_samples)):
            if value is not None and value < 1:
                raise HypLoraUserError(f"{name} must be at least 1 (got {value})")
        if self.eval_size > BUILTIN_TEST_SIZE:
            raise HypLoraUserError(f"--eval-size must be at most {BUILTIN_TEST_SIZE}, the size of the builtin "
                                   f"test split (got {self.eval_size})")


@dataclass
class DemoResult:
    output_dir: Path
    summary: dict
    table: str


def _check_output_dir(output_dir: Path, settings: DemoSettings) -> bool:
    """True when resuming a demo with the same settings; raise for any other existing content."""
    if output_dir.exists() and not output_dir.is_dir():
        raise HypLoraUserError(f"--output-dir {output_dir} exists and is not a directory")
    saved_path = output_dir / SETTINGS_NAME
    if not saved_path.is_file():
        if output_dir.is_dir() and any(output_dir.iterdir()):
            raise HypLoraUserError(
                f"{output_dir} is not empty and holds no hyplora demo ({SETTINGS_NAME} missing); "
                "choose another --output-dir"
            )
        return False
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HypLoraUserError(f"{saved_path} is unreadable ({exc}); choose another --output-dir") from exc
    saved = saved.get("identity", {}) if isinstance(saved, dict) else {}
    now = settings.identity()
    differences = [f"{key}: {saved.get(key)!r} before, {value!r} now" for key, value in now.items()
                   if saved.get(key) != value]
    if differences:
        raise HypLoraUserError(
            f"{output_dir} holds a demo run with other settings ({'; '.join(differences)}); run the same command "
            "to resume it, or choose another --output-dir"
        )
    return True


def _previous_timings(path: Path) -> dict[str, float]:
    """Stage timings of an earlier invocation (kept for the stages a resumed demo reuses)."""
    try:
        timings = json.loads(path.read_text(encoding="utf-8")).get("timings_s", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(timings, dict):
        return {}
    return {k: v for k, v in timings.items() if k != "total" and isinstance(v, (int, float))}


def _task_numbers(summary: dict) -> dict:
    stats = summary["tasks"][EVAL_TASK]
    return {key: stats[key] for key in ("n", "correct", "accuracy", "unparseable", "unparseable_rate")}


def before_after_table(before: dict, after: dict, *, label_before: str, label_after: str) -> str:
    """A markdown table of accuracy and unparseable rate, before and after fine-tuning."""

    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    lines = [
        "| model | n | accuracy (%) | correct | unparseable (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, row in ((label_before, before), (label_after, after)):
        lines.append(f"| {label} | {row['n']} | {pct(row['accuracy'])} | {row['correct']} | "
                     f"{pct(row['unparseable_rate'])} |")
    return "\n".join(lines)


def run_demo(settings: DemoSettings, *, log: Callable[[str], None] = print) -> DemoResult:
    """Evaluate, fine-tune with HypLoRA, evaluate again; write the outputs (module docstring) and return them."""
    from ..data.synthetic import BUILTIN_TEST_SEED
    from ..evaluate.runner import EvalSettings, atomic_write_text, run_evaluation
    from .config import resolve_config
    from .trainer import SUMMARY_NAME as TRAIN_SUMMARY
    from .trainer import last_checkpoint, train

    settings.validate()
    output_dir = Path(settings.output_dir).expanduser()
    resuming = _check_output_dir(output_dir, settings)
    overrides: dict = {"recipe": settings.recipe, "model": settings.model,
                       "output_dir": str(output_dir / TRAIN_DIR)}
    if settings.max_steps is not None:
        overrides["max_steps"] = settings.max_steps
    if settings.train_samples is not None:
        overrides["max_train_samples"] = settings.train_samples
    train_config = resolve_config(overrides)  # recipe and option problems surface before anything is written
    if train_config.method != "hyplora":
        raise HypLoraUserError(f"recipe {settings.recipe!r} trains {train_config.method}, not hyplora")

    output_dir.mkdir(parents=True, exist_ok=True)
    if resuming:
        log(f"resuming the demo in {output_dir} (finished stages are reused)")
    else:
        write_json_atomic(output_dir / SETTINGS_NAME, {"identity": settings.identity()})
    timings = _previous_timings(output_dir / SUMMARY_NAME) if resuming else {}

    def evaluate(name: str, adapter: str | None, label: str) -> dict:
        eval_settings = EvalSettings(
            model=settings.model, adapter=adapter, tasks=[EVAL_TASK], output_dir=str(output_dir / name),
            limit=settings.eval_size, max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size, template=train_config.template, label=label,
            progress=settings.progress,
        )
        start = time.perf_counter()
        summary = run_evaluation(eval_settings, log=lambda *_: None)
        if summary.get("timing") or name not in timings:  # something was generated: this run's time counts
            timings[name] = round(time.perf_counter() - start, 2)
        return summary

    slice_note = f"the first {settings.eval_size} problems of the built-in synthetic test split (task {EVAL_TASK})"
    log(f"[1/3] evaluating {settings.model} without adapter on {slice_note} "
        f"(greedy, up to {settings.max_new_tokens} new tokens)")
    base = evaluate(BASE_DIR, None, f"{settings.model} (base)")

    train_dir = output_dir / TRAIN_DIR
    train_summary_path = train_dir / TRAIN_SUMMARY
    start = time.perf_counter()
    if train_summary_path.is_file() and (train_dir / "adapter" / "adapter_config.json").is_file():
        log(f"[2/3] training already finished in {train_dir}; reusing its adapter")
        timings.setdefault("train", 0.0)
    else:
        resume = last_checkpoint(train_dir) is not None
        log(f"[2/3] fine-tuning with HypLoRA ({settings.recipe} recipe: {train_config.max_steps} steps of "
            f"{train_config.effective_batch_size} examples, r={train_config.rank})"
            + (" - resuming from the last checkpoint" if resume else ""))
        train(train_config, resume=resume, log=log, disable_tqdm=not settings.progress)
        timings["train"] = round(time.perf_counter() - start, 2)
    train_summary = json.loads(train_summary_path.read_text(encoding="utf-8"))

    log(f"[3/3] evaluating {settings.model} with the trained adapter on the same problems")
    adapter_dir = train_dir / "adapter"
    after = evaluate(ADAPTER_EVAL_DIR, str(adapter_dir), f"{settings.model} + HypLoRA")

    before_numbers, after_numbers = _task_numbers(base), _task_numbers(after)
    label_before = f"{settings.model}"
    label_after = f"{settings.model} + HypLoRA ({train_summary['global_step']} steps)"
    table = before_after_table(before_numbers, after_numbers, label_before=label_before, label_after=label_after)
    paths = {
        "adapter": str(adapter_dir),
        "training_log": str(train_dir / "train_log.jsonl"),
        "loss_plot": train_summary.get("plot"),
        "training_summary": str(train_summary_path),
        "eval_base": str(output_dir / BASE_DIR),
        "eval_adapter": str(output_dir / ADAPTER_EVAL_DIR),
        "summary": str(output_dir / SUMMARY_NAME),
        "table": str(output_dir / TABLE_NAME),
    }
    summary = {
        "model": settings.model,
        "recipe": settings.recipe,
        "eval": {
            "data": slice_note, "task": EVAL_TASK, "synthetic_seed": BUILTIN_TEST_SEED, "n": settings.eval_size,
            "protocol": base["protocol"], "template": base["template"],
            "decoding": base["generation"]["decoding"], "max_new_tokens": settings.max_new_tokens,
            "device": after.get("device"),
        },
        "before": before_numbers,
        "after": after_numbers,
        "accuracy_change": (after_numbers["accuracy"] - before_numbers["accuracy"]
                            if None not in (after_numbers["accuracy"], before_numbers["accuracy"]) else None),
        "training": {key: train_summary.get(key) for key in ("global_step", "final_loss", "runtime_s")},
        "timings_s": {**timings, "total": round(sum(v for k, v in timings.items() if k != "total"), 2)},
        "resumed": resuming,
        "paths": paths,
        "settings": settings.identity(),
    }
    write_json_atomic(output_dir / SUMMARY_NAME, summary)
    heading = (f"Accuracy on {slice_note} (greedy, up to {settings.max_new_tokens} new tokens, "
               f"numeric answer scoring, protocol {base['protocol']}):")
    atomic_write_text(output_dir / TABLE_NAME, heading + "\n\n" + table + "\n")
    return DemoResult(output_dir=output_dir, summary=summary, table=table)
