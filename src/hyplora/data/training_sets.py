"""Training sets: a registry of tasks, file and hub loaders, deduplication against the test sets, slicing.

A data spec (``hyplora train --data``) is a comma-separated list of items, each one of:

* a task name of `TRAINING_TASKS` (``math``, ``commonsense``, ``builtin``, or one component such as ``gsm8k``);
* a path to a file in LLM-Adapters format (JSON list or JSON lines of instruction/input/output/answer);
* ``hf:OWNER/NAME`` or ``hf:OWNER/NAME:SPLIT``: a Hugging Face hub dataset with the same fields (needs the
  optional ``datasets`` package and a network).

``math`` is GSM8K train plus MAWPS train rendered as instruction / step-by-step rationale / "The answer is N."
(a stand-in for math_10k, which is not available); ``commonsense`` is the commonsense_170k recipe minus
HellaSwag (BoolQ, PIQA, SIQA, WinoGrande-XL, OBQA, ARC-e, ARC-c). ``builtin`` is the seeded synthetic set of
`hyplora.data.synthetic` and needs no data directory.
"""

from __future__ import annotations

import ast
import math as _math
import operator
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HypLoraUserError
from .benchmarks import data_dir
from .dedup import deduplicate, load_test_question_keys
from .records import Record, load_records, parse_records, read_json_or_jsonl
from .synthetic import synthetic_records

BUILTIN_TRAIN_SIZE = 2000


# ---------------------------------------------------------------------------------------------- converters
_CALCULATOR = re.compile(r"<<[^>]*>>")
_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


def _format_number(value: float) -> str:
    if _math.isfinite(value) and abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    return f"{value:.6g}" if abs(value) < 1e6 else repr(value)


def gsm8k_record(item: dict, source: str, index: int) -> Record:
    """A GSM8K train item ``{"question", "answer"}`` as a record; calculator annotations are removed."""
    if not isinstance(item, dict) or "question" not in item or "answer" not in item:
        raise HypLoraUserError(f"{source}: record {index} needs 'question' and 'answer' fields (GSM8K format)")
    solution = _CALCULATOR.sub("", str(item["answer"])).strip()
    lines = solution.splitlines()
    match = _GSM8K_FINAL.match(lines[-1].strip()) if lines else None
    if match is None:
        raise HypLoraUserError(f"{source}: record {index} has no final '#### N' line in its answer")
    answer = match.group(1).replace(",", "").strip()
    steps = " ".join(line.strip() for line in lines[:-1] if line.strip())
    output = f"{steps} The answer is {answer}.".strip()
    return Record(instruction=str(item["question"]).strip(), input="", output=output, answer=answer)


_OPS = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub), ast.Mult: ("*", operator.mul),
        ast.Div: ("/", operator.truediv)}


