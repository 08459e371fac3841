"""CPU training runs on a tiny random Llama: every method lowers the loss and fills the output directory."""

from __future__ import annotations

import json

import pytest
import torch

from hyplora.training import read_log, resolve_config, train


def _run(overrides, **kwargs):
    return train(resolve_config(overrides), log=lambda *_: None, disable_tqdm=True, **kwargs)


@pytest.mark.parametrize("method", ["lora", "dora", "hyplora"])
def test_training_lowers_loss(small_run, method):
    result = _run({**small_run, "method": method, "max_steps": 16, "save_steps": 100, "learning_rate": 0.05})
    losses = [e["loss"] for e in read_log(result.log_path)]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.985 * sum(losses[:4]) / 4, losses
    assert result.final_loss == losses[-1] and result.global_step == 16


def test_output_directory_contents(small_run):
    result = _run({**small_run, "method": "hyplora"})
    out = result.output_dir
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "hyplora" and config["lora_alpha"] == 8 and config["seed"] == 7
    assert config["versions"]["torch"] == torch.__version__.split("+")[0] or config["versions"]["torch"]
    assert config["effective_batch_size"] == 4
    stats = json.loads((out / "data_stats.json").read_text())
    assert stats["used"] == 16 and stats["tokenization"]["examples"] == 16
    assert "truncated" in stats["tokenization"] and "dedup" in stats
    log = read_log(out / "train_log.jsonl")
    assert [e["step"] for e in log] == list(range(1, 9))
    for entry in log:
        assert {"step", "loss", "lr", "epoch", "curvature"} <= set(entry)
        assert entry["curvature"]["layers"] == 10  # 5 target modules x 2 layers
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "training_config.json").read_text())["method"] == "hyplora"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "HYPLORA"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 8 and summary["final_loss"] == log[-1]["loss"]
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-4", "checkpoint-8"]  # no staging leftovers


def test_saved_adapter_reloads(small_run, tiny_model_dir):
    from hyplora import load_adapter
    from hyplora.data.records import Record
    from hyplora.data.tokenization import tokenize_record
    from hyplora.models import load_model, load_tokenizer

    result = _run({**small_run, "method": "hyplora", "lora_dropout": 0.0})
    tok = load_tokenizer(tiny_model_dir)
    ex = tokenize_record(Record("What is 2 + 2?", "", "4", "4"), tok)
    ids = torch.tensor([ex["input_ids"]])
    reloaded = load_adapter(load_model(tiny_model_dir), result.adapter_dir).eval()
    plain = load_model(tiny_model_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(reloaded(ids).logits, plain(ids).logits)  # the trained adapter changes outputs


def test_lora_adapter_loads_with_stock_peft(small_run, tiny_model_dir):
    from peft import PeftModel

    from hyplora.models import load_model

    result = _run({**small_run, "method": "dora", "max_steps": 2})
    model = PeftModel.from_pretrained(load_model(tiny_model_dir), str(result.adapter_dir))
    assert any("lora_magnitude_vector" in n for n, _ in model.named_parameters())


def test_seed_makes_runs_identical(small_run, tmp_path):
    a = _run({**small_run, "max_steps": 3, "output_dir": str(tmp_path / "a")})
    b = _run({**small_run, "max_steps": 3, "output_dir": str(tmp_path / "b")})
    assert [e["loss"] for e in read_log(a.log_path)] == [e["loss"] for e in read_log(b.log_path)]


def test_bf16_and_gradient_checkpointing_on_cpu(small_run):
    result = _run({**small_run, "method": "hyplora", "precision": "bf16", "gradient_checkpointing": True,
                   "max_steps": 2})
    log = read_log(result.log_path)
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in log)


def test_fp16_without_gpu_is_a_user_error(small_run):
    from hyplora.errors import HypLoraUserError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(HypLoraUserError, match="fp16 needs a GPU"):
        _run({**small_run, "precision": "fp16"})


@pytest.mark.slow
def test_torch_compile_trains_like_eager(small_run, tmp_path):
    """--torch-compile (the Trainer's torch.compile, inductor) follows the eager run's losses and saves the same
    adapter files."""
    torch._dynamo.reset()
    # one batch holds all 16 examples, so every step has the same shape and compiles once
    overrides = {**small_run, "method": "hyplora", "lora_dropout": 0.0, "max_steps": 3, "save_steps": 100,
                 "max_train_samples": 16, "batch_size": 16}
    eager = _run({**overrides, "output_dir": str(tmp_path / "eager")})
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = _run({**overrides, "output_dir": str(tmp_path / "compiled"), "torch_compile": True})
    assert counters["stats"]["unique_graphs"] >= 1  # the model really went through torch.compile
    eager_losses = [e["loss"] for e in read_log(eager.log_path)]
    compiled_losses = [e["loss"] for e in read_log(compiled.log_path)]
    assert len(compiled_losses) == 3
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert sorted(p.name for p in compiled.adapter_dir.iterdir()) == sorted(p.name for p in eager.adapter_dir.iterdir())
    assert json.loads((compiled.output_dir / "config.json").read_text())["torch_compile"] is True
