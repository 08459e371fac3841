"""Reading records in the LLM-Adapters format: ``{"instruction", "input", "output", "answer"}``.

A file is either a JSON list of such objects or JSON lines (one object per line). Every problem with a file
(missing, empty, not UTF-8, bad JSON, a record that is not an object or lacks a field) raises
`HypLoraUserError` naming the file and the record or line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import HypLoraUserError


@dataclass(frozen=True)
class Record:
    instruction: str
    input: str = ""
    output: str = ""
    answer: str = ""


def read_json_or_jsonl(path: str | Path) -> list:
    """The list of objects in a JSON-list or JSON-lines file, with file/line positions in every error."""
    path = Path(path)
    if not path.is_file():
        raise HypLoraUserError(f"no such data file: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HypLoraUserError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if not text.strip():
        raise HypLoraUserError(f"{path}: the file is empty")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HypLoraUserError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
        if not isinstance(items, list):
            raise HypLoraUserError(f"{path}: expected a JSON list of records")
        return items
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise HypLoraUserError(f"{path}: invalid JSON on line {lineno}: {exc.msg}") from exc
    return items


def parse_records(items: list, source: str, *, require_answer: bool = False) -> list[Record]:
    """Validate LLM-Adapters objects into `Record`s. ``instruction`` is always required."""
    if not items:
        raise HypLoraUserError(f"{source}: no records")
    records = []
    required = ("instruction", "answer") if require_answer else ("instruction",)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise HypLoraUserError(f"{source}: record {index} is a {type(item).__name__}, not an object")
        for key in required:
            if key not in item:
                raise HypLoraUserError(f"{source}: record {index} has no {key!r} field")
        values = {}
        for key in ("instruction", "input", "output", "answer"):
            value = item.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, (str, int, float)):
                raise HypLoraUserError(f"{source}: record {index} field {key!r} is not text")
            values[key] = str(value)
        if not values["instruction"].strip():
            raise HypLoraUserError(f"{source}: record {index} has an empty instruction")
        records.append(Record(**values))
    return records


def load_records(path: str | Path, *, require_answer: bool = False) -> list[Record]:
    """Records of an LLM-Adapters JSON (list) or JSON-lines file."""
    return parse_records(read_json_or_jsonl(path), str(path), require_answer=require_answer)
