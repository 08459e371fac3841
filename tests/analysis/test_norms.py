"""Frequency vs norm: binning, Spearman sign, whole-word token lookup, group table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyplora.analysis.norms import (
    binned_norm_by_frequency, embedding_norms, spearman_frequency_norm, token_group_table, whole_word_token,
)


class ToyTokenizer:
    """Single tokens for " dog", "cat" (no leading-space form) and " the"; everything else splits in two."""

    pieces = {" dog": 1, "cat": 2, " the": 3}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.pieces[text]] if text in self.pieces else [0, 0]}

    def convert_ids_to_tokens(self, token_id):
        return {1: "Ġdog", 2: "cat", 3: "Ġthe"}[token_id]


def test_embedding_norms():
    assert embedding_norms(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).tolist() == [5.0, 0.0]


def test_spearman_negative_when_frequent_tokens_are_short():
    counts = np.array([0, 100, 50, 10, 5, 1])
    norms = np.array([9.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # the unseen token 0 is ignored
    result = spearman_frequency_norm(counts, norms)
    assert result["rho"] == pytest.approx(-1.0)
    assert result["n_tokens"] == 5


def test_binned_means():
    counts = np.array([1, 1, 10, 10, 100, 0])
    norms = np.array([4.0, 6.0, 2.0, 4.0, 1.0, 50.0])
    bins = binned_norm_by_frequency(counts, norms, n_bins=3)
    assert bins["mean_norm"] == pytest.approx([5.0, 3.0, 1.0])
    assert bins["n_tokens"] == [2, 2, 1]
    assert bins["frequency_geomean"] == pytest.approx([1.0, 10.0, 100.0])


def test_whole_word_tokens_and_group_table():
    tokenizer = ToyTokenizer()
    assert whole_word_token(tokenizer, "dog") == (1, "Ġdog")
    assert whole_word_token(tokenizer, "cat") == (2, "cat")
    assert whole_word_token(tokenizer, "banana") is None
    counts = np.array([0, 4, 6, 40])
    norms = np.array([0.0, 3.0, 5.0, 1.0])
    table = token_group_table(tokenizer, counts, norms, {"general": ("the",), "animals": ("dog", "cat", "banana")})
    general, animals = table
    assert (general.level, general.mean_frequency, general.mean_norm) == (0, 40.0, 1.0)
    assert animals.mean_frequency == 5.0
    assert (animals.mean_norm, animals.min_norm, animals.max_norm) == (4.0, 3.0, 5.0)
    assert [e.token_id for e in animals.entries] == [1, 2, None]
