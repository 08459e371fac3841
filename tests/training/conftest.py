"""A tiny random Llama saved as a model directory (with the SmolLM2 tokenizer), and a small-run config."""

from __future__ import annotations

import pytest


def _word_tokenizer():
    """A word-level tokenizer (~150 tokens) fitted to the synthetic data: keeps the tiny model's vocabulary
    small, so CPU training steps take milliseconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from hyplora.data.prompts import build_prompt
    from hyplora.data.synthetic import synthetic_records

    texts = [build_prompt(r) + r.output for r in synthetic_records("train", 300) + synthetic_records("test", 50)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation(),
    ])
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A local Hugging Face model directory: a random 2-layer Llama (vocabulary 256) and a word-level tokenizer."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from conftest import make_tiny_llama  # the shared fixtures module
    finally:
        sys.path.pop(0)
    tokenizer = _word_tokenizer()
    assert len(tokenizer) <= 256
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(seed=0, vocab_size=256).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def small_run(tiny_model_dir, tmp_path):
    """Overrides for a few-second CPU run on the built-in synthetic data."""
    return {
        "model": tiny_model_dir,
        "data": "builtin",
        "builtin_size": 40,
        "max_train_samples": 16,
        "dedup": False,
        "cutoff_len": 128,
        "method": "lora",
        "rank": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.05,
        "learning_rate": 0.01,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
        "max_steps": 8,
        "save_steps": 4,
        "save_total_limit": 3,
        "logging_steps": 1,
        "seed": 7,
        "output_dir": str(tmp_path / "run"),
    }
