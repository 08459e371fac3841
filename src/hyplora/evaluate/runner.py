"""The benchmark runner: tasks -> per-example JSON lines (resumable) -> summary JSON and markdown table.

Output directory layout::

    run.json           what the run generates with (model, adapter, template, decoding); a restart must match
    <task>.jsonl       one line per example, appended and flushed as generated:
                       {"id", "index", "prompt", "output", "extracted", "gold", "correct", "num_tokens", "stopped"}
    summary.json       accuracies and settings (written atomically when every task is complete)
    results.md         the markdown table printed at the end

A restarted run reads the JSON lines back and generates only the examples that have no line yet; a last
line cut short by a crash is dropped and generated again. Every input problem (unknown task, missing
file, malformed record, unknown model, adapter that does not fit) raises `HypLoraUserError` before
anything is written.

The ``builtin`` task's records are generated (`hyplora.data.synthetic`), not read: it needs no data
directory, and its summary names the generator in place of a file and hashes the records' JSON.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data import BENCHMARKS, GROUPS, data_dir, load_benchmark, load_records, resolve_tasks
from ..data.benchmarks import generated_description
from ..data.prompts import TEMPLATES, build_prompt
from ..data.records import Record
from ..errors import HypLoraUserError
from .scoring import DEFAULT_PROTOCOL, PROTOCOLS, score

DEFAULT_MAX_NEW_TOKENS = {"numeric": 256, "option": 256, "choice": 32}
SUMMARY_NAME = "summary.json"
RUN_NAME = "run.json"
TABLE_NAME = "results.md"
APPROXIMATE_NOTE = (
    "hellaswag is scored on an approximate file (hellaswag_approx.json: the validation set rebuilt from a copy "
    "whose WikiHow items lost their [header]/[title]/[step] tags); its accuracy is not exactly comparable to "
    "published HellaSwag numbers"
)


@dataclass
class EvalSettings:
    model: str
    tasks: list[str]
    output_dir: str
    adapter: str | None = None
    data_dir: str | None = None
    task_files: dict[str, str] = field(default_factory=dict)  # task -> file replacing the standard one
    protocol: str = DEFAULT_PROTOCOL
    max_new_tokens: int | None = None  # None: 256 for arithmetic, 32 for commonsense
    num_beams: int = 1
    batch_size: int = 256
    template: str = "alpaca"
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 elsewhere
    device: str | None = None  # None: cuda if available, else cpu
    limit: int | None = None  # first N examples of each task
    seed: int | None = None
    label: str | None = None
    progress: bool = True
    trust_remote_code: bool = False


@dataclass
class TaskData:
    name: str
    path: str  # the file read, or what generated the records (`generated_description`)
    records: list[Record]
    prompts: list[str]
    max_new_tokens: int
    sha256: str  # of the file, or of the generated records' JSON


# ---------------------------------------------------------------------------------------------- validation


def _check_settings(settings: EvalSettings) -> None:
    if settings.protocol not in PROTOCOLS:
        raise HypLoraUserError(f"unknown protocol {settings.protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if settings.template not in TEMPLATES:
        raise HypLoraUserError(f"unknown prompt template {settings.template!r}; choose from {', '.join(TEMPLATES)}")
    for name, value in (("--num-beams", settings.num_beams), ("--batch-size", settings.batch_size)):
        if value < 1:
            raise HypLoraUserError(f"{name} must be at least 1 (got {value})")
    if settings.max_new_tokens is not None and settings.max_new_tokens < 1:
        raise HypLoraUserError(f"--max-new-tokens must be at least 1 (got {settings.max_new_tokens})")
    if settings.limit is not None and settings.limit < 1:
        raise HypLoraUserError(f"--limit must be at least 1 (got {settings.limit})")
    if settings.dtype not in ("auto", "float32", "bfloat16", "float16", "float64"):
        raise HypLoraUserError(f"unknown dtype {settings.dtype!r}")
    for task in settings.task_files:
        if task not in BENCHMARKS:
            raise HypLoraUserError(f"--task-file names an unknown task {task!r}; known: {', '.join(BENCHMARKS)}")
        if task not in settings.tasks:
            raise HypLoraUserError(f"--task-file given for {task!r}, which is not among the tasks to run")


def prepare_tasks(settings: EvalSettings, tokenizer=None) -> list[TaskData]:
    """Resolve, read and validate every task's records and build its prompts (nothing is written)."""
    _check_settings(settings)
    if settings.data_dir:
        data_dir(settings.data_dir)  # a wrong --data-dir is an error even when no task reads it (builtin)
    out = []
    for name in settings.tasks:
        if name not in settings.task_files and BENCHMARKS[name].generated:
            path = generated_description(name)
            records = load_benchmark(name)  # no data directory involved
            sha256 = _records_sha256(records)
        else:
            if name in settings.task_files:
                path = Path(settings.task_files[name]).expanduser()
            else:
                path = data_dir(settings.data_dir) / "test" / BENCHMARKS[name].file
            records = load_records(path, require_answer=True)
            sha256 = _sha256(path)
        for index, record in enumerate(records):
            if not record.answer.strip():
                raise HypLoraUserError(f"{path}: record {index} has an empty 'answer'")
        _check_gold(name, path, records)
        if settings.limit is not None:
            records = records[: settings.limit]
        prompts = [build_prompt(record, settings.template, tokenizer) for record in records]
        kind = BENCHMARKS[name].kind
        max_new = settings.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[kind]
        out.append(TaskData(name, str(path), records, prompts, max_new, sha256))
    return out


