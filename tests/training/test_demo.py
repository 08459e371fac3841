"""`hyplora demo` end to end on the tiny random Llama: files, before/after JSON, printed table, resume, refusal."""

from __future__ import annotations

import json

import pytest

from hyplora.cli import main
from hyplora.data import load_benchmark
from hyplora.data.benchmarks import generated_description


@pytest.fixture
def no_data_dir(monkeypatch, tmp_path):
    """A fresh machine: no data directory anywhere (training deduplication is then skipped, as on one)."""
    monkeypatch.setenv("HYPLORA_DATA_DIR", str(tmp_path / "no-such-data-dir"))
    monkeypatch.chdir(tmp_path)


def _demo(tiny_model_dir, out, *extra):
    return main(["demo", "--model", tiny_model_dir, "--output-dir", str(out), "--max-steps", "3",
                 "--train-samples", "12", "--eval-size", "4", "--max-new-tokens", "6", "--batch-size", "2",
                 "--no-progress", *extra])


def test_demo_end_to_end_and_resume(tiny_model_dir, tmp_path, no_data_dir, capsys):
    out = tmp_path / "demo"
    assert _demo(tiny_model_dir, out) == 0
    printed = capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    for side in ("before", "after"):
        numbers = summary[side]
        assert numbers["n"] == 4
        assert 0.0 <= numbers["accuracy"] <= 1.0 and 0.0 <= numbers["unparseable_rate"] <= 1.0
        assert numbers["accuracy"] == numbers["correct"] / 4
    assert summary["accuracy_change"] == pytest.approx(summary["after"]["accuracy"] - summary["before"]["accuracy"])
    assert summary["training"]["global_step"] == 3 and summary["training"]["final_loss"] > 0
    assert summary["eval"]["n"] == 4 and summary["eval"]["max_new_tokens"] == 6

    paths = summary["paths"]
    assert (out / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "train" / "adapter" / "adapter_config.json").read_text())["peft_type"] == "HYPLORA"
    assert len((out / "train" / "train_log.jsonl").read_text().splitlines()) == 3
    from pathlib import Path

    assert Path(paths["loss_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # both evaluations ran the `builtin` task on its first 4 problems: files and columns say builtin
    assert summary["eval"]["task"] == "builtin" and "task builtin" in summary["eval"]["data"]
    assert not (out / "data").exists() and "eval_data" not in paths  # no copy of the problems is written
    problems = load_benchmark("builtin")[:4]
    for name, side in (("eval-base", "before"), ("eval-adapter", "after")):
        eval_summary = json.loads((out / name / "summary.json").read_text())
        assert list(eval_summary["tasks"]) == ["builtin"] and eval_summary["limit"] == 4
        stats = eval_summary["tasks"]["builtin"]
        assert stats["n"] == 4 and stats["correct"] == summary[side]["correct"]
        assert stats["file"] == generated_description("builtin")
        assert sorted(p.name for p in (out / name).glob("*.jsonl")) == ["builtin.jsonl"]
        written = sorted((json.loads(line) for line in (out / name / "builtin.jsonl").read_text().splitlines()),
                         key=lambda item: item["index"])
        assert [item["gold"] for item in written] == [record.answer for record in problems]
        assert all(record.instruction in item["prompt"] for item, record in zip(written, problems))
        assert "| builtin | 4 |" in (out / name / "results.md").read_text()
    after = json.loads((out / "eval-adapter" / "summary.json").read_text())
    assert after["adapter"]["type"] == "HYPLORA"
    assert after["adapter"]["path"] == str((out / "train" / "adapter").resolve())
    assert json.loads((out / "eval-base" / "summary.json").read_text())["adapter"] is None

    # the printed table and paths
    assert "| model | n | accuracy (%) | correct | unparseable (%) |" in printed
    assert f"| {tiny_model_dir} + HypLoRA (3 steps) | 4 |" in printed
    for key in ("adapter", "training_log", "loss_plot", "eval_base", "eval_adapter", "summary"):
        assert paths[key] in printed
    assert (out / "results.md").read_text().count("| 4 |") == 2

    # the same command again: every stage is reused, nothing is trained or generated again
    adapter_mtime = (out / "train" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    jsonl_before = (out / "eval-adapter" / "builtin.jsonl").read_text()
    assert _demo(tiny_model_dir, out) == 0
    printed = capsys.readouterr().out
    assert "resuming the demo" in printed and "training already finished" in printed
    assert (out / "train" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == adapter_mtime
    assert (out / "eval-adapter" / "builtin.jsonl").read_text() == jsonl_before
    again = json.loads((out / "summary.json").read_text())
    assert again["before"] == summary["before"] and again["after"] == summary["after"] and again["resumed"]
    assert again["timings_s"] == summary["timings_s"]  # the stages' times are those of the run that did them

    # other settings into the same directory: refused with exit status 2 and a clear message
    assert _demo(tiny_model_dir, out, "--eval-size", "5") == 2
    err = capsys.readouterr().err
    assert "hyplora demo: error:" in err and "other settings" in err and "eval_size: 4 before, 5 now" in err


def test_demo_resumes_interrupted_training(tiny_model_dir, tmp_path, no_data_dir, capsys):
    """A demo stopped after its last training checkpoint but before the adapter was written continues from
    that checkpoint (crash-and-resume of the training itself is tested in test_resume.py)."""
    import shutil

    out = tmp_path / "demo"
    assert _demo(tiny_model_dir, out) == 0
    capsys.readouterr()
    train = out / "train"
    assert (train / "checkpoints" / "checkpoint-3").is_dir()
    (train / "summary.json").unlink()
    shutil.rmtree(train / "adapter")
    shutil.rmtree(out / "eval-adapter")
    (out / "summary.json").unlink()
    assert _demo(tiny_model_dir, out) == 0
    printed = capsys.readouterr().out
    assert "resuming from the last checkpoint" in printed and "resuming from " + str(train / "checkpoints") in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training"]["global_step"] == 3 and (train / "adapter" / "adapter_config.json").is_file()
    assert len((train / "train_log.jsonl").read_text().splitlines()) == 3
    assert summary["after"]["n"] == 4


def test_demo_refuses_foreign_directory_and_bad_sizes(tmp_path, no_data_dir, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["demo", "--output-dir", str(other), "--no-progress"]) == 2
    assert "holds no hyplora demo" in capsys.readouterr().err
    assert main(["demo", "--output-dir", str(tmp_path / "x"), "--eval-size", "0", "--no-progress"]) == 2
    assert "--eval-size must be at least 1" in capsys.readouterr().err
    assert main(["demo", "--output-dir", str(tmp_path / "x"), "--eval-size", "501", "--no-progress"]) == 2
    assert "--eval-size must be at most 500" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
