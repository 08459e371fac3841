"""Batched, left-padded generation gives the same greedy output as one prompt at a time, and stops at EOS."""

from __future__ import annotations

import copy

import pytest
import torch

from hyplora.evaluate.generation import eos_token_ids, generate, iter_generate

PROMPTS = [
    "Below is an instruction. ### Instruction:\nWhat is 2 + 3?\n\n### Response:\n",
    "Hi",
    "A much longer prompt, with quite a few more words in it than the others, so that the batch needs padding.",
    "Tom has 7 cats and buys 5 more. How many cats does he have?",
    "x",
]


def _unbatched(model, tokenizer, prompts, **kwargs):
    return [generate(model, tokenizer, [p], batch_size=1, **kwargs)[0] for p in prompts]


def test_batched_equals_unbatched_tiny_llama_float64(tiny_pair):
    model, tokenizer = tiny_pair
    model = copy.deepcopy(model).double()
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=8)
    assert batched == _unbatched(model, tokenizer, PROMPTS, max_new_tokens=12)
    assert all(isinstance(text, str) and text for text in batched)
    # batches of 2 (sorted by length, so different groupings) agree too
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=2) == batched


def test_batched_equals_unbatched_tiny_llama_float32(tiny_pair):
    model, tokenizer = tiny_pair
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=5)
    assert batched == _unbatched(model, tokenizer, PROMPTS, max_new_tokens=10)


def test_without_attention_mask_batched_output_would_differ(tiny_pair):
    """The check above can fail: generating a padded batch with no mask (the reference harness's bug) changes
    the output of the short prompts."""
    model, tokenizer = tiny_pair
    model = copy.deepcopy(model).double()
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS[:3]]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    batch = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    with torch.inference_mode():
        out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=8,
                             do_sample=False, pad_token_id=pad)
    unmasked = [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
    assert unmasked != _unbatched(model, tokenizer, PROMPTS[:3], max_new_tokens=8)


def test_batched_equals_unbatched_tiny_gemma3(smollm2_tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(smollm2_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512, sliding_window=16,
    )
    model = Gemma3ForCausalLM(config).double().eval()
    batched = generate(model, smollm2_tokenizer, PROMPTS, max_new_tokens=8, batch_size=8)
    assert batched == _unbatched(model, smollm2_tokenizer, PROMPTS, max_new_tokens=8)


def test_stops_at_eos_and_returns_only_new_tokens(tiny_pair):
    model, tokenizer = tiny_pair
    model = copy.deepcopy(model).double()
    prompt = PROMPTS[0]
    ids = tokenizer(prompt)["input_ids"]
    with torch.inference_mode():
        full = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=None)[0, len(ids):].tolist()
    # declare the 4th greedy token to be an end-of-sequence token of the model
    stop_token = full[3]
    first = full.index(stop_token)
    model.generation_config.eos_token_id = stop_token
    assert stop_token in eos_token_ids(model, tokenizer)
    results = [item for batch in iter_generate(model, tokenizer, [prompt, PROMPTS[2]], max_new_tokens=8,
                                               batch_size=2) for item in batch]
    mine = next(item for item in results if item.index == 0)
    assert mine.stopped
    assert mine.num_tokens == first + 1  # the tokens before EOS, and EOS
    assert mine.text == tokenizer.decode(full[:first], skip_special_tokens=True)
    assert prompt not in mine.text


def test_max_new_tokens_and_order(tiny_pair):
    model, tokenizer = tiny_pair
    results = [item for batch in iter_generate(model, tokenizer, PROMPTS, max_new_tokens=3, batch_size=2)
               for item in batch]
    assert sorted(item.index for item in results) == list(range(len(PROMPTS)))
    # longest prompt first
    lengths = [len(tokenizer(PROMPTS[item.index])["input_ids"]) for item in results]
    assert lengths == sorted(lengths, reverse=True)
    for item in results:
        assert item.num_tokens <= 3
        assert item.stopped or item.num_tokens == 3


def test_progress_callback(tiny_pair):
    model, tokenizer = tiny_pair
    seen = []
    generate(model, tokenizer, PROMPTS, max_new_tokens=2, batch_size=2, progress=seen.append)
    assert seen == [2, 2, 1]


def test_bad_arguments(tiny_pair):
    model, tokenizer = tiny_pair
    with pytest.raises(ValueError):
        generate(model, tokenizer, PROMPTS, max_new_tokens=0)
    assert generate(model, tokenizer, [], max_new_tokens=2) == []


@pytest.mark.slow
def test_batched_equals_unbatched_smollm2(smollm2, smollm2_tokenizer):
    from hyplora.data import Record
    from hyplora.data.prompts import build_prompt

    prompts = [
        build_prompt(Record("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                            "clips in May. How many clips did Natalia sell altogether in April and May?")),
        build_prompt(Record("What is 12 times 3?")),
        build_prompt(Record("Please answer the following question with true or false, question: is the sky "
                            "blue?\n\nAnswer format: true/false")),
        build_prompt(Record("Name a prime number.")),
    ]
    batched = generate(smollm2, smollm2_tokenizer, prompts, max_new_tokens=16, batch_size=4)
    assert batched == _unbatched(smollm2, smollm2_tokenizer, prompts, max_new_tokens=16)
    assert any(text.strip() for text in batched)


def test_out_of_memory_lowers_the_batch_size(tiny_pair, monkeypatch):
    from hyplora.evaluate import generation as gen

    model, tokenizer = tiny_pair
    expected = generate(model, tokenizer, PROMPTS, max_new_tokens=3, batch_size=1)
    real = gen._generate_batch
    sizes = []

    def limited(model, tokenizer, config, eos_ids, device, chunk, encoded):
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, tokenizer, config, eos_ids, device, chunk, encoded)

    monkeypatch.setattr(gen, "_generate_batch", limited)
    with pytest.warns(UserWarning, match="batch size lowered to 2"):
        texts = generate(model, tokenizer, PROMPTS, max_new_tokens=3, batch_size=8)
    assert texts == expected
    assert sizes == [5, 4, 2, 2, 1]  # 8 (5 prompts) -> 4 -> 2, then stays at 2


def test_beam_search_batched_equals_unbatched(tiny_pair):
    model, tokenizer = tiny_pair
    model = copy.deepcopy(model).double()
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=8, num_beams=3)
    assert batched == _unbatched(model, tokenizer, PROMPTS, max_new_tokens=6, num_beams=3)
    assert batched != generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=8)  # beams do change it
