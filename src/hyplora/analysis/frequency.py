"""Token frequencies: counts per token id, the rank-frequency curve and the frequency distribution.

For counts c_t (occurrences of token t in a corpus):

* rank-frequency: sort the observed tokens by count, c_(1) >= c_(2) >= ...; the curve is (r, c_(r)).
  Zipf's law is c_(r) ∝ r^(-a).
* frequency distribution: n_k = the number of token types seen exactly k times; the curve is (k, n_k / N)
  with N the number of observed types. A power law p(k) ∝ k^(-γ) here corresponds to a = 1 / (γ - 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def count_tokens(token_id_lists: Iterable[Iterable[int]], vocab_size: int) -> np.ndarray:
    """``counts[t]`` = occurrences of token id t over all lists (int64 array of length ``vocab_size``)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in token_id_lists:
        ids = np.asarray(list(ids), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {vocab_size})")
        counts += np.bincount(ids, minlength=vocab_size)
    return counts


def rank_frequency(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..N and the counts of the N observed tokens in decreasing order."""
    observed = np.sort(counts[counts > 0])[::-1]
    return np.arange(1, observed.size + 1), observed


def frequency_distribution(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct counts k (increasing) and the fraction of observed token types seen exactly k times."""
    observed = counts[counts > 0]
    if observed.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    values, multiplicity = np.unique(observed, return_counts=True)
    return values, multiplicity / observed.size