def _check_gold(task: str, path, records: list[Record]) -> None:
    from .scoring import parse_number

    bench = BENCHMARKS[task]
    for index, record in enumerate(records):
        gold = record.answer.strip()
        if bench.kind == "numeric":
            ok = parse_number(gold) is not None
        else:
            ok = gold.lower() in {label.lower() for label in bench.labels}
        if not ok:
            raise HypLoraUserError(
                f"{path}: record {index} has answer {gold!r}, which is not a valid {task} answer "
                f"({'a number' if bench.kind == 'numeric' else ' / '.join(bench.labels)})"
            )


def _records_sha256(records: list[Record]) -> str:
    """A content hash of generated records: SHA-256 of their LLM-Adapters JSON (compact, keys sorted)."""
    items = [asdict(record) for record in records]
    return hashlib.sha256(json.dumps(items, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- model


def resolve_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def read_adapter_info(adapter_dir: str | os.PathLike) -> dict:
    """Type and main hyperparameters of a saved adapter (from adapter_config.json), and a seed if recorded."""
    path = Path(adapter_dir).expanduser()
    if not path.is_dir():
        raise HypLoraUserError(f"adapter directory {path} does not exist")
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise HypLoraUserError(f"{path} is not an adapter directory (no adapter_config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HypLoraUserError(f"{config_path}: unreadable adapter config: {exc}") from exc
    if not isinstance(config, dict):
        raise HypLoraUserError(f"{config_path}: not a JSON object")
    peft_type = str(config.get("peft_type", "")).upper()
    kind = "DORA" if peft_type == "LORA" and config.get("use_dora") else peft_type or "UNKNOWN"
    info = {
        "path": str(path.resolve()),
        "type": kind,
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "target_modules": config.get("target_modules"),
        "base_model_name_or_path": config.get("base_model_name_or_path"),
    }
    if "variant" in config:
        info["variant"] = config["variant"]
    training = read_training_config(path)
    info["seed"] = training.get("seed") if training and isinstance(training.get("seed"), int) else _recorded_seed(path)
    if training:
        info["training"] = {k: training.get(k) for k in ("model", "method", "template", "data", "rank", "lora_alpha",
                                                         "variant", "seed", "learning_rate", "num_epochs")}
        info["training_run"] = str(path.parent) if (path.parent / "config.json").is_file() else None
    return info


def read_training_config(adapter_dir: str | os.PathLike) -> dict | None:
    """The `hyplora train` config of a run whose adapter this is (``RUN/config.json`` for ``RUN/adapter``)."""
    path = Path(adapter_dir).expanduser().resolve()
    for candidate in (path.parent / "config.json", path / "training_config.json"):
        if not candidate.is_file():
            continue
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "method" in data and "template" in data and "model" in data:
            return data
    return None


def _recorded_seed(path: Path) -> int | None:
    """A training seed recorded next to the adapter (a top-level integer "seed" in a small JSON file)."""
    for candidate in sorted(path.glob("*.json")):
        if candidate.name == "adapter_config.json" or candidate.stat().st_size > 1_000_000:
            continue
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("seed"), int) and not isinstance(data["seed"], bool):
            return data["seed"]
    return None


def attach_adapter(model, adapter_dir: str):
    """The model with the saved adapter (HypLoRA, LoRA or DoRA) attached, for inference."""
    read_adapter_info(adapter_dir)
    from ..adapter import load_adapter

    try:
        return load_adapter(model, os.fspath(Path(adapter_dir).expanduser()), is_trainable=False)
    except HypLoraUserError:
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        raise HypLoraUserError(f"adapter {adapter_dir} does not fit the model: {exc}") from exc


def load_for_eval(settings: EvalSettings):
    """(model, tokenizer) as named by the settings, with the adapter attached, on the device, in eval mode."""
    from ..models import load_model, load_tokenizer

    if settings.adapter:
        read_adapter_info(settings.adapter)  # fail before the (slow) model load
    device = resolve_device(settings.device)
    tokenizer = load_tokenizer(settings.model, trust_remote_code=settings.trust_remote_code)
    model = load_model(
        settings.model, dtype=resolve_dtype(settings.dtype, device), trust_remote_code=settings.trust_remote_code
    )
    if settings.adapter:
        model = attach_adapter(model, settings.adapter)
    model.to(device)
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------- files


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_results(path: str | os.PathLike, *, repair: bool = False) -> dict[str, dict]:
    """The per-example records of a task's JSON-lines file, by id.

    A last line without its newline (a write cut short) is ignored, and with ``repair`` cut off the file so
    that appending continues on a clean line. Any other unreadable line raises `HypLoraUserError`.
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete_end = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    if complete_end < len(data) and repair:
        with open(path, "r+b") as handle:
            handle.truncate(complete_end)
    records: dict[str, dict] = {}
    for lineno, line in enumerate(data[:complete_end].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise HypLoraUserError(
                f"{path}: line {lineno} is not a JSON record ({exc}); fix or delete that line to resume"
            ) from exc
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not isinstance(item.get("output"), str):
            raise HypLoraUserError(f"{path}: line {lineno} is not an evaluation record (needs 'id' and 'output')")
        records[item["id"]] = item
    return records


def example_id(task: str, index: int) -> str:
    return f"{task}/{index}"


# ---------------------------------------------------------------------------------------------- run


def _identity(settings: EvalSettings, tasks: list[TaskData]) -> dict:
    """What decides the generated text; a run may only be resumed with the same values."""
    return {
        "model": settings.model,
        "adapter": str(Path(settings.adapter).expanduser().resolve()) if settings.adapter else None,
        "template": settings.template,
        "protocol": settings.protocol,
        "num_beams": settings.num_beams,
        "do_sample": False,
        "dtype": settings.dtype,
        "max_new_tokens": {task.name: task.max_new_tokens for task in tasks},
    }


def _check_resume(output_dir: Path, identity: dict) -> None:
    path = output_dir / RUN_NAME
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HypLoraUserError(f"{path} is unreadable ({exc}); use a new --output-dir") from exc
    previous_identity = previous.get("identity", {}) if isinstance(previous, dict) else {}
    differences = []
    for key, value in identity.items():
        old = previous_identity.get(key)
        if key == "max_new_tokens" and isinstance(old, dict):
            clash = {t: (old[t], n) for t, n in value.items() if t in old and old[t] != n}
            if clash:
                differences.append(f"max_new_tokens {clash}")
        elif old != value:
            differences.append(f"{key}: {old!r} before, {value!r} now")
    if differences:
        raise HypLoraUserError(
            f"{output_dir} holds a run with other settings ({'; '.join(differences)}); "
            "resume it with the same settings or use a new --output-dir"
        )


def _write_run_file(output_dir: Path, identity: dict, device: str | None) -> list[str]:
    """Record the identity (merged with tasks run before) and the devices that generated; return those."""
    path = output_dir / RUN_NAME
    merged, devices = dict(identity), []
    if path.is_file():  # keep max_new_tokens of tasks run before
        previous = json.loads(path.read_text(encoding="utf-8"))
        merged["max_new_tokens"] = {**previous.get("identity", {}).get("max_new_tokens", {}),
                                    **identity["max_new_tokens"]}
        devices = list(previous.get("devices", []))
    if device and device not in devices:
        devices.append(device)
    atomic_write_text(path, json.dumps({"identity": merged, "devices": devices}, indent=2) + "\n")
    return devices


def run_evaluation(settings: EvalSettings, model=None, tokenizer=None, *, log=print) -> dict:
    """Evaluate, write the outputs (see the module docstring) and return the summary.

    ``model``/``tokenizer``: already loaded ones (with any adapter attached) to use instead of loading
    ``settings.model``; ``settings.model`` and ``settings.adapter`` are then only recorded.
    """
    import torch

    from .generation import iter_generate

    settings.tasks = resolve_tasks(settings.tasks)
    _check_settings(settings)
    output_dir = Path(settings.output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise HypLoraUserError(f"--output-dir {output_dir} exists and is not a directory")
    if settings.template == "chat" and tokenizer is None:
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(settings.model, trust_remote_code=settings.trust_remote_code)
    tasks = prepare_tasks(settings, tokenizer)  # data problems surface before the model loads
    adapter_info = read_adapter_info(settings.adapter) if settings.adapter else None
    identity = _identity(settings, tasks)
    _check_resume(output_dir, identity)
    existing = {task.name: read_results(output_dir / f"{task.name}.jsonl") for task in tasks}
    for task in tasks:
        _check_existing(output_dir, task, existing[task.name])

    todo = {task.name: [i for i in range(len(task.records)) if example_id(task.name, i) not in existing[task.name]]
            for task in tasks}
    if any(todo.values()) and model is None:
        log(f"loading {settings.model}" + (f" with adapter {settings.adapter}" if settings.adapter else ""))
        model, tokenizer = load_for_eval(settings)
    if any(todo.values()) and tokenizer is None:
        raise ValueError("run_evaluation: a tokenizer must be given along with a model")

    output_dir.mkdir(parents=True, exist_ok=True)
    devices = _write_run_file(output_dir, identity, device_name(model) if any(todo.values()) else None)
    torch.manual_seed(settings.seed or 0)
    timings = {}
    for task in tasks:
        path = output_dir / f"{task.name}.jsonl"
        read_results(path, repair=True)  # drop a cut-short last line before appending
        remaining = todo[task.name]
        if not remaining:
            log(f"{task.name}: all {len(task.records)} examples already generated")
            continue
        done = len(task.records) - len(remaining)
        log(f"{task.name}: generating {len(remaining)} of {len(task.records)} examples"
            + (f" ({done} done before)" if done else "") + f", up to {task.max_new_tokens} new tokens")
        start, tokens = time.perf_counter(), 0
        with open(path, "a", encoding="utf-8") as handle:
            batches = iter_generate(
                model, tokenizer, [task.prompts[i] for i in remaining],
                max_new_tokens=task.max_new_tokens, num_beams=settings.num_beams,
                batch_size=settings.batch_size, progress=settings.progress,
                add_special_tokens=settings.template != "chat",  # as training tokenizes prompts
            )
            for batch in batches:
                for item in batch:
                    index = remaining[item.index]
                    record = task.records[index]
                    result = score(task.name, item.text, record.answer, settings.protocol)
                    line = {
                        "id": example_id(task.name, index), "index": index, "prompt": task.prompts[index],
                        "output": item.text, "extracted": result.extracted, "gold": record.answer,
                        "correct": result.correct, "num_tokens": item.num_tokens, "stopped": item.stopped,
                    }
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                    handle.flush()
                    tokens += item.num_tokens
                os.fsync(handle.fileno())
        seconds = time.perf_counter() - start
        timings[task.name] = {"seconds": round(seconds, 3), "generated_tokens": tokens,
                              "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None}

    results = {task.name: read_results(output_dir / f"{task.name}.jsonl") for task in tasks}
    summary = build_summary(settings, tasks, results, adapter_info, model, timings)
    summary["device"] = " + ".join(devices) if devices else summary["device"]
    atomic_write_text(output_dir / SUMMARY_NAME, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    from .report import summary_table

    table = summary_table(summary)
    atomic_write_text(output_dir / TABLE_NAME, table + "\n")
    log(table)
    return summary


def _check_existing(output_dir: Path, task: TaskData, records: dict[str, dict]) -> None:
    """Existing lines must belong to this task's data: same prompt for the same id."""
    for key, item in records.items():
        index = item.get("index")
        if not key.startswith(f"{task.name}/") or not isinstance(index, int) or key != example_id(task.name, index):
            raise HypLoraUserError(f"{output_dir / (task.name + '.jsonl')}: record {key!r} is not a {task.name} record")
        if index < len(task.prompts) and item.get("prompt") != task.prompts[index]:
            raise HypLoraUserError(
                f"{output_dir / (task.name + '.jsonl')}: record {key!r} was generated from another prompt than "
                "the current data gives (data file or template changed); use a new --output-dir"
            )


# ---------------------------------------------------------------------------------------------- summary


def versions() -> dict:
    import peft
    import torch
    import transformers

    from .. import __version__

    return {
        "hyplora": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__,
    }


def device_name(model=None) -> str:
    import torch

    device = None
    if model is not None:
        try:
            device = next(model.parameters()).device
        except (StopIteration, AttributeError):
            device = None
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device is None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return cpu_name()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" (CPU, {os.cpu_count()} threads)"
    except OSError:
        pass
    return (platform.processor() or platform.machine() or "unknown") + " (CPU)"


def _task_stats(task: TaskData, results: dict[str, dict], protocol: str) -> dict:
    n = correct = unparseable = 0
    by_protocol = {p: 0 for p in PROTOCOLS}
    for index, record in enumerate(task.records):
        item = results.get(example_id(task.name, index))
        if item is None:
            continue
        n += 1
        for p in PROTOCOLS:
            result = score(task.name, item["output"], record.answer, p)
            by_protocol[p] += result.correct
            if p == protocol:
                correct += result.correct
                unparseable += not result.parseable
    stats = {
        "n": n, "total": len(task.records), "complete": n == len(task.records),
        "correct": correct, "accuracy": correct / n if n else None,
        "unparseable": unparseable, "unparseable_rate": unparseable / n if n else None,
        "accuracy_by_protocol": {p: (c / n if n else None) for p, c in by_protocol.items()},
        "max_new_tokens": task.max_new_tokens, "file": task.path, "file_sha256": task.sha256,
    }
    if BENCHMARKS[task.name].approximate:
        stats["approximate"] = True
    return stats


def group_averages(task_stats: dict[str, dict]) -> dict:
    """M.AVG (micro average over the paper's four arithmetic tasks) and AVG (macro over commonsense).

    Given only when every task of the group was evaluated completely.
    """
    out = {}
    math = GROUPS["math"]
    if all(t in task_stats and task_stats[t]["complete"] and task_stats[t]["n"] for t in math):
        correct = sum(task_stats[t]["correct"] for t in math)
        n = sum(task_stats[t]["n"] for t in math)
        out["M.AVG"] = {"value": correct / n, "kind": "micro", "tasks": list(math), "correct": correct, "n": n}
    common = GROUPS["commonsense"]
    if all(t in task_stats and task_stats[t]["complete"] and task_stats[t]["n"] for t in common):
        value = sum(task_stats[t]["accuracy"] for t in common) / len(common)
        out["AVG"] = {"value": value, "kind": "macro", "tasks": list(common), "approximate": True}
    return out


def _model_dtype(model) -> str | None:
    try:
        return str(next(model.parameters()).dtype).replace("torch.", "")
    except (AttributeError, StopIteration, TypeError):
        return None


def default_label(settings: EvalSettings, adapter_info: dict | None) -> str:
    if not adapter_info:
        return settings.model
    path = Path(adapter_info["path"])
    name = path.parent.name if adapter_info.get("training_run") and path.name == "adapter" else path.name
    name = re.sub(r"[-_.]?(?:seed|s)[-_]?\d+$", "", name) or name  # seeds of one configuration share a label
    return f"{settings.model} + {adapter_info['type'].lower()} {name}"


def build_summary(settings, tasks, results, adapter_info, model, timings) -> dict:
    task_stats = {task.name: _task_stats(task, results[task.name], settings.protocol) for task in tasks}
    seed = settings.seed if settings.seed is not None else (adapter_info or {}).get("seed")
    notes = [APPROXIMATE_NOTE] if any(BENCHMARKS[t.name].approximate for t in tasks) else []
    if settings.limit is not None:
        notes.append(f"only the first {settings.limit} examples of each task were evaluated (--limit)")
    summary = {
        "label": settings.label or default_label(settings, adapter_info),
        "model": settings.model,
        "adapter": adapter_info,
        "seed": seed,
        "protocol": settings.protocol,
        "template": settings.template,
        "generation": {
            "decoding": "greedy" if settings.num_beams == 1 else "beam search",
            "do_sample": False, "num_beams": settings.num_beams,
            "max_new_tokens": {t.name: t.max_new_tokens for t in tasks},
            "batch_size": settings.batch_size, "dtype": _model_dtype(model) or settings.dtype,
            "padding": "left, with attention mask", "stop": "EOS",
        },
        "limit": settings.limit,
        "complete": all(s["complete"] for s in task_stats.values()),
        "tasks": task_stats,
        "groups": group_averages(task_stats),
        "notes": notes,
        "timing": timings,
        "device": device_name(model),
        "versions": versions(),
        "command": " ".join(sys.argv),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return summary


def settings_dict(settings: EvalSettings) -> dict:
    return asdict(settings)
