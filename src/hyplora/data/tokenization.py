"""Turning records into training examples: prompt + response tokens, labels masked to -100 on the prompt.

The prompt (`hyplora.data.prompts.build_prompt`, the same text evaluation uses) and the response are tokenized
separately and concatenated, then the end-of-sequence token is appended. Labels are -100 on exactly the prompt
tokens, so the loss covers only the response and EOS. Sequences longer than the cutoff are truncated on the
right and counted; a record whose prompt alone fills the cutoff keeps no response token and is dropped (and
counted), since it would contribute nothing but padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .prompts import build_prompt
from .records import Record

IGNORE_INDEX = -100


def response_text(record: Record) -> str:
    """The target text: the record's output, or "The answer is ANSWER." when it has only an answer."""
    if record.output.strip():
        return record.output.strip()
    return f"The answer is {record.answer.strip()}."


def _prompt_ids(tokenizer, prompt: str, template: str) -> list[int]:
    # A chat template already writes its own special tokens (BOS included, where the model has one).
    return list(tokenizer(prompt, add_special_tokens=(template != "chat"))["input_ids"])


def tokenize_record(record: Record, tokenizer, *, template: str = "alpaca", cutoff_len: int = 256) -> dict:
    """One example: ``input_ids``, ``attention_mask``, ``labels`` and ``truncated`` (bool)."""
    prompt = build_prompt(record, template, tokenizer)
    prompt_ids = _prompt_ids(tokenizer, prompt, template)
    response_ids = list(tokenizer(response_text(record), add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
    input_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    truncated = len(input_ids) > cutoff_len
    input_ids, labels = input_ids[:cutoff_len], labels[:cutoff_len]
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "truncated": truncated,
    }


@dataclass
class TokenizedData:
    examples: list[dict]
    stats: dict = field(default_factory=dict)


def tokenize_records(records: list[Record], tokenizer, *, template: str = "alpaca", cutoff_len: int = 256) -> TokenizedData:
    """Tokenize every record; statistics count truncated and dropped (no response token left) records."""
    if cutoff_len < 2:
        from ..errors import HypLoraUserError

        raise HypLoraUserError(f"cutoff length must be at least 2 tokens, got {cutoff_len}")
    examples, truncated, dropped, lengths, response_tokens = [], 0, 0, [], 0
    for record in records:
        example = tokenize_record(record, tokenizer, template=template, cutoff_len=cutoff_len)
        truncated += example.pop("truncated")
        supervised = sum(1 for label in example["labels"] if label != IGNORE_INDEX)
        if supervised == 0:
            dropped += 1
            continue
        response_tokens += supervised
        lengths.append(len(example["input_ids"]))
        examples.append(example)
    stats = {
        "template": template,
        "cutoff_len": cutoff_len,
        "examples": len(examples),
        "truncated": truncated,
        "dropped_prompt_fills_cutoff": dropped,
        "tokens": sum(lengths),
        "response_tokens": response_tokens,
        "mean_length": round(sum(lengths) / len(lengths), 2) if lengths else 0.0,
        "max_length": max(lengths) if lengths else 0,
    }
    return TokenizedData(examples=examples, stats=stats)


class CausalLMCollator:
    """Right-pads a batch: pad token in ``input_ids``, 0 in ``attention_mask``, -100 in ``labels``."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