def _steps_of(node, steps: list[str]) -> float:
    """Evaluate an arithmetic AST bottom-up, appending one "a op b = c." sentence per operation."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_steps_of(node.operand, steps)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _steps_of(node.left, steps)
        right = _steps_of(node.right, steps)
        symbol, fn = _OPS[type(node.op)]
        value = fn(left, right)
        steps.append(f"{_format_number(left)} {symbol} {_format_number(right)} = {_format_number(value)}.")
        return value
    raise ValueError("not plain arithmetic")


def mawps_rationale(equation: str, answer: float) -> str:
    """A step-by-step rationale for a MAWPS equation such as ``X=((22.0-14.0)/4.0)``."""
    equation = equation.strip()
    target = _format_number(answer)
    lhs, _, rhs = equation.partition("=")
    if rhs and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", lhs):
        try:
            steps: list[str] = []
            value = _steps_of(ast.parse(rhs.strip(), mode="eval").body, steps)
            if steps and abs(value - answer) <= 1e-6 * max(1.0, abs(answer)):
                return " ".join(steps) + f" The answer is {target}."
        except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
            pass
    return f"We solve the equation {equation} for the unknown, which gives {target}. The answer is {target}."


def mawps_record(item: dict, source: str, index: int) -> Record:
    if not isinstance(item, dict) or not {"original_text", "equation", "ans"} <= set(item):
        raise HypLoraUserError(f"{source}: record {index} needs 'original_text', 'equation' and 'ans' (MAWPS format)")
    try:
        answer = float(item["ans"])
    except (TypeError, ValueError) as exc:
        raise HypLoraUserError(f"{source}: record {index} has a non-numeric 'ans'") from exc
    return Record(
        instruction=str(item["original_text"]).strip(),
        input="",
        output=mawps_rationale(str(item["equation"]), answer),
        answer=_format_number(answer),
    )


def _converted(path: Path, convert: Callable[[dict, str, int], Record]) -> list[Record]:
    items = read_json_or_jsonl(path)
    if not items:
        raise HypLoraUserError(f"{path}: no records")
    return [convert(item, str(path), index) for index, item in enumerate(items)]


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TrainingTask:
    name: str
    description: str
    file: str | None = None  # under <data dir>/train/
    converter: Callable[[dict, str, int], Record] | None = None  # None: LLM-Adapters format
    members: tuple[str, ...] = ()  # a mix of other tasks

    def load(self, directory: str | os.PathLike | None) -> list[tuple[str, list[Record]]]:
        if self.members:
            out = []
            for member in self.members:
                out.extend(TRAINING_TASKS[member].load(directory))
            return out
        path = data_dir(directory) / "train" / self.file
        if not path.is_file():
            raise HypLoraUserError(f"training set {self.name!r} needs {path}, which does not exist")
        records = _converted(path, self.converter) if self.converter else load_records(path)
        return [(self.name, records)]


_COMMONSENSE = ("boolq", "piqa", "social_i_qa", "winogrande", "arc_easy", "arc_challenge", "openbookqa")

TRAINING_TASKS: dict[str, TrainingTask] = {
    t.name: t
    for t in [
        TrainingTask("gsm8k", "GSM8K train (7,473), rationale + 'The answer is N'", "gsm8k_train.jsonl", gsm8k_record),
        TrainingTask("mawps", "MAWPS train (1,898), rationale from the equation", "mawps_raw.json", mawps_record),
        TrainingTask("boolq", "BoolQ train", "boolq.json"),
        TrainingTask("piqa", "PIQA train", "piqa.json"),
        TrainingTask("social_i_qa", "Social IQa train", "social_i_qa.json"),
        TrainingTask("winogrande", "WinoGrande XL train", "winogrande_xl.json"),
        TrainingTask("arc_easy", "ARC-Easy train", "ARC-Easy.json"),
        TrainingTask("arc_challenge", "ARC-Challenge train", "ARC-Challenge.json"),
        TrainingTask("openbookqa", "OpenBookQA train", "openbookqa.json"),
        TrainingTask("math", "GSM8K + MAWPS train (stand-in for math_10k)", members=("gsm8k", "mawps")),
        TrainingTask("commonsense", "commonsense_170k minus HellaSwag", members=_COMMONSENSE),
        TrainingTask("builtin", "built-in synthetic arithmetic word problems (no data directory needed)"),
    ]
}


def _load_hub(spec: str) -> list[Record]:
    name, _, split = spec.partition(":")
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise HypLoraUserError(f"hub dataset {name!r} needs the datasets package: pip install datasets") from exc
    try:
        rows = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # network, missing dataset, bad split: all user-facing
        raise HypLoraUserError(f"could not load hub dataset {name!r}: {exc}") from exc
    return parse_records([dict(row) for row in rows], f"hf:{spec}")


def _looks_like_path(item: str) -> bool:
    return item.endswith((".json", ".jsonl")) or os.sep in item or "/" in item or Path(item).exists()


@dataclass
class TrainingData:
    records: list[Record]
    sources: list[str]
    stats: dict = field(default_factory=dict)


def load_training_data(
    spec: str,
    directory: str | os.PathLike | None = None,
    *,
    dedup: bool = True,
    max_samples: int | None = None,
    seed: int = 0,
    builtin_size: int = BUILTIN_TRAIN_SIZE,
    log: Callable[[str], None] | None = None,
) -> TrainingData:
    """Load, deduplicate against the test sets, and optionally slice a training mix (see module docstring).

    ``max_samples`` keeps a seeded random subset (in the original order) after deduplication.
    """
    items = [part.strip() for part in str(spec).split(",") if part.strip()]
    if not items:
        raise HypLoraUserError("no training data given")
    parts: list[tuple[str, list[Record]]] = []
    for item in items:
        key = item.lower()
        if key == "builtin":
            parts.append(("builtin", synthetic_records("train", builtin_size, seed=0)))
        elif key in TRAINING_TASKS:
            parts.extend(TRAINING_TASKS[key].load(directory))
        elif item.startswith("hf:"):
            parts.append((item, _load_hub(item[3:])))
        elif _looks_like_path(item):
            parts.append((str(item), load_records(Path(item).expanduser())))
        else:
            known = ", ".join(TRAINING_TASKS)
            raise HypLoraUserError(f"unknown training data {item!r}: give a task ({known}), a .json/.jsonl file or hf:NAME")

    records = [r for _, recs in parts for r in recs]
    sources = [name for name, recs in parts for _ in recs]
    stats: dict = {
        "spec": str(spec),
        "loaded": len(records),
        "loaded_by_source": {name: len(recs) for name, recs in parts},
    }

    if dedup:
        keys = None
        try:
            data_dir(directory)
        except HypLoraUserError as exc:
            if not all(name == "builtin" for name, _ in parts):
                raise HypLoraUserError(f"cannot deduplicate against the test sets: {exc} (or pass --no-dedup)") from exc
            # No data directory: the 16 benchmark files cannot be read. The synthetic train split is disjoint
            # from the `builtin` test split by construction (tests/data check it), so nothing is lost.
            stats["dedup"] = {"skipped": "no test sets found (the built-in data is disjoint from its own test split)"}
        else:
            try:
                keys = load_test_question_keys(directory)
            except HypLoraUserError as exc:  # a data directory with a missing or malformed test file
                raise HypLoraUserError(f"cannot deduplicate against the test sets: {exc} (or pass --no-dedup)") from exc
        if keys is not None:
            records, sources, report = deduplicate(records, keys, sources)
            stats["dedup"] = report.as_dict()
            if log:
                log(f"deduplication against {len(report.test_sets)} test sets dropped {report.dropped} records")
    else:
        stats["dedup"] = {"skipped": "disabled (--no-dedup)"}
    if not records:
        raise HypLoraUserError("no training records left after deduplication")

    if max_samples is not None and 0 < max_samples < len(records):
        rng = random.Random(seed)
        chosen = sorted(rng.sample(range(len(records)), max_samples))
        records = [records[i] for i in chosen]
        sources = [sources[i] for i in chosen]
    stats["used"] = len(records)
    used_by: dict[str, int] = {}
    for name in sources:
        used_by[name] = used_by.get(name, 0) + 1
    stats["used_by_source"] = used_by
    return TrainingData(records=records, sources=sources, stats=stats)
