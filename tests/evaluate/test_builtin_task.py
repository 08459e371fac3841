"""The `builtin` evaluation task end to end: numeric scoring, the runner and `hyplora eval` / `compare` with no
data directory anywhere (tiny random Llama from tests/evaluate/conftest.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import pytest

from hyplora.cli import main
from hyplora.data import load_benchmark
from hyplora.data.benchmarks import generated_description
from hyplora.errors import HypLoraUserError
from hyplora.evaluate import extract_answer, score
from hyplora.evaluate.runner import EvalSettings, run_evaluation

from .test_runner import scripted  # generation replaced by outputs computed from the prompt


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("protocol", ["hyplora", "reference", "reference-original"])
def test_numeric_scoring(protocol):
    right = "The box holds 3 x 4 = 12 apples. Adding 30 gives 12 + 30 = 42 apples. The answer is 42."
    assert score("builtin", right, "42", protocol).correct
    assert score("builtin", right, "42.0", protocol).correct  # numbers, not strings, are compared
    assert not score("builtin", right.replace("= 42 apples. The answer is 42", "= 41 apples. The answer is 41"),
                     "42", protocol).correct
    assert float(extract_answer("builtin", "It costs $1,234 in all.", protocol)) == 1234  # "1234.0" in reference
    nothing = score("builtin", "I do not know.", "42", protocol)
    assert nothing.extracted is None and not nothing.correct


def test_hyplora_protocol_reads_the_answer_marker_not_the_last_number():
    output = "The answer is 42. (Checked: 6 x 7 = 42, and 40 + 2.)"
    assert score("builtin", output, "42").correct
    assert not score("builtin", output, "42", "reference").correct  # last number: 2


def test_runner_scores_generated_records(tmp_path, no_data_dir, monkeypatch):
    records = load_benchmark("builtin")
    gold = {r.instruction: r.answer for r in records}

    def answer(prompt):  # right on even gold answers, a wrong number on odd ones
        question = next(q for q in gold if q in prompt)
        value = int(gold[question])
        return f"The answer is {value if value % 2 == 0 else value + 1}."

    scripted(monkeypatch, answer)
    out = tmp_path / "out"
    settings = EvalSettings(model="scripted", tasks=["builtin"], output_dir=str(out), limit=20, batch_size=8,
                            progress=False)
    summary = run_evaluation(settings, object(), object(), log=lambda *a: None)
    stats = summary["tasks"]["builtin"]
    even = sum(int(r.answer) % 2 == 0 for r in records[:20])
    assert 0 < even < 20
    assert (stats["n"], stats["total"], stats["correct"], stats["unparseable"]) == (20, 20, even, 0)
    assert stats["file"] == generated_description("builtin") and "500" in stats["file"]
    canonical = json.dumps([asdict(r) for r in records], sort_keys=True, separators=(",", ":"))
    assert stats["file_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()  # all 500, not the slice
    assert summary["groups"] == {} and summary["generation"]["max_new_tokens"] == {"builtin": 256}
    written = lines(out / "builtin.jsonl")
    assert [r["id"] for r in sorted(written, key=lambda r: r["index"])] == [f"builtin/{i}" for i in range(20)]
    for item in written:
        record = records[item["index"]]
        assert record.instruction in item["prompt"] and item["gold"] == record.answer
    assert "| builtin | 20 |" in (out / "results.md").read_text()


def test_eval_cli_on_a_fresh_machine(tiny_model_dir, tmp_path, no_data_dir, capsys):
    out = tmp_path / "run"
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", "builtin", "--output-dir", str(out),
            "--limit", "3", "--max-new-tokens", "4", "--no-progress"]
    assert main(args) == 0
    assert "| builtin | 3 |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["tasks"]) == ["builtin"] and summary["tasks"]["builtin"]["n"] == 3
    assert summary["complete"] and summary["limit"] == 3
    first = load_benchmark("builtin")[:3]
    written = sorted(lines(out / "builtin.jsonl"), key=lambda r: r["index"])
    assert [r["gold"] for r in written] == [r.answer for r in first]
    assert all(r["prompt"].startswith("Below is an instruction") for r in written)
    # resumable like any task: the same command generates nothing more and gives the same numbers
    before = (out / "builtin.jsonl").read_text()
    assert main(args) == 0
    assert (out / "builtin.jsonl").read_text() == before
    assert json.loads((out / "summary.json").read_text())["tasks"] == summary["tasks"]

    # `hyplora compare` shows it as a column of its own
    assert main(["compare", str(out), "--plot", str(tmp_path / "cmp.png")]) == 0
    table = capsys.readouterr().out
    assert "| run | runs | builtin |" in table and "builtin*" not in table


def test_eval_cli_mixing_builtin_with_file_tasks_needs_the_data_dir(tiny_model_dir, tmp_path, no_data_dir,
                                                                    small_data, capsys):
    out = tmp_path / "run"
    base = ["eval", "--model", str(tiny_model_dir), "--output-dir", str(out), "--limit", "2",
            "--max-new-tokens", "2", "--no-progress"]
    assert main(base + ["--tasks", "builtin,gsm8k"]) == 2
    assert "HYPLORA_DATA_DIR" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--tasks", "builtin", "--data-dir", str(tmp_path / "nowhere")]) == 2  # wrong, even unused
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--tasks", "gsm8k,builtin", "--data-dir", str(small_data)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["tasks"]) == ["gsm8k", "builtin"]
    assert summary["tasks"]["gsm8k"]["file"] == str(small_data / "test" / "gsm8k.json")


def test_task_file_replaces_the_generated_records(tmp_path, no_data_dir, monkeypatch, write_records):
    path = write_records(tmp_path / "mine.json",
                         [{"instruction": "What is 2 plus 2?", "input": "", "output": "", "answer": "4"}])
    scripted(monkeypatch, lambda prompt: "The answer is 4.")
    settings = EvalSettings(model="scripted", tasks=["builtin"], output_dir=str(tmp_path / "out"),
                            task_files={"builtin": str(path)}, progress=False)
    stats = run_evaluation(settings, object(), object(), log=lambda *a: None)["tasks"]["builtin"]
    assert (stats["n"], stats["correct"], stats["file"]) == (1, 1, str(path))
    write_records(path, [{"instruction": "q", "input": "", "output": "", "answer": "many"}])
    settings.output_dir = str(tmp_path / "out2")
    with pytest.raises(HypLoraUserError, match="not a valid builtin answer"):
        run_evaluation(settings, object(), object(), log=lambda *a: None)


@pytest.mark.slow
def test_eval_embedded_model_on_builtin(smollm2_name, tmp_path, no_data_dir):
    """The command of the task description: `hyplora eval --model smollm2-135m --tasks builtin` on a fresh
    machine (with --limit to keep it short)."""
    out = tmp_path / "run"
    assert main(["eval", "--model", smollm2_name, "--tasks", "builtin", "--output-dir", str(out), "--limit", "2",
                 "--max-new-tokens", "16", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "smollm2-135m" and summary["tasks"]["builtin"]["n"] == 2
    assert all(item["output"].strip() for item in lines(out / "builtin.jsonl"))
