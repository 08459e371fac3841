"""Prompt templates shared by training and evaluation (the same text must be used by both).

``alpaca``: the Alpaca-style template that LLM-Adapters and the HypLoRA paper use for base models.
``chat``: the tokenizer's own chat template (the instruction, and input if any, as one user turn).
"""

from __future__ import annotations

from ..errors import HypLoraUserError
from .records import Record

TEMPLATES = ("alpaca", "chat")

_ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
_ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def build_prompt(record: Record, template: str = "alpaca", tokenizer=None) -> str:
    """The prompt text (everything before the response) for a record."""
    if template == "alpaca":
        if record.input.strip():
            return _ALPACA_WITH_INPUT.format(instruction=record.instruction, input=record.input)
        return _ALPACA_NO_INPUT.format(instruction=record.instruction)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise HypLoraUserError("template 'chat' needs a tokenizer that has a chat template")
        content = record.instruction if not record.input.strip() else f"{record.instruction}\n\n{record.input}"
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    raise HypLoraUserError(f"unknown prompt template {template!r}; choose from {', '.join(TEMPLATES)}")
