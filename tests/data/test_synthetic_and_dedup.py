"""The built-in synthetic dataset and deduplication against test sets."""

from __future__ import annotations

import json
import re

import pytest

from hyplora.data.dedup import deduplicate, normalize_question, record_key, load_test_question_keys
from hyplora.data.records import Record
from hyplora.data.synthetic import synthetic_records
from hyplora.errors import HypLoraUserError


def test_synthetic_is_seeded_and_reproducible():
    a = synthetic_records("train", 50, seed=3)
    assert a == synthetic_records("train", 50, seed=3)
    assert a != synthetic_records("train", 50, seed=4)
    assert len({r.instruction for r in a}) == 50


def test_synthetic_splits_are_disjoint():
    train = {r.instruction for r in synthetic_records("train", 2000)}
    test = {r.instruction for r in synthetic_records("test", 500)}
    assert not train & test


def test_synthetic_rationales_are_consistent():
    for record in synthetic_records("test", 200, seed=1):
        assert record.output.endswith(f"The answer is {record.answer}.")
        assert int(record.answer) >= 0
        # every "a op b = c" step in the rationale is correct arithmetic
        for a, op, b, c in re.findall(r"(\d+) ([-+x/]) (\d+) = (\d+)", record.output):
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "x": a * b, "/": a / b}[op] == c, record.output


def test_synthetic_bad_arguments():
    with pytest.raises(HypLoraUserError):
        synthetic_records("valid", 3)
    with pytest.raises(HypLoraUserError):
        synthetic_records("train", 0)


def test_normalize_question():
    assert normalize_question("A waiter had 22 customers .") == normalize_question("a waiter had 22.0 customers")
    assert normalize_question("How  many\napples?") == "how many apples"
    assert normalize_question("3.5 apples") != normalize_question("35 apples")


def _write_test_sets(root, questions_by_file: dict[str, list[str]]):
    from hyplora.data.benchmarks import BENCHMARKS

    (root / "test").mkdir(parents=True)
    for bench in BENCHMARKS.values():
        if bench.generated:  # builtin: no file
            continue
        qs = questions_by_file.get(bench.name, ["placeholder question for " + bench.name])
        items = [{"instruction": q, "input": "", "output": "", "answer": "1"} for q in qs]
        (root / "test" / bench.file).write_text(json.dumps(items), encoding="utf-8")


def test_dedup_drops_test_questions_and_reports(tmp_path):
    _write_test_sets(tmp_path, {"gsm8k": ["How many apples does Ann have?"], "mawps": ["Tom has 3.0 pens ."]})
    keys = load_test_question_keys(tmp_path)
    assert keys[normalize_question("how many apples does ann have")] == "gsm8k"
    records = [
        Record("How many apples does Ann have ?"),  # duplicate of gsm8k modulo spacing/case
        Record("tom has 3 pens."),  # duplicate of mawps modulo number formatting
        Record("A new question."),
    ]
    kept, sources, report = deduplicate(records, keys, ["a", "b", "b"])
    assert [r.instruction for r in kept] == ["A new question."]
    assert sources == ["b"]
    assert report.dropped == 2 and report.kept == 1
    assert report.dropped_by_test_set == {"gsm8k": 1, "mawps": 1}
    assert report.dropped_by_source == {"a": 1, "b": 1}
    assert len(report.test_sets) == 17  # the 16 benchmark files and the generated builtin test split
    assert "builtin" in report.test_sets


def test_record_key_includes_input():
    assert record_key(Record("Q", "ctx one")) != record_key(Record("Q", "ctx two"))
