"""Masking (labels are -100 exactly on prompt tokens), EOS, truncation, templates, the collator."""

from __future__ import annotations

import pytest

from hyplora.data.prompts import build_prompt
from hyplora.data.records import Record
from hyplora.data.tokenization import (
    IGNORE_INDEX, CausalLMCollator, response_text, tokenize_record, tokenize_records,
)

REC = Record("Tom has 3 apples and buys 4 more. How many apples?", "", "3 + 4 = 7. The answer is 7.", "7")


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_labels_masked_exactly_on_prompt(smollm2_tokenizer, template):
    tok = smollm2_tokenizer
    ex = tokenize_record(REC, tok, template=template, cutoff_len=512)
    prompt_ids = tok(build_prompt(REC, template, tok), add_special_tokens=(template != "chat"))["input_ids"]
    response_ids = tok(response_text(REC), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(prompt_ids)
    assert ex["input_ids"] == list(prompt_ids) + response_ids
    assert ex["labels"][:n] == [IGNORE_INDEX] * n
    assert ex["labels"][n:] == response_ids  # every response token (and EOS) is supervised
    assert IGNORE_INDEX not in ex["labels"][n:]
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])
    assert ex["input_ids"][-1] == tok.eos_token_id and not ex["truncated"]
    assert tok.decode(ex["input_ids"][n:-1]) == response_text(REC)


def test_alpaca_template_rendering():
    assert build_prompt(REC).endswith(f"### Instruction:\n{REC.instruction}\n\n### Response:\n")
    with_input = build_prompt(Record("Do it.", "the context"))
    assert "### Input:\nthe context\n\n### Response:\n" in with_input


def test_chat_template_rendering(smollm2_tokenizer):
    prompt = build_prompt(REC, "chat", smollm2_tokenizer)
    assert REC.instruction in prompt and prompt.rstrip().endswith("assistant")


def test_response_falls_back_to_answer():
    assert response_text(Record("q", answer="42")) == "The answer is 42."


def test_truncation_counts_and_drops(smollm2_tokenizer):
    tok = smollm2_tokenizer
    long_answer = Record("Short?", "", "word " * 300, "x")
    long_prompt = Record("word " * 300, "", "yes", "yes")
    data = tokenize_records([REC, long_answer, long_prompt], tok, cutoff_len=64)
    assert data.stats["truncated"] == 2
    assert data.stats["dropped_prompt_fills_cutoff"] == 1  # no response token survived the cutoff
    assert data.stats["examples"] == 2
    assert all(len(e["input_ids"]) <= 64 for e in data.examples)
    truncated = data.examples[1]
    assert len(truncated["input_ids"]) == 64 and truncated["labels"][-1] != IGNORE_INDEX


def test_collator_pads_right():
    collate = CausalLMCollator(pad_token_id=0)
    batch = collate([
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
