"""Deduplicate a training mix against every evaluation set, on normalised question text.

The question of a record is its instruction plus its input. Normalising lower-cases it, turns every run of
characters other than letters and digits into one space and drops number formatting differences such as
"3.0" vs "3" (MAWPS writes numbers with ".0"), so "A waiter had 22 customers ." and "a waiter had 22.0
customers." are the same question.

The evaluation sets are every registered benchmark, ``builtin`` (the synthetic test split, generated without
a data directory) included. The built-in synthetic train split is disjoint from it by construction, so it
loses nothing to ``builtin``; a training file holding synthetic test problems does.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field

from .benchmarks import BENCHMARKS, data_dir, load_benchmark
from .records import Record

_TRAILING_ZEROS = re.compile(r"(\d)\.0+\b")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalize_question(text: str) -> str:
    text = text.lower()
    text = _TRAILING_ZEROS.sub(r"\1", text)
    return _NON_WORD.sub(" ", text).strip()


def record_key(record: Record) -> str:
    return normalize_question(f"{record.instruction} {record.input}")


def load_test_question_keys(directory: str | os.PathLike | None = None, names=None) -> dict[str, str]:
    """Normalised question -> the first benchmark holding it, over all (or the named) test sets.

    The data directory is needed (and resolved, raising `HypLoraUserError` when there is none) only when a
    named set is a file; the generated ``builtin`` set alone needs none.
    """
    names = list(names or BENCHMARKS)
    root = data_dir(directory) if any(not BENCHMARKS[n].generated for n in names if n in BENCHMARKS) else None
    keys: dict[str, str] = {}
    for name in names:
        for record in load_benchmark(name, root):
            keys.setdefault(record_key(record), name)
    return keys


@dataclass
class DedupReport:
    kept: int = 0
    dropped: int = 0
    dropped_by_test_set: dict[str, int] = field(default_factory=dict)
    dropped_by_source: dict[str, int] = field(default_factory=dict)
    test_sets: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "kept": self.kept,
            "dropped": self.dropped,
            "dropped_by_test_set": dict(sorted(self.dropped_by_test_set.items())),
            "dropped_by_source": dict(sorted(self.dropped_by_source.items())),
            "test_sets": list(self.test_sets),
        }


def deduplicate(
    records: list[Record], test_keys: dict[str, str], sources: list[str] | None = None
) -> tuple[list[Record], list[str] | None, DedupReport]:
    """Drop every record whose normalised question is in ``test_keys``.

    ``sources`` (optional) names each record's origin; returns (kept records, their sources, report).
    """
    kept: list[Record] = []
    by_test: Counter = Counter()
    by_source: Counter = Counter()
    keep_sources = []
    for index, record in enumerate(records):
        hit = test_keys.get(record_key(record))
        if hit is None:
            kept.append(record)
            if sources is not None:
                keep_sources.append(sources[index])
        else:
            by_test[hit] += 1
            by_source[sources[index] if sources is not None else "data"] += 1
    report = DedupReport(
        kept=len(kept),
        dropped=len(records) - len(kept),
        dropped_by_test_set=dict(by_test),
        dropped_by_source=dict(by_source),
        test_sets=sorted(set(test_keys.values())),
    )
    return kept, (keep_sources if sources is not None else None), report
