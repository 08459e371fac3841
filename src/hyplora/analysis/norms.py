"""Token frequency against input-embedding norm: binned means, rank correlation, and word-group tables.

The paper's observation: frequent tokens sit near the origin (small |e_t|) and rare ones far from it, like
the root and leaves of a tree embedded in hyperbolic space. We measure it with

* the Spearman rank correlation ρ between c_t and |e_t| over observed tokens (c_t > 0); ρ < 0 means
  frequent tokens have smaller norms;
* mean |e_t| (± std) in logarithmically spaced frequency bins;
* groups of words from general to specific (the paper's Table 1): mean frequency, mean norm and [min, max].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

# The paper's Table 1 groups, from general (function words) to specific (instances).
DEFAULT_TOKEN_GROUPS: dict[str, tuple[str, ...]] = {
    "function words": ("to", "in", "have", "that", "and", "is", "for"),
    "question words": ("how", "much", "many", "time", "cost"),
    "categories": ("animal", "fruit", "number", "color", "size"),
    "instances": ("dog", "cow", "apple", "banana", "380", "480", "purple", "red", "medium", "small", "large"),
}


def embedding_norms(embeddings: torch.Tensor) -> np.ndarray:
    """|e_t|_2 for every row of the (vocab, dim) embedding matrix, as float64."""
    return torch.linalg.vector_norm(embeddings.double(), dim=1).numpy()


def spearman_frequency_norm(counts: np.ndarray, norms: np.ndarray) -> dict:
    """Spearman ρ (and its p-value) between count and norm over observed tokens."""
    from scipy.stats import spearmanr

    observed = counts > 0
    if observed.sum() < 3:
        return {"rho": float("nan"), "p_value": float("nan"), "n_tokens": int(observed.sum())}
    result = spearmanr(counts[observed], norms[observed])
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "n_tokens": int(observed.sum())}


def binned_norm_by_frequency(counts: np.ndarray, norms: np.ndarray, n_bins: int = 20) -> dict:
    """Mean and std of |e_t| of observed tokens in ``n_bins`` log-spaced count bins (empty bins dropped).

    Bin edges run from 1 to max count (inclusive); a token with count c falls in [edge_i, edge_{i+1}).
    """
    observed = counts > 0
    c, r = counts[observed].astype(float), norms[observed]
    if c.size == 0:
        return {"bin_low": [], "bin_high": [], "frequency_geomean": [], "mean_norm": [], "std_norm": [], "n_tokens": []}
    edges = np.logspace(0.0, np.log10(c.max() + 1.0), n_bins + 1)
    index = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n_bins - 1)
    out = {"bin_low": [], "bin_high": [], "frequency_geomean": [], "mean_norm": [], "std_norm": [], "n_tokens": []}
    for b in range(n_bins):
        members = index == b
        if not members.any():
            continue
        out["bin_low"].append(float(edges[b]))
        out["bin_high"].append(float(edges[b + 1]))
        out["frequency_geomean"].append(float(np.exp(np.log(c[members]).mean())))
        out["mean_norm"].append(float(r[members].mean()))
        out["std_norm"].append(float(r[members].std()))
        out["n_tokens"].append(int(members.sum()))
    return out


def whole_word_token(tokenizer, word: str) -> tuple[int, str] | None:
    """The single token that spells ``word`` in running text, if the vocabulary has one.

    Tries " word" first (the form after a space, how a word usually occurs in a prompt), then "word".
    Returns (token id, token string) or None when the word is split into several tokens.
    """
    for form in (" " + word, word):
        ids = tokenizer(form, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return int(ids[0]), tokenizer.convert_ids_to_tokens(int(ids[0]))
    return None


@dataclass(frozen=True)
class TokenEntry:
    word: str
    token_id: int | None  # None: not a single token in this vocabulary
    token: str | None
    frequency: int
    norm: float | None


@dataclass(frozen=True)
class GroupSummary:
    group: str
    level: int  # 0 = most general
    entries: tuple[TokenEntry, ...]
    mean_frequency: float
    mean_norm: float
    min_norm: float
    max_norm: float

    def to_dict(self) -> dict:
        return asdict(self)


def token_entries(tokenizer, words, counts: np.ndarray, norms: np.ndarray) -> list[TokenEntry]:
    entries = []
    for word in words:
        found = whole_word_token(tokenizer, word)
        if found is None or found[0] >= len(norms):
            entries.append(TokenEntry(word, None, None, 0, None))
        else:
            token_id, token = found
            entries.append(TokenEntry(word, token_id, token, int(counts[token_id]), float(norms[token_id])))
    return entries


def token_group_table(tokenizer, counts: np.ndarray, norms: np.ndarray,
                      groups: dict[str, tuple[str, ...]] = DEFAULT_TOKEN_GROUPS) -> list[GroupSummary]:
    """Table 1: per group, mean frequency and mean norm [min–max] over its words that are single tokens."""
    table = []
    for level, (group, words) in enumerate(groups.items()):
        entries = token_entries(tokenizer, words, counts, norms)
        present = [e for e in entries if e.token_id is not None]
        group_norms = np.array([e.norm for e in present]) if present else np.array([np.nan])
        table.append(GroupSummary(
            group=group, level=level, entries=tuple(entries),
            mean_frequency=float(np.mean([e.frequency for e in present])) if present else float("nan"),
            mean_norm=float(np.mean(group_norms)), min_norm=float(np.min(group_norms)),
            max_norm=float(np.max(group_norms)),
        ))
    return table


def number_tokens(tokenizer, counts: np.ndarray, norms: np.ndarray, largest: int = 1000) -> list[TokenEntry]:
    """Whole-word tokens of the integers 0 .. largest-1 that the vocabulary has (e.g. only 0-9 for
    tokenizers that split digits)."""
    return [e for e in token_entries(tokenizer, [str(i) for i in range(largest)], counts, norms)
            if e.token_id is not None]
