"""Shared fixtures: tiny random models of real architectures, and the embedded SmolLM2 model (loaded once)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU, Triton kernels can only run in Triton's interpreter, which must be chosen before they are
    # decorated (at import). It is used only where a test asks for it (HYPLORA_TRITON=interpret).
    os.environ.setdefault("TRITON_INTERPRET", "1")


def make_tiny_llama(seed: int = 0, vocab_size: int = 128):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def make_tiny_gemma3(seed: int = 0, vocab_size: int = 128):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        sliding_window=16,
    )
    return Gemma3ForCausalLM(config).eval()


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture
def tiny_gemma3():
    return make_tiny_gemma3()


@pytest.fixture(scope="session")
def smollm2_name():
    """The embedded default model's name; fails (not skips) when its package is missing."""
    from hyplora.models import resolve_model

    resolve_model("smollm2-135m")  # raises with the pip command if the package is not installed
    return "smollm2-135m"


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_name):
    from hyplora.models import load_tokenizer

    return load_tokenizer(smollm2_name)


@pytest.fixture(scope="session")
def _smollm2_pristine(smollm2_name):
    from hyplora.models import load_model

    return load_model(smollm2_name).eval()


@pytest.fixture
def smollm2(_smollm2_pristine):
    """A fresh deep copy of SmolLM2-135M for each test (loading the GGUF file takes ~10 s; copying is fast)."""
    import copy

    return copy.deepcopy(_smollm2_pristine)


@pytest.fixture
def no_data_dir(monkeypatch, tmp_path):
    """A fresh machine: $HYPLORA_DATA_DIR names nothing and neither ../shared/data nor ./data exist."""
    monkeypatch.setenv("HYPLORA_DATA_DIR", str(tmp_path / "no-such-data-dir"))
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
