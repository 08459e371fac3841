"""Dataset specs, record texts, input-embedding access and final hidden states at the text's positions."""

from __future__ import annotations

import json

import pytest
import torch

from hyplora.analysis.corpus import load_dataset_texts, parse_dataset_spec, record_text
from hyplora.analysis.embeddings import final_hidden_states, input_embedding_matrix
from hyplora.data import Record
from hyplora.errors import HypLoraUserError


def test_dataset_spec_expands_groups_keeps_order_and_files():
    assert parse_dataset_spec("gsm8k, math") == ["gsm8k", "mawps", "svamp", "aqua"]
    assert parse_dataset_spec("mine.json,boolq") == ["mine.json", "boolq"]
    with pytest.raises(HypLoraUserError, match="unknown task"):
        parse_dataset_spec("gsm9k")
    with pytest.raises(HypLoraUserError, match="no datasets"):
        parse_dataset_spec(" , ")


def test_record_text_and_file_datasets(tmp_path):
    assert record_text(Record("Solve it.", "2 + 2")) == "Solve it.\n2 + 2"
    assert record_text(Record("Solve it.", "  ")) == "Solve it."
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"instruction": f"q{i}", "input": ""} for i in range(5)]))
    (dataset,) = load_dataset_texts(str(path), max_texts=3)
    assert dataset.name == "mine" and dataset.texts == ["q0", "q1", "q2"]
    with pytest.raises(HypLoraUserError, match="at least 1"):
        load_dataset_texts(str(path), max_texts=0)


def test_input_embedding_matrix(tiny_llama):
    weight = input_embedding_matrix(tiny_llama)
    assert weight.shape == (128, 32) and not weight.requires_grad
    assert torch.equal(weight, tiny_llama.get_input_embeddings().weight)
    with pytest.raises(HypLoraUserError, match="no input-embedding matrix"):
        input_embedding_matrix(torch.nn.Linear(2, 2))


class BosTokenizer:
    """Ids 10.. for each character, with a BOS id 1 in front when special tokens are asked for."""

    def __call__(self, text, return_tensors=None, add_special_tokens=True, return_special_tokens_mask=False):
        ids = ([1] if add_special_tokens else []) + [10 + (ord(c) % 100) for c in text]
        out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        if return_special_tokens_mask:
            out["special_tokens_mask"] = torch.tensor([[1 if add_special_tokens and i == 0 else 0 for i in range(len(ids))]])
        return out


def test_final_hidden_states_drop_special_positions(tiny_llama):
    tokenizer = BosTokenizer()
    states = final_hidden_states(tiny_llama, tokenizer, "abcde")
    encoded = tokenizer("abcde")
    with torch.no_grad():
        full = tiny_llama(**encoded, output_hidden_states=True).hidden_states[-1][0]
    assert states.shape == (5, 32)
    assert torch.allclose(states, full[1:])
