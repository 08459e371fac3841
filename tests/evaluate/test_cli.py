"""`hyplora eval` and `hyplora compare` end to end (tiny model saved to disk; adapters saved with peft)."""

from __future__ import annotations

import copy
import json

import pytest

from hyplora.cli import main

TARGETS = ["q_proj", "v_proj"]


def eval_args(model_dir, data, out, *extra):
    return ["eval", "--model", str(model_dir), "--tasks", "gsm8k,boolq", "--data-dir", str(data),
            "--output-dir", str(out), "--max-new-tokens", "4", "--limit", "3", "--no-progress", *extra]


def test_eval_base_model(tiny_model_dir, small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(eval_args(tiny_model_dir, small_data, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adapter"] is None and summary["model"] == str(tiny_model_dir)
    assert summary["tasks"]["gsm8k"]["n"] == 3
    assert "| gsm8k |" in capsys.readouterr().out
    # the same command again: nothing left to generate, same summary numbers
    assert main(eval_args(tiny_model_dir, small_data, out)) == 0
    assert json.loads((out / "summary.json").read_text())["tasks"] == summary["tasks"]


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_pair):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny_pair[0]), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                                   init_lora_weights=False))
    path = tmp_path_factory.mktemp("lora") / "lora-seed3"
    model.save_pretrained(path)
    (path / "train_config.json").write_text(json.dumps({"seed": 3}))
    return path


