"""Token counting on a fixed tiny corpus, and the rank-frequency and frequency-distribution curves."""

from __future__ import annotations

import numpy as np
import pytest

from hyplora.analysis.corpus import DatasetTexts, tokenize_datasets
from hyplora.analysis.frequency import count_tokens, frequency_distribution, rank_frequency
from hyplora.errors import HypLoraUserError


class WhitespaceTokenizer:
    """Token id = index of the word in a fixed vocabulary; ids of unknown words raise."""

    vocabulary = ["<unk>", "the", "cat", "sat", "on", "mat", "a", "dog"]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocabulary.index(word) for word in text.split()]}


CORPUS = ["the cat sat on the mat", "the dog sat", "a cat"]


def test_counts_of_a_fixed_corpus():
    datasets = tokenize_datasets([DatasetTexts("tiny", CORPUS)], WhitespaceTokenizer())
    counts = count_tokens(datasets[0].token_ids, vocab_size=8)
    #                         unk the cat sat on mat a dog
    assert counts.tolist() == [0, 3, 2, 2, 1, 1, 1, 1]
    assert datasets[0].n_tokens == 11


def test_rank_frequency_and_distribution():
    counts = np.array([0, 3, 2, 2, 1, 1, 1, 1])
    ranks, ordered = rank_frequency(counts)
    assert ranks.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert ordered.tolist() == [3, 2, 2, 1, 1, 1, 1]
    values, fractions = frequency_distribution(counts)
    assert values.tolist() == [1, 2, 3]
    assert fractions.tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_empty_and_out_of_range():
    values, fractions = frequency_distribution(np.zeros(5, dtype=int))
    assert values.size == 0 and fractions.size == 0
    with pytest.raises(ValueError, match="outside the vocabulary"):
        count_tokens([[0, 9]], vocab_size=8)


def test_text_without_tokens_is_a_user_error():
    with pytest.raises(HypLoraUserError, match="record 1 has no tokens"):
        tokenize_datasets([DatasetTexts("tiny", ["the cat", "   "])], WhitespaceTokenizer())
