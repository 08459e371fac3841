"""Training-set loaders on tiny fixtures: GSM8K and MAWPS conversion, LLM-Adapters files, mixes, bad input."""

from __future__ import annotations

import json

import pytest

from hyplora.data.records import Record
from hyplora.data.training_sets import (
    TRAINING_TASKS, gsm8k_record, load_training_data, mawps_rationale, mawps_record,
)
from hyplora.errors import HypLoraUserError


def _write_test_sets(root, extra: dict[str, list[str]] | None = None):
    from hyplora.data.benchmarks import BENCHMARKS

    (root / "test").mkdir(parents=True, exist_ok=True)
    for bench in BENCHMARKS.values():
        if bench.generated:  # builtin: no file
            continue
        qs = (extra or {}).get(bench.name, [f"placeholder question for {bench.name}"])
        items = [{"instruction": q, "input": "", "output": "", "answer": "1"} for q in qs]
        (root / "test" / bench.file).write_text(json.dumps(items), encoding="utf-8")


@pytest.fixture
def data_root(tmp_path):
    """A miniature data directory with every training file of the registry and all 16 test files."""
    train = tmp_path / "train"
    train.mkdir()
    gsm = [
        {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
        {"question": "Weng earns $12 an hour. How much for 50 minutes?",
         "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 1,000"},
    ]
    (train / "gsm8k_train.jsonl").write_text("\n".join(json.dumps(x) for x in gsm) + "\n", encoding="utf-8")
    mawps = [
        {"id": 1, "original_text": "A waiter had 22 customers . If 14 left and tables had 4 each , how many tables ?",
         "segmented_text": "", "equation": "X=((22.0-14.0)/4.0)", "ans": 2.0},
        {"id": 2, "original_text": "Tom has 3 pens .", "segmented_text": "", "equation": "X-6=52", "ans": 58.0},
    ]
    (train / "mawps_raw.json").write_text(json.dumps(mawps), encoding="utf-8")
    for task in TRAINING_TASKS.values():
        if task.file and task.converter is None:
            items = [{"instruction": f"{task.name} question {i}", "input": "", "output": "the correct answer is a",
                      "answer": "a"} for i in range(3)]
            (train / task.file).write_text(json.dumps(items), encoding="utf-8")
    # one training question is also a test question (MAWPS / AddSub overlap)
    _write_test_sets(tmp_path, {"addsub": ["Tom has 3.0 pens."]})
    return tmp_path


def test_gsm8k_conversion_strips_calculator_and_renders_answer():
    r = gsm8k_record({"question": " Q? ", "answer": "a 2+3 = <<2+3=5>>5 x.\nthen 5*2 = <<5*2=10>>10.\n#### 1,010"}, "f", 0)
    assert r == Record("Q?", "", "a 2+3 = 5 x. then 5*2 = 10. The answer is 1010.", "1010")
    with pytest.raises(HypLoraUserError, match="record 3"):
        gsm8k_record({"question": "q", "answer": "no final line"}, "f", 3)
    with pytest.raises(HypLoraUserError, match="question"):
        gsm8k_record({"q": "q"}, "f", 0)


def test_mawps_rationales():
    assert mawps_rationale("X=((22.0-14.0)/4.0)", 2.0) == "22 - 14 = 8. 8 / 4 = 2. The answer is 2."
    assert mawps_rationale("x=3*6", 18.0) == "3 * 6 = 18. The answer is 18."
    assert mawps_rationale("X=2.5+1", 3.5) == "2.5 + 1 = 3.5. The answer is 3.5."
    # an equation to solve, not an expression to evaluate: a one-line rationale still ending in the answer
    assert mawps_rationale("X-6=52", 58.0).endswith("The answer is 58.")
    r = mawps_record({"original_text": "t", "equation": "x=1+1", "ans": 2.0}, "f", 0)
    assert r.answer == "2" and r.output.endswith("The answer is 2.")
    with pytest.raises(HypLoraUserError, match="ans"):
        mawps_record({"original_text": "t", "equation": "x=1"}, "f", 0)


def test_math_mix_and_dedup_report(data_root):
    data = load_training_data("math", data_root)
    assert data.stats["loaded_by_source"] == {"gsm8k": 2, "mawps": 2}
    assert data.stats["dedup"]["dropped"] == 1
    assert data.stats["dedup"]["dropped_by_test_set"] == {"addsub": 1}
    assert data.stats["used"] == 3
    assert all(r.output.rstrip(".").split()[-1] == r.answer for r in data.records)
    assert data.records[0].answer == "72"


def test_commonsense_mix_has_seven_sources(data_root):
    data = load_training_data("commonsense", data_root)
    assert set(data.stats["loaded_by_source"]) == {
        "boolq", "piqa", "social_i_qa", "winogrande", "arc_easy", "arc_challenge", "openbookqa"}
    assert data.stats["used"] == 21


def test_file_and_jsonl_and_mix(data_root, tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"instruction": "x?", "output": "y", "answer": "y"}\n\n{"instruction": "z?", "output": "w"}\n')
    data = load_training_data(f"{f},gsm8k", data_root)
    assert data.stats["loaded_by_source"] == {str(f): 2, "gsm8k": 2}
    assert data.sources == [str(f)] * 2 + ["gsm8k"] * 2


def test_builtin_without_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("HYPLORA_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data or ./data from here
    data = load_training_data("builtin", builtin_size=30, max_samples=10, seed=1)
    assert data.stats["used"] == 10 and "skipped" in data.stats["dedup"]
    again = load_training_data("builtin", builtin_size=30, max_samples=10, seed=1)
    assert again.records == data.records
    other = load_training_data("builtin", builtin_size=30, max_samples=10, seed=2)
    assert other.records != data.records


def test_data_dir_from_environment(data_root, monkeypatch):
    monkeypatch.setenv("HYPLORA_DATA_DIR", str(data_root))
    assert load_training_data("gsm8k").stats["used"] == 2


def test_no_dedup(data_root):
    data = load_training_data("mawps", data_root, dedup=False)
    assert data.stats["used"] == 2 and "skipped" in data.stats["dedup"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\xff\xfe bad bytes", "not UTF-8"),
        (b'[{"instruction": "a"},', "invalid JSON at line 1"),
        (b'{"instruction": "a"}\n{"instruction": \n', "invalid JSON on line 2"),
        (b'[{"input": "no instruction"}]', "record 0 has no 'instruction'"),
        (b"[]", "no records"),
    ],
)
def test_bad_files(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    with pytest.raises(HypLoraUserError, match=message) as info:
        load_training_data(str(f), dedup=False)
    assert "bad.json" in str(info.value)


def test_unknown_and_missing(tmp_path):
    with pytest.raises(HypLoraUserError, match="unknown training data"):
        load_training_data("nonsense", dedup=False)
    with pytest.raises(HypLoraUserError, match="no such data file"):
        load_training_data(str(tmp_path / "missing.json"), dedup=False)
    with pytest.raises(HypLoraUserError, match="does not exist"):
        load_training_data("gsm8k", tmp_path / "nowhere")
    (tmp_path / "train").mkdir()
    with pytest.raises(HypLoraUserError, match="gsm8k_train.jsonl"):
        load_training_data("gsm8k", tmp_path)


def test_hub_without_datasets_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(HypLoraUserError, match="pip install datasets"):
        load_training_data("hf:someone/something", dedup=False)


def test_real_shared_data_if_present():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "train" / "mawps_raw.json").is_file():
        pytest.skip("no shared data directory")
    data = load_training_data("mawps", root)
    assert data.stats["dedup"]["dropped"] > 0  # MAWPS train overlaps AddSub / SingleEq / MultiArith tests