def test_eval_lora_adapter(tiny_model_dir, small_data, tmp_path, lora_dir, tiny_pair):
    out = tmp_path / "run"
    assert main(eval_args(tiny_model_dir, small_data, out, "--adapter", str(lora_dir))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adapter"]["type"] == "LORA" and summary["adapter"]["r"] == 4
    assert summary["seed"] == 3  # found next to the adapter
    assert summary["label"].endswith("lora lora")  # the seed suffix is dropped from the label
    # the adapter changes the output (it is really attached): compare with the base model's run
    base = tmp_path / "base"
    assert main(eval_args(tiny_model_dir, small_data, base)) == 0
    outputs = lambda d: sorted(r["output"] for r in map(json.loads, (d / "gsm8k.jsonl").read_text().splitlines()))  # noqa: E731
    assert outputs(out) != outputs(base)


def test_eval_hyplora_adapter(tiny_model_dir, small_data, tmp_path, tiny_pair):
    import peft
    import torch

    from hyplora.adapter import HypLoraConfig

    config = HypLoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", target_modules=TARGETS)
    model = peft.get_peft_model(copy.deepcopy(tiny_pair[0]), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # make the adapter non-zero
    adapter = tmp_path / "hyp"
    model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "HYPLORA"
    out = tmp_path / "run"
    assert main(eval_args(tiny_model_dir, small_data, out, "--adapter", str(adapter))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adapter"]["type"] == "HYPLORA"


def test_adapter_that_does_not_fit_exits_2(tiny_model_dir, small_data, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    adapter = tmp_path / "other"
    get_peft_model(other, LoraConfig(r=4, target_modules=TARGETS)).save_pretrained(adapter)
    out = tmp_path / "run"
    assert main(eval_args(tiny_model_dir, small_data, out, "--adapter", str(adapter))) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "gsm8k,nonsense"], "unknown task"),
        (["--task-file", "gsm8k=/no/file.json"], "no such data file"),
        (["--task-file", "gsm8k"], "TASK=PATH"),
        (["--adapter", "/no/adapter"], "does not exist"),
        (["--model", "/no/model/dir"], "unknown model"),
    ],
)
def test_eval_bad_input_exits_2(tiny_model_dir, small_data, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    args = eval_args(tiny_model_dir, small_data, out)
    for i in range(0, len(extra), 2):  # later values override earlier ones in argparse
        args += extra[i : i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hyplora eval: error:") and message in err
    assert not out.exists()


def _fake_summary(path, label, seed, accuracies, *, protocol="hyplora"):
    path.mkdir(parents=True)
    tasks = {t: {"n": 100, "total": 100, "complete": True, "correct": round(100 * a), "accuracy": a,
                 "unparseable": 0, "unparseable_rate": 0.0} for t, a in accuracies.items()}
    summary = {"label": label, "model": "m", "seed": seed, "protocol": protocol, "template": "alpaca",
               "limit": None, "generation": {"decoding": "greedy", "num_beams": 1, "batch_size": 8},
               "tasks": tasks, "groups": {}}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_compare_mean_std_and_plot(tmp_path, capsys):
    runs = [
        _fake_summary(tmp_path / "a1", "hyplora", 1, {"gsm8k": 0.30, "hellaswag": 0.5}),
        _fake_summary(tmp_path / "a2", "hyplora", 2, {"gsm8k": 0.40, "hellaswag": 0.7}),
        _fake_summary(tmp_path / "b", "lora", 1, {"gsm8k": 0.25}),
    ]
    plot, table = tmp_path / "cmp.png", tmp_path / "cmp.md"
    assert main(["compare", *map(str, runs), "--plot", str(plot), "--markdown", str(table)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| hyplora"))
    assert "35.0 ± 7.1" in row and "60.0 ± 14.1" in row and "seeds 1, 2" in row
    lora = next(line for line in out.splitlines() if line.startswith("| lora"))
    assert "25.0" in lora and "±" not in lora
    assert "hellaswag*" in out and "approximate" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table.read_text().strip() == out.split("\nwrote")[0].strip()


def test_compare_does_not_average_different_protocols(tmp_path, capsys):
    runs = [
        _fake_summary(tmp_path / "a1", "x", 1, {"gsm8k": 0.3}),
        _fake_summary(tmp_path / "a2", "x", 2, {"gsm8k": 0.4}, protocol="reference"),
    ]
    assert main(["compare", *map(str, runs), "--plot", str(tmp_path / "p.png")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| x")]
    assert len(rows) == 2 and not any("±" in r for r in rows)


def test_compare_missing_summary_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--plot", str(tmp_path / "p.png")]) == 2
    assert "no evaluation summary" in capsys.readouterr().err


def test_adapter_of_a_training_run_brings_model_template_and_seed(tiny_model_dir, small_data, tmp_path, lora_dir,
                                                                  capsys):
    import shutil

    run = tmp_path / "lora-math-seed7"
    shutil.copytree(lora_dir, run / "adapter")
    (run / "config.json").write_text(json.dumps({"model": str(tiny_model_dir), "method": "lora", "template": "chat",
                                                 "seed": 7, "rank": 4}))
    out = tmp_path / "run"
    args = ["eval", "--adapter", str(run / "adapter"), "--tasks", "boolq", "--data-dir", str(small_data),
            "--output-dir", str(out), "--max-new-tokens", "2", "--limit", "2", "--no-progress"]
    assert main(args) == 0  # no --model: the training run's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(tiny_model_dir)
    assert summary["template"] == "chat" and summary["seed"] == 7
    assert summary["label"] == f"{tiny_model_dir} + lora lora-math"
    first = json.loads((out / "boolq.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("<|im_start|>")  # SmolLM2's chat template
    # an explicit, different template is allowed but warned about (and is a different run: new directory)
    args[args.index("--output-dir") + 1] = str(tmp_path / "run2")
    assert main(args + ["--template", "alpaca"]) == 0
    assert "differs from the adapter's training run" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_embedded_gguf_model(smollm2_name, small_data, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--model", smollm2_name, "--tasks", "gsm8k,boolq", "--data-dir", str(small_data),
            "--output-dir", str(out), "--max-new-tokens", "8", "--limit", "2", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "smollm2-135m" and summary["tasks"]["boolq"]["n"] == 2
    outputs = [json.loads(line)["output"] for line in (out / "gsm8k.jsonl").read_text().splitlines()]
    assert len(outputs) == 2 and any(o.strip() for o in outputs)


def test_compare_counts_a_run_given_twice_once(tmp_path, capsys):
    run = _fake_summary(tmp_path / "a", "x", 1, {"gsm8k": 0.3})
    assert main(["compare", str(run), str(run / "summary.json"), "--plot", str(tmp_path / "p.png")]) == 0
    captured = capsys.readouterr()
    assert "given twice" in captured.err
    row = next(line for line in captured.out.splitlines() if line.startswith("| x"))
    assert "| 1 (seeds 1) |" in row and "±" not in row
