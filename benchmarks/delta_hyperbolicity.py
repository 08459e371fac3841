"""Benchmark: relative δ-hyperbolicity of every GSM8K test prompt (1319) on SmolLM2's input embeddings.

Target (issue 5): all prompts within 60 s on 2 CPU cores, exact, float32 or better.

Compared side by side on a subset of prompts:
  * hyplora exact δ (float32 and float64): max over all quadruples, via the fixed-base-point max-min
    product for every base point, each quadruple visited once (hyplora.analysis.delta);
  * reference-style: one base point (the first token), the whole O(n^3) min tensor at once, in float16,
    as the reference code does -- a lower bound of δ, with float16 rounding on top;
  * brute force: an explicit loop over all C(n, 4) quadruples (numpy, float64), the definition itself.

Run from the repository root:  python benchmarks/delta_hyperbolicity.py [--data-dir DIR] [--subset N]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time

import numpy as np
import torch

from hyplora.analysis.corpus import load_dataset_texts, tokenize_datasets
from hyplora.analysis.delta import delta_at_base_point, delta_hyperbolicity, pairwise_distances, torch_threads
from hyplora.analysis.embeddings import input_embedding_matrix
from hyplora.models import DEFAULT_MODEL, load_model, load_tokenizer


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def reference_style_delta_fp16(distances: torch.Tensor) -> float:
    """The reference code's computation: base point 0, full (n, n, n) tensor, float16."""
    d = distances.to(torch.float16)
    row = d[0, :][None, :]
    col = d[:, 0][:, None]
    gromov = 0.5 * (row + col - d)
    max_min = torch.max(torch.minimum(gromov[:, :, None], gromov[None, :, :]), dim=1).values
    return float(torch.max(max_min - gromov))


def brute_force_delta(distances: np.ndarray) -> float:
    """max over all quadruples of (largest - second largest pair sum) / 2, quadruples enumerated explicitly."""
    n = len(distances)
    if n < 4:
        return 0.0
    quads = np.array(list(itertools.combinations(range(n), 4)))
    a, b, c, d = quads.T
    sums = np.sort(np.stack([distances[a, b] + distances[c, d], distances[a, c] + distances[b, d],
                             distances[a, d] + distances[b, c]]), axis=0)
    return float(((sums[2] - sums[1]) / 2).max())


def prompt_points(embeddings: torch.Tensor, ids: list[int]) -> torch.Tensor:
    return embeddings[torch.tensor(list(dict.fromkeys(ids)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--subset", type=int, default=40, help="prompts for the side-by-side comparison")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over all prompts (min and max shown)")
    parser.add_argument("--brute-force-max-points", type=int, default=45,
                        help="skip the brute-force loop on prompts with more distinct tokens than this")
    args = parser.parse_args()

    load_before = os.getloadavg()
    started = time.perf_counter()
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model).eval()
    embeddings = input_embedding_matrix(model)
    (dataset,) = tokenize_datasets(load_dataset_texts("gsm8k", args.data_dir), tokenizer)
    load_seconds = time.perf_counter() - started
    sizes = np.array([len(set(ids)) for ids in dataset.token_ids])

    timings: dict[str, list[float]] = {}
    results: dict[str, list[float]] = {}
    for label, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        for _ in range(args.repeats):
            start = time.perf_counter()
            values = []
            # The timed path is what `hyplora analyze` runs: distances, then δ, on one intra-op thread.
            with torch_threads(1):
                for ids in dataset.token_ids:
                    distances = pairwise_distances(prompt_points(embeddings, ids))
                    values.append(delta_hyperbolicity(distances, dtype=dtype).relative_delta)
            timings.setdefault(label, []).append(time.perf_counter() - start)
            results[label] = values
    all32, all64 = np.array(results["float32"]), np.array(results["float64"])

    subset = dataset.token_ids[: args.subset]
    comparison = {"exact float32": [], "exact float32, torch's default threads": [], "exact float64": [],
                  "first-token base float32": [],
                  "reference-style fp16": [], "brute force float64": []}
    subset_time = {name: 0.0 for name in comparison}
    brute_force_count = 0
    for ids in subset:
        distances = pairwise_distances(prompt_points(embeddings, ids))
        diameter = float(distances.max())
        for name, function in (
            ("exact float32", lambda: delta_hyperbolicity(distances, dtype=torch.float32).delta),
            ("exact float32, torch's default threads",
             lambda: delta_hyperbolicity(distances, dtype=torch.float32, threads=None).delta),
            ("exact float64", lambda: delta_hyperbolicity(distances, dtype=torch.float64).delta),
            ("first-token base float32", lambda: delta_at_base_point(distances, 0, dtype=torch.float32)),
            ("reference-style fp16", lambda: reference_style_delta_fp16(distances)),
        ):
            start = time.perf_counter()
            comparison[name].append(2 * function() / diameter)
            subset_time[name] += time.perf_counter() - start
        if len(distances) <= args.brute_force_max_points:
            start = time.perf_counter()
            comparison["brute force float64"].append(2 * brute_force_delta(distances.numpy()) / diameter)
            subset_time["brute force float64"] += time.perf_counter() - start
            brute_force_count += 1
        else:
            comparison["brute force float64"].append(float("nan"))

    reference = np.array(comparison["exact float64"])
    print(f"machine: {cpu_model()}; {os.cpu_count()} CPUs visible, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; Python {sys.version.split()[0]}; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"model {args.model}: {embeddings.shape[0]} x {embeddings.shape[1]} input embeddings; loading model, "
          f"tokenizer and GSM8K took {load_seconds:.1f} s (not counted)")
    print(f"GSM8K test prompts: {len(sizes)}; distinct tokens per prompt: mean {sizes.mean():.1f}, "
          f"max {sizes.max()}")
    print()
    print(f"| all {len(sizes)} GSM8K prompts | seconds (fastest of {args.repeats}) | slowest | mean δ_rel ± std |")
    print("|---|---|---|---|")
    for label in ("float32", "float64"):
        values = np.array(results[label])
        print(f"| exact δ, {label}, 1 intra-op thread | {min(timings[label]):.2f} | {max(timings[label]):.2f} | "
              f"{values.mean():.4f} ± {values.std():.4f} |")
    print(f"\nmax |float32 - float64| over all prompts: {np.abs(all32 - all64).max():.2e}")
    print()
    base_point = np.array(comparison["first-token base float32"])
    print(f"| first {len(subset)} prompts | seconds | mean δ_rel | max abs difference from exact float64 | "
          "max abs difference from first-token base float32 |")
    print("|---|---|---|---|---|")
    for name, values in comparison.items():
        values = np.array(values)
        mask = np.isfinite(values)
        note = f" ({brute_force_count} prompts with <= {args.brute_force_max_points} tokens)" if name.startswith("brute") else ""
        print(f"| {name}{note} | {subset_time[name]:.2f} | {values[mask].mean():.4f} | "
              f"{np.abs(values[mask] - reference[mask]).max():.2e} | "
              f"{np.abs(values[mask] - base_point[mask]).max():.2e} |")
    slowest = max(timings["float32"])
    verdict = "within" if slowest <= 60 else "OVER"
    print(f"\nexact float32 on all prompts: slowest pass {slowest:.2f} s ({verdict} the 60 s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
