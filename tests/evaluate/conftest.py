"""Fixtures for the evaluation tests: a small tokenizer + tiny random Llama pair, and small data folders."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Tiny models run faster on one thread, and far faster when other jobs share the CPU."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_pair(smollm2_tokenizer):
    """(model, tokenizer): SmolLM2's tokenizer and a tiny random Llama with a matching vocabulary."""
    model = make_tiny_llama(vocab_size=len(smollm2_tokenizer))
    return model, smollm2_tokenizer


def make_tiny_llama(seed: int = 0, vocab_size: int = 128, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_pair):
    """The tiny model and tokenizer saved as a Hugging Face model directory (usable as --model)."""
    model, tokenizer = tiny_pair
    path = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _write_records(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture
def write_records():
    """write_records(path, list_of_dicts): an LLM-Adapters JSON file."""
    return _write_records


@pytest.fixture
def small_data(tmp_path):
    """A data directory with short versions of a few benchmark files."""
    root = tmp_path / "data"
    _write_records(root / "test" / "gsm8k.json", [
        {"instruction": f"What is {a} plus {b}?", "input": "", "output": "", "answer": f"{a + b}.0"}
        for a, b in [(1, 2), (3, 4), (10, 20), (7, 8), (100, 1), (5, 5)]
    ])
    _write_records(root / "test" / "boolq.json", [
        {"instruction": f"Is {n} even? Answer format: true/false", "input": "", "output": "",
         "answer": "true" if n % 2 == 0 else "false"}
        for n in range(5)
    ])
    _write_records(root / "test" / "AQuA.json", [
        {"instruction": f"Pick {x}. Answer Choices: (A) 1 (B) 2 (C) 3 (D) 4 (E) 5", "input": "", "output": "",
         "answer": x}
        for x in "ABCD"
    ])
    return root
