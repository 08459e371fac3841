"""Recipes, the defaults < recipe < flags order, and `hyplora train` errors (exit code 2) and outputs."""

from __future__ import annotations

import json

import pytest

from hyplora.cli import main
from hyplora.errors import HypLoraUserError
from hyplora.training import list_recipes, load_recipe, read_log, resolve_config
from hyplora.training.adapters import build_peft_config


def test_defaults_are_the_papers():
    c = resolve_config({"output_dir": "x"})
    assert (c.rank, c.learning_rate, c.num_epochs, c.batch_size, c.gradient_accumulation_steps) == (32, 3e-4, 3, 4, 4)
    assert (c.warmup_steps, c.cutoff_len, c.lora_alpha, c.method) == (100, 256, 128.0, "hyplora")
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    assert resolve_config({"method": "lora", "output_dir": "x"}).lora_alpha == 64.0
    assert resolve_config({"method": "dora", "output_dir": "x"}).lora_alpha == 64.0
    assert resolve_config({}).output_dir.startswith("runs/hyplora-builtin-")


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_resolves(name):
    c = resolve_config({"recipe": name, "output_dir": "x"})
    assert c.recipe == name
    build_peft_config(c)  # the adapter config can be built (HypLoRA, LoRA or DoRA)


def test_paper_recipes():
    for task in ("math", "commonsense"):
        for method, alpha in (("hyplora", 128), ("lora", 64), ("dora", 64)):
            r = load_recipe(f"paper-{task}-{method}")
            assert (r["rank"], r["lora_alpha"], r["learning_rate"], r["num_epochs"]) == (32, alpha, 3e-4, 3)
            assert (r["batch_size"] * r["gradient_accumulation_steps"], r["warmup_steps"], r["cutoff_len"]) == (16, 100, 256)
            assert r["data"] == task and r["method"] == method
    assert "smollm2-demo" in list_recipes()


def test_flags_override_recipe():
    c = resolve_config({"recipe": "paper-math-lora", "rank": 8, "learning_rate": 1e-3, "output_dir": "x"})
    assert (c.rank, c.learning_rate, c.lora_alpha, c.data) == (8, 1e-3, 64.0, "math")
    # the method's alpha comes from the recipe when it has one, even if the method changes
    assert resolve_config({"recipe": "paper-math-lora", "method": "hyplora", "output_dir": "x"}).lora_alpha == 64.0


def test_recipe_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: 8\nbogus_key: 1\n")
    with pytest.raises(HypLoraUserError, match="bogus_key"):
        resolve_config({"recipe": str(bad)})
    bad.write_text("rank: eight\n")
    with pytest.raises(HypLoraUserError, match="rank must be an integer"):
        resolve_config({"recipe": str(bad)})
    bad.write_text("rank: [8\n")
    with pytest.raises(HypLoraUserError, match="not valid YAML"):
        resolve_config({"recipe": str(bad)})
    with pytest.raises(HypLoraUserError, match="unknown recipe"):
        resolve_config({"recipe": "no-such-recipe"})
    with pytest.raises(HypLoraUserError, match="unknown method"):
        resolve_config({"method": "qlora"})
    with pytest.raises(HypLoraUserError, match="dropout"):
        resolve_config({"lora_dropout": 1.5})


def _cli(args, capsys):
    code = main(["train", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _small_args(run: dict) -> list[str]:
    return [
        "--model", run["model"], "--data", "builtin", "--builtin-size", "40", "--max-train-samples", "16",
        "--no-dedup", "--cutoff-len", "128", "--method", "lora", "--rank", "4", "--alpha", "8", "--lr", "0.01",
        "--batch-size", "4", "--grad-accum", "1", "--warmup-steps", "0", "--save-steps", "4",
        "--save-total-limit", "3", "--seed", "7", "--no-progress",
    ]


def test_cli_bad_inputs_exit_2(small_run, tmp_path, capsys):
    args = _small_args(small_run)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"},\n{"output": "no instruction"}]')
    code, _, err = _cli([*args, "--data", str(bad), "--output-dir", str(tmp_path / "o1")], capsys)
    assert code == 2 and "hyplora train: error:" in err and "bad.json" in err and "record 1" in err
    code, _, err = _cli([*args, "--data", "nonsense", "--output-dir", str(tmp_path / "o2")], capsys)
    assert code == 2 and "unknown training data" in err
    code, _, err = _cli([*args, "--model", "no-such-model", "--output-dir", str(tmp_path / "o3")], capsys)
    assert code == 2 and "unknown model" in err
    code, _, err = _cli([*args, "--target-modules", "nope_proj", "--output-dir", str(tmp_path / "o4")], capsys)
    assert code == 2 and "not found in the model" in err
    code, _, err = _cli(["--resume"], capsys)
    assert code == 2 and "--resume needs --output-dir" in err
    code, _, err = _cli(["--recipe", "nope"], capsys)
    assert code == 2 and "unknown recipe" in err


def test_cli_train_then_resume_reaches_same_final_loss(small_run, tmp_path, capsys):
    out = tmp_path / "cli-run"
    code, stdout, _ = _cli([*_small_args(small_run), "--max-steps", "8", "--output-dir", str(out)], capsys)
    assert code == 0
    for name in ("adapter", "train_log.jsonl", "loss_curve.png"):
        assert str(out / name) in stdout
    full = read_log(out / "train_log.jsonl")
    # a crash after step 6: the last checkpoint is step 4, the run's later outputs are gone
    import shutil

    shutil.rmtree(out / "checkpoints" / "checkpoint-8")
    shutil.rmtree(out / "adapter")
    code, _, err = _cli(["--output-dir", str(out)], capsys)  # without --resume: refuses to overwrite
    assert code == 2 and "--resume" in err
    code, stdout, _ = _cli(["--output-dir", str(out), "--resume", "--no-progress"], capsys)  # flags from config.json
    assert code == 0 and (out / "adapter" / "adapter_model.safetensors").is_file()
    resumed = read_log(out / "train_log.jsonl")
    assert [e["step"] for e in resumed] == list(range(1, 9))
    assert resumed[-1]["loss"] == pytest.approx(full[-1]["loss"], rel=1e-5)
    assert json.loads((out / "summary.json").read_text())["resumed_from"].endswith("checkpoint-4")


def test_list_recipes(capsys):
    code, out, _ = _cli(["--list-recipes"], capsys)
    assert code == 0 and "smollm2-demo" in out and "paper-math-hyplora" in out
