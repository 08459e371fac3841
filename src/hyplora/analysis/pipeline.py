"""`hyplora analyze`: token frequency, frequency vs norm, δ-hyperbolicity and the hierarchy picture.

Everything that can be wrong with the input (datasets, texts, model, adapter, output path) is checked
before anything is written, and the results are computed in memory first, so bad input leaves no
half-written output directory.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import HypLoraUserError
from ..models import DEFAULT_MODEL
from . import plots
from .corpus import DEFAULT_DATASETS, TokenizedDataset, load_dataset_texts, tokenize_datasets
from .delta import delta_at_base_point, delta_hyperbolicity, pairwise_distances, torch_threads
from .embeddings import final_hidden_states, input_embedding_matrix
from .frequency import count_tokens, frequency_distribution, rank_frequency
from .norms import (
    binned_norm_by_frequency, embedding_norms, number_tokens, spearman_frequency_norm, token_group_table,
)
from .powerlaw_fit import fit_power_law
from .references import calibrate
from .report import markdown_report, write_json_atomically, write_text_atomically

FIGURES = {
    "rank_frequency": "rank_frequency.png",
    "frequency_distribution": "frequency_distribution.png",
    "frequency_vs_norm": "frequency_vs_norm.png",
    "delta_hyperbolicity": "delta_hyperbolicity.png",
    "hierarchy": "hierarchy.png",
}
JSON_NAME = "analysis.json"
REPORT_NAME = "report.md"


@dataclass
class AnalysisConfig:
    output_dir: str | os.PathLike
    model: str = DEFAULT_MODEL
    datasets: str = DEFAULT_DATASETS
    data_dir: str | os.PathLike | None = None
    adapter: str | os.PathLike | None = None
    max_prompts: int | None = None  # per dataset; None = all
    hidden_states: bool = True  # δ of the final hidden layer (one forward pass per prompt)
    reference_points: int = 200
    reference_samples: int = 5
    seed: int = 0
    progress: bool = True
    # torch intra-op threads for the forward passes (δ always uses one). One is the default because on a
    # shared 2-core machine two threads made each forward pass ~50x slower whenever another process was busy.
    threads: int | None = 1


def _check_output_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise HypLoraUserError(f"--output-dir {path} exists and is not a directory")
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent if not path.exists() else path, os.W_OK):
        raise HypLoraUserError(f"--output-dir {path} is not writable")


def _load_models(config: AnalysisConfig):
    from ..models import load_model, load_tokenizer

    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model).eval()
    adapted = None
    if config.adapter is not None:
        adapter_dir = Path(config.adapter).expanduser()
        if not adapter_dir.is_dir():
            raise HypLoraUserError(f"--adapter {adapter_dir} is not a directory")
        from .. import load_adapter

        # A copy, so the base model's states stay those of the base model.
        adapted = load_adapter(copy.deepcopy(model), adapter_dir).eval()
    return tokenizer, model, adapted


def prompt_delta(points: torch.Tensor) -> tuple[float, float, int]:
    """(exact δ_rel, δ_rel at the first point as base, number of points) of one prompt's vectors.

    The second value is the fixed-base-point δ_w of Khrulkov et al. (base = the prompt's first token), the
    quantity the reference code reports; it is a lower bound of the exact δ (δ_w <= δ <= 2 δ_w).
    """
    with torch_threads(1):
        distances = pairwise_distances(points.detach())
        exact = delta_hyperbolicity(distances)
        at_first = 2.0 * delta_at_base_point(distances, 0) / exact.diameter if exact.diameter > 0 else float("nan")
    return exact.relative_delta, at_first, exact.n_points


def _first_occurrences(ids: list[int]) -> list[int]:
    # Repeated tokens are the same point (they change neither δ nor diam); keep the first token first,
    # since it is the base point of the fixed-base-point variant.
    return list(dict.fromkeys(ids))


def _finite_stats(values: list[float]) -> dict:
    finite = np.array([v for v in values if v == v], dtype=float)
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size else float("nan"),
        "median": float(np.median(finite)) if finite.size else float("nan"),
    }


def _delta_summary(values: list[float], at_first: list[float], n_points: list[int]) -> dict:
    finite = np.array([v for v in values if v == v], dtype=float)
    return {
        "n_prompts": len(values),
        "n_undefined": int(len(values) - finite.size),  # prompts with a single distinct point (diam = 0)
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size else float("nan"),
        "median": float(np.median(finite)) if finite.size else float("nan"),
        "relative_delta": values,
        "n_points": n_points,
        "first_token_base": {**_finite_stats(at_first), "relative_delta": at_first},
    }


def delta_of_input_embeddings(datasets: list[TokenizedDataset], embeddings: torch.Tensor,
                              progress: bool = True) -> dict:
    """Per dataset, δ_rel of each prompt's token input embeddings (distinct tokens; see delta.py)."""
    out = {}
    for dataset in datasets:
        values, at_first, sizes = [], [], []
        with torch_threads(1):  # set once for the loop rather than per prompt
            for ids in tqdm(dataset.token_ids, desc=f"δ input embeddings · {dataset.name}", disable=not progress):
                exact, first, n = prompt_delta(embeddings[torch.tensor(_first_occurrences(ids))])
                values.append(exact)
                at_first.append(first)
                sizes.append(n)
        out[dataset.name] = _delta_summary(values, at_first, sizes)
    return out


def delta_of_hidden_states(datasets: list[TokenizedDataset], model, tokenizer, label: str,
                           progress: bool = True) -> dict:
    """Per dataset, δ_rel of each prompt's final-hidden-layer states (one point per text token)."""
    out = {}
    for dataset in datasets:
        values, at_first, sizes = [], [], []
        for text in tqdm(dataset.texts, desc=f"δ hidden states ({label}) · {dataset.name}", disable=not progress):
            exact, first, n = prompt_delta(final_hidden_states(model, tokenizer, text))
            values.append(exact)
            at_first.append(first)
            sizes.append(n)
        out[dataset.name] = _delta_summary(values, at_first, sizes)
    return out


def frequency_section(datasets: list[TokenizedDataset], vocab_size: int) -> tuple[dict, np.ndarray]:
    """Per-dataset counts, rank-frequency, frequency distribution and power-law fit; and all counts summed."""
    section, total = {}, np.zeros(vocab_size, dtype=np.int64)
    for dataset in datasets:
        counts = count_tokens(dataset.token_ids, vocab_size)
        total += counts
        ranks, ordered = rank_frequency(counts)
        values, fractions = frequency_distribution(counts)
        entry = {
            "n_prompts": len(dataset.token_ids),
            "n_tokens": int(counts.sum()),
            "n_types": int((counts > 0).sum()),
            "rank_frequency": {"rank": ranks, "count": ordered},
            "frequency_distribution": {"count": values, "fraction_of_types": fractions},
        }
        try:
            entry["power_law"] = fit_power_law(counts).to_dict()
        except HypLoraUserError as exc:
            # A tiny dataset may have too few distinct counts to fit; report it rather than fail the run.
            entry["power_law"] = None
            entry["power_law_error"] = str(exc)
        section[dataset.name] = entry
    return section, total


def run_analysis(config: AnalysisConfig) -> dict:
    """Run the whole analysis and write the figures, analysis.json and report.md to ``config.output_dir``.

    Returns the results dict (what analysis.json holds).
    """
    output_dir = Path(config.output_dir).expanduser()
    _check_output_dir(output_dir)
    texts = load_dataset_texts(config.datasets, config.data_dir, config.max_prompts)
    tokenizer, model, adapted = _load_models(config)
    embeddings = input_embedding_matrix(model)
    datasets = tokenize_datasets(texts, tokenizer)
    vocab_size = embeddings.shape[0]
    largest_id = max(max(ids) for d in datasets for ids in d.token_ids)
    if largest_id >= vocab_size:
        raise HypLoraUserError(
            f"the tokenizer produced token id {largest_id} but the model has only {vocab_size} input embeddings"
        )

    with torch_threads(config.threads):
        results = _compute(config, datasets, tokenizer, model, adapted, embeddings)
    _write_outputs(results, output_dir)
    return results


def _compute(config: AnalysisConfig, datasets, tokenizer, model, adapted, embeddings) -> dict:
    vocab_size = embeddings.shape[0]
    steps = tqdm(total=6, desc="hyplora analyze", disable=not config.progress)
    frequency, total_counts = frequency_section(datasets, vocab_size)
    steps.update()

    norms = embedding_norms(embeddings)
    observed = np.flatnonzero(total_counts > 0)
    groups = token_group_table(tokenizer, total_counts, norms)
    numbers = number_tokens(tokenizer, total_counts, norms)
    frequency_vs_norm = {
        "spearman": spearman_frequency_norm(total_counts, norms),
        "binned": binned_norm_by_frequency(total_counts, norms),
        "tokens": {"token_id": observed, "count": total_counts[observed], "norm": norms[observed]},
        "groups": [g.to_dict() for g in groups],
        "norm_of_all_tokens": {"mean": float(norms.mean()), "std": float(norms.std())},
    }
    steps.update()

    delta = {"input_embeddings": delta_of_input_embeddings(datasets, embeddings, config.progress)}
    steps.update()
    if config.hidden_states:
        delta["final_hidden_base"] = delta_of_hidden_states(datasets, model, tokenizer, "base", config.progress)
        if adapted is not None:
            delta["final_hidden_adapter"] = delta_of_hidden_states(datasets, adapted, tokenizer, "adapter",
                                                                   config.progress)
    steps.update()

    # Like-for-like (the median prompt's number of distinct input-embedding points) and dense.
    prompt_sizes = [n for summary in delta["input_embeddings"].values() for n in summary["n_points"]]
    reference_sizes = sorted({max(4, int(np.median(prompt_sizes))), config.reference_points})
    references = [
        r.to_dict()
        for size in tqdm(reference_sizes, desc="reference spaces", disable=not config.progress)
        for r in calibrate(size, config.reference_samples, config.seed, gaussian_dim=int(embeddings.shape[1]))
    ]
    steps.update()

    hierarchy = {
        "groups": [
            {"name": g.group, "level": g.level, "entries": [vars(e) for e in g.entries]} for g in groups
        ] + [{"name": "numbers", "level": len(groups), "entries": [vars(e) for e in numbers]}],
    }
    results = {
        "meta": {
            "model": config.model,
            "adapter": str(config.adapter) if config.adapter else None,
            "datasets": [d.name for d in datasets],
            "max_prompts": config.max_prompts,
            "vocab_size": int(vocab_size),
            "embedding_dim": int(embeddings.shape[1]),
            "delta_definition": "relative delta = 2*delta/diam, delta = max over quadruples of (S1-S2)/2 "
                                "(Gromov four-point condition, exact), Euclidean distances between distinct "
                                "token vectors of a prompt, float64 arithmetic; first_token_base: "
                                "the fixed-base-point value of Khrulkov et al. with the prompt's first token as "
                                "base (a lower bound, what the reference code reports)",
            "torch_version": torch.__version__,
        },
        "frequency": frequency,
        "frequency_vs_norm": frequency_vs_norm,
        "delta": delta,
        "references": references,
        "hierarchy": hierarchy,
        "figures": dict(FIGURES),
    }
    steps.update()
    steps.close()
    return results


def _write_outputs(results: dict, output_dir: Path) -> None:
    frequency, frequency_vs_norm = results["frequency"], results["frequency_vs_norm"]
    delta, references, hierarchy = results["delta"], results["references"], results["hierarchy"]
    output_dir.mkdir(parents=True, exist_ok=True)
    plots.plot_rank_frequency(frequency, output_dir / FIGURES["rank_frequency"])
    plots.plot_frequency_distribution(frequency, output_dir / FIGURES["frequency_distribution"])
    plots.plot_frequency_vs_norm(frequency_vs_norm, output_dir / FIGURES["frequency_vs_norm"])
    plots.plot_delta(delta, references, output_dir / FIGURES["delta_hyperbolicity"])
    plots.plot_hierarchy(hierarchy, output_dir / FIGURES["hierarchy"])
    write_json_atomically(results, output_dir / JSON_NAME)
    write_text_atomically(markdown_report(results), output_dir / REPORT_NAME)
