"""The `builtin` evaluation task: registry, groups, generated records, and deduplication against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hyplora.data import BENCHMARKS, GROUPS, load_benchmark, load_training_data, resolve_tasks
from hyplora.data.dedup import deduplicate, load_test_question_keys, record_key
from hyplora.data.records import Record
from hyplora.data.synthetic import BUILTIN_TEST_SIZE, builtin_test_records, synthetic_records
from hyplora.data.training_sets import BUILTIN_TRAIN_SIZE
from hyplora.errors import HypLoraUserError


def test_registry_and_groups():
    bench = BENCHMARKS["builtin"]
    assert bench.generated and bench.file is None and bench.kind == "numeric" and not bench.approximate
    assert [b.name for b in BENCHMARKS.values() if b.generated] == ["builtin"]
    assert resolve_tasks("builtin") == ["builtin"]
    assert resolve_tasks(" BuiltIn ,gsm8k,builtin") == ["builtin", "gsm8k"]
    # the groups are the published benchmarks only
    assert GROUPS == {
        "math": ("mawps", "svamp", "gsm8k", "aqua"),
        "math-all": ("gsm8k", "svamp", "mawps", "addsub", "multiarith", "singleeq", "aqua", "mathqa"),
        "commonsense": ("boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                        "openbookqa"),
    }
    with pytest.raises(HypLoraUserError, match="builtin"):  # listed among the known tasks
        resolve_tasks("builtins")


def test_records_need_no_data_directory_and_are_the_seeded_test_split(no_data_dir):
    with pytest.raises(HypLoraUserError, match="HYPLORA_DATA_DIR"):
        load_benchmark("gsm8k")  # the fixture really leaves no data directory
    records = load_benchmark("builtin")
    assert len(records) == BUILTIN_TEST_SIZE == 500
    assert records == load_benchmark("builtin", "/ignored/for/builtin") == builtin_test_records()
    assert records == synthetic_records("test", 500, seed=0)
    assert len({r.instruction for r in records}) == 500
    for record in records:
        assert record.answer.isdigit() and record.output.endswith(f"The answer is {record.answer}.")
    # a prefix of the task is the synthetic test split of that size: `--limit k` evaluates the demo's k problems
    for k in (1, 4, 32, 100):
        assert records[:k] == synthetic_records("test", k, seed=0)


def test_records_are_the_same_in_another_process():
    """No dependence on the process (hash seed) or on earlier calls: a fresh interpreter gives the same records."""
    code = ("import json, dataclasses; from hyplora.data import load_benchmark; "
            "print(json.dumps([dataclasses.asdict(r) for r in load_benchmark('builtin')]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    here = [vars(r) for r in load_benchmark("builtin")]
    assert json.loads(out) == here


def test_builtin_keys_need_no_data_directory(no_data_dir):
    keys = load_test_question_keys(names=["builtin"])
    assert len(keys) == 500 and set(keys.values()) == {"builtin"}  # normalising keeps the 500 questions apart
    with pytest.raises(HypLoraUserError, match="HYPLORA_DATA_DIR"):
        load_test_question_keys(names=["builtin", "gsm8k"])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_synthetic_train_split_is_disjoint_from_builtin_after_normalising(seed):
    """The split is decided on the exact question text; dedup compares normalised text. Check both agree: no
    train question of the default size (2000) normalises to a builtin test question."""
    test_keys = load_test_question_keys(names=["builtin"])
    train = synthetic_records("train", BUILTIN_TRAIN_SIZE, seed=seed)
    assert not {record_key(r) for r in train} & set(test_keys)
    kept, _, report = deduplicate(train, test_keys)
    assert kept == train and report.dropped == 0


def _write_test_sets(root):
    (root / "test").mkdir(parents=True)
    for bench in BENCHMARKS.values():
        if bench.generated:
            continue
        items = [{"instruction": f"placeholder question for {bench.name}", "input": "", "output": "", "answer": "1"}]
        (root / "test" / bench.file).write_text(json.dumps(items), encoding="utf-8")
    return root


def test_training_dedup_covers_builtin(tmp_path):
    root = _write_test_sets(tmp_path / "data")
    # the built-in training set: checked against all 17 test sets, nothing dropped
    data = load_training_data("builtin", root, builtin_size=200)
    assert data.stats["dedup"]["dropped"] == 0 and data.stats["used"] == 200
    assert "builtin" in data.stats["dedup"]["test_sets"] and len(data.stats["dedup"]["test_sets"]) == 17
    # a training file that holds builtin test problems (written differently) loses them
    test = load_benchmark("builtin")
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps([
        {"instruction": test[3].instruction.upper() + "  ", "output": "x", "answer": test[3].answer},
        {"instruction": "A question of my own?", "output": "y", "answer": "2"},
        {"instruction": test[499].instruction.replace(" ", "   "), "output": "z", "answer": test[499].answer},
    ]), encoding="utf-8")
    data = load_training_data(str(mine), root)
    assert [r.instruction for r in data.records] == ["A question of my own?"]
    assert data.stats["dedup"]["dropped_by_test_set"] == {"builtin": 2}


def test_training_dedup_without_data_directory(no_data_dir, tmp_path):
    # builtin only: skipped (disjoint by construction, checked above); anything else: a clear error
    assert "skipped" in load_training_data("builtin", builtin_size=20).stats["dedup"]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps([Record("q?", "", "a", "1").__dict__]), encoding="utf-8")
    with pytest.raises(HypLoraUserError, match="cannot deduplicate.*--no-dedup"):
        load_training_data(f"builtin,{mine}")


def test_training_dedup_with_a_broken_data_directory_is_an_error(tmp_path):
    """A data directory that exists but cannot be read is not silently skipped, even for builtin data."""
    root = _write_test_sets(tmp_path / "data")
    (root / "test" / "SVAMP.json").write_text("[{", encoding="utf-8")
    with pytest.raises(HypLoraUserError, match="cannot deduplicate.*SVAMP.json"):
        load_training_data("builtin", root, builtin_size=20)
    assert "skipped" in load_training_data("builtin", root, builtin_size=20, dedup=False).stats["dedup"]


def test_real_shared_data_and_builtin_if_present():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "test").is_dir():
        pytest.skip("no shared data directory")
    keys = load_test_question_keys(root)
    assert sum(1 for name in keys.values() if name == "builtin") == 500  # no real test question collides
    assert set(keys.values()) == set(BENCHMARKS)
