"""A short HypLoRA run on the embedded SmolLM2-135M (CPU): the loss goes down and the adapter is saved."""

from __future__ import annotations

import json

import pytest

from hyplora.training import read_log, resolve_config, train


@pytest.mark.slow
def test_smollm2_hyplora_few_steps_lower_the_loss(smollm2, smollm2_tokenizer, tmp_path):
    config = resolve_config({
        "model": "smollm2-135m", "data": "builtin", "builtin_size": 20, "max_train_samples": 2, "dedup": False,
        "cutoff_len": 112, "method": "hyplora", "rank": 4, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"], "learning_rate": 5e-3, "batch_size": 2,
        "gradient_accumulation_steps": 1, "warmup_steps": 0, "lr_scheduler": "constant", "max_steps": 5,
        "save_steps": 100, "seed": 0, "output_dir": str(tmp_path / "run"),
    })
    result = train(config, model=smollm2, tokenizer=smollm2_tokenizer, log=lambda *_: None, disable_tqdm=True)
    losses = [e["loss"] for e in read_log(result.log_path)]
    assert len(losses) == 5
    assert losses[-1] < losses[0] - 0.05, losses  # the same two examples every step: the loss must fall
    assert all("curvature" in e for e in read_log(result.log_path))
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "HYPLORA" and adapter_config["r"] == 4
    assert "quantization_config" not in json.loads((tmp_path / "run" / "config.json").read_text())
