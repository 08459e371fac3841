"""Batched generation for evaluation: left-padded batches with attention masks, sorted by prompt length.

Greedy decoding by default (beam search with ``num_beams > 1``). Each sequence stops at EOS (the tokenizer's
and the model generation config's end tokens); the returned text is the decoded new tokens only, up to the
first EOS. On a CUDA out-of-memory error the batch size is halved (for the rest of the run) and the batch
retried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Generated:
    index: int  # position in the prompts given
    text: str  # the new tokens, decoded without special tokens, up to the first EOS
    num_tokens: int  # new tokens generated for this prompt, counting the EOS if one was produced
    stopped: bool  # ended with EOS (False: cut at max_new_tokens)


def eos_token_ids(model, tokenizer) -> list[int]:
    """The end-of-sequence ids: the tokenizer's plus those of the model's generation config."""
    ids: list[int] = []
    candidates = [tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)]
    for value in candidates:
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError("the tokenizer and the model define no EOS token; generation could not stop")
    return ids


def _input_device(model) -> torch.device:
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def _generation_config(model, tokenizer, eos_ids, max_new_tokens, num_beams):
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    # A fresh config: the model's own may ask for sampling (temperature, top_p) which must not leak in.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=num_beams,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
        bos_token_id=tokenizer.bos_token_id,
    )
    cache = getattr(getattr(model, "generation_config", None), "cache_implementation", None)
    if cache is not None:
        config.cache_implementation = cache
    return config


def iter_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    num_beams: int = 1,
    batch_size: int = 64,
    progress: bool | Callable = False,
    add_special_tokens: bool = True,
) -> Iterator[list[Generated]]:
    """Generate for every prompt; yield each finished batch (a list of `Generated`) as soon as it is done.

    Prompts are sorted by token length, longest first, so each batch holds prompts of similar length (little
    padding) and a batch that does not fit in memory shows up at the start. ``progress``: True for a tqdm
    bar, or a callable taking the number of prompts finished by each batch. ``add_special_tokens``: as in
    training (False for chat-template prompts, which already hold their special tokens).
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if num_beams < 1 or batch_size < 1:
        raise ValueError("num_beams and batch_size must be at least 1")
    if not prompts:
        return
    eos_ids = eos_token_ids(model, tokenizer)
    config = _generation_config(model, tokenizer, eos_ids, max_new_tokens, num_beams)
    device = _input_device(model)
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))

    bar = None
    update = progress if callable(progress) else None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), unit="prompt", dynamic_ncols=True)
        update = bar.update
    was_training = model.training
    model.eval()
    try:
        start, size = 0, batch_size
        while start < len(order):
            chunk = order[start : start + size]
            try:
                results = _generate_batch(model, tokenizer, config, eos_ids, device, chunk, encoded)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                results = None  # leave the except block first so the failed batch's tensors can be freed
            if results is None:
                size = max(1, size // 2)
                torch.cuda.empty_cache()
                warnings.warn(f"out of GPU memory: batch size lowered to {size} for the rest of this run")
                continue
            start += len(chunk)
            if update is not None:
                update(len(chunk))
            yield results
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()


def _generate_batch(model, tokenizer, config, eos_ids, device, chunk, encoded) -> list[Generated]:
    pad_id = config.pad_token_id
    width = max(len(encoded[i]) for i in chunk)
    input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, i in enumerate(chunk):  # left padding: the prompt ends at the right edge of every row
        ids = encoded[i]
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
        )
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    new_tokens = sequences[:, width:].tolist()
    eos = set(eos_ids)
    results = []
    for row, i in enumerate(chunk):
        tokens = new_tokens[row]
        stop = next((k for k, token in enumerate(tokens) if token in eos), None)
        kept = tokens if stop is None else tokens[:stop]
        text = tokenizer.decode(kept, skip_special_tokens=True)
        results.append(Generated(i, text, len(kept) + (stop is not None), stop is not None))
    return results


def generate(model, tokenizer, prompts: Sequence[str], **kwargs) -> list[str]:
    """The generated text for each prompt, in the prompts' order (see `iter_generate` for the options)."""
    texts: list[str | None] = [None] * len(prompts)
    for batch in iter_generate(model, tokenizer, prompts, **kwargs):
        for item in batch:
            texts[item.index] = item.text
    return texts  # type: ignore[return-value]
