"""The texts analysed: benchmark test sets (or LLM-Adapters files) turned into prompts and token ids.

A record's analysis text is its instruction, followed by a newline and its input when it has one.
Token ids are the tokenizer's ids of that text without special tokens (BOS/EOS are not part of the text).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..data import load_benchmark, load_records, resolve_tasks
from ..data.records import Record
from ..errors import HypLoraUserError

DEFAULT_DATASETS = "math"


@dataclass(frozen=True)
class DatasetTexts:
    name: str
    texts: list[str]


@dataclass(frozen=True)
class TokenizedDataset:
    name: str
    texts: list[str]
    token_ids: list[list[int]]  # one list per text, special tokens excluded

    @property
    def n_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


def record_text(record: Record) -> str:
    return f"{record.instruction}\n{record.input}" if record.input.strip() else record.instruction


def _is_file_spec(item: str) -> bool:
    return item.endswith((".json", ".jsonl")) or os.sep in item


def parse_dataset_spec(spec: str) -> list[str]:
    """Split a comma-separated ``--datasets`` value into benchmark names and data-file paths.

    Benchmark and group names are expanded with `hyplora.data.resolve_tasks` (unknown names raise
    `HypLoraUserError`); items ending in .json/.jsonl or containing a path separator are files.
    """
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise HypLoraUserError("no datasets given")
    names: list[str] = []
    for item in items:
        expanded = [item] if _is_file_spec(item) else resolve_tasks(item)
        names.extend(name for name in expanded if name not in names)
    return names


def load_dataset_texts(spec: str, data_directory: str | os.PathLike | None = None,
                       max_texts: int | None = None) -> list[DatasetTexts]:
    """Analysis texts of each dataset in ``spec``; raises `HypLoraUserError` for unknown or empty data."""
    if max_texts is not None and max_texts < 1:
        raise HypLoraUserError(f"--max-prompts must be at least 1, got {max_texts}")
    datasets = []
    for name in parse_dataset_spec(spec):
        if _is_file_spec(name):
            path = Path(name).expanduser()
            records = load_records(path)
            label = path.stem
        else:
            records = load_benchmark(name, data_directory)
            label = name
        texts = [record_text(record) for record in records]
        for index, text in enumerate(texts):
            if not text.strip():
                raise HypLoraUserError(f"dataset {label!r}: record {index} has an empty text")
        if max_texts is not None:
            texts = texts[:max_texts]
        if any(existing.name == label for existing in datasets):
            raise HypLoraUserError(f"dataset name {label!r} given twice")
        datasets.append(DatasetTexts(label, texts))
    return datasets


def tokenize_datasets(datasets: list[DatasetTexts], tokenizer) -> list[TokenizedDataset]:
    """Token ids of every text (no special tokens); a text that yields no token raises `HypLoraUserError`."""
    tokenized = []
    for dataset in datasets:
        ids = [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in dataset.texts]
        for index, token_ids in enumerate(ids):
            if not token_ids:
                raise HypLoraUserError(f"dataset {dataset.name!r}: record {index} has no tokens")
        tokenized.append(TokenizedDataset(dataset.name, dataset.texts, ids))
    return tokenized
