"""End to end on the real embedded model (SmolLM2-135M from its GGUF file, CPU, short sequence)."""

from __future__ import annotations

import copy

import peft
import pytest
import torch

from hyplora import HypLoraConfig, HypLoraLinear, load_adapter

pytestmark = pytest.mark.slow


def test_attach_train_save_reload_identical_logits(smollm2, smollm2_tokenizer, tmp_path):
    pristine = copy.deepcopy(smollm2)
    config = HypLoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM",
                           target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"])
    model = peft.get_peft_model(smollm2, config)
    assert sum(isinstance(m, HypLoraLinear) for m in model.modules()) == 5 * 30
    batch = smollm2_tokenizer(["Tom has 3 apples and buys 4 more. The answer is 7."], return_tensors="pt")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(3):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    layer = next(m for m in model.modules() if isinstance(m, HypLoraLinear))
    assert layer.curvature("default").item() != 1.0  # the curvature was trained too

    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    reloaded = load_adapter(pristine, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=0)
