"""PNG figures of the analysis (matplotlib, Agg backend). Each function draws from the numbers in the JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(temporary, dpi=120, bbox_inches="tight")
    temporary.replace(path)
    _pyplot().close(fig)


def plot_rank_frequency(frequency: dict, path: Path) -> None:
    """Log-log rank-frequency curve per dataset."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, data in frequency.items():
        ax.loglog(data["rank_frequency"]["rank"], data["rank_frequency"]["count"], label=name, lw=1.2)
    ax.set_xlabel("rank")
    ax.set_ylabel("token count")
    ax.set_title("Rank-frequency of tokens")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    _save(fig, path)


def plot_frequency_distribution(frequency: dict, path: Path) -> None:
    """Fraction of token types seen k times against k, log-log, with the fitted power law on its tail."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, data in frequency.items():
        dist = data["frequency_distribution"]
        (line,) = ax.loglog(dist["count"], dist["fraction_of_types"], "o", ms=3, alpha=0.6, label=name)
        fit = data.get("power_law")
        if fit and len(dist["count"]):
            k = np.array(dist["count"], dtype=float)
            tail = k[k >= fit["xmin"]]
            if tail.size:
                # Scale the tail's p(k) ∝ k^-γ to the tail's share of types so it overlays the points.
                fractions = np.array(dist["fraction_of_types"])
                share = fractions[k >= fit["xmin"]].sum()
                from scipy.special import zeta

                model = share * tail ** (-fit["gamma"]) / zeta(fit["gamma"], fit["xmin"])
                ax.loglog(tail, model, "-", color=line.get_color(), lw=1.2,
                          label=f"{name}: γ={fit['gamma']:.2f}, xmin={fit['xmin']:g}")
    ax.set_xlabel("count k")
    ax.set_ylabel("fraction of token types seen k times")
    ax.set_title("Frequency distribution and discrete power-law fit")
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    _save(fig, path)


def plot_frequency_vs_norm(norm_section: dict, path: Path) -> None:
    """Mean input-embedding norm (± std) in log-spaced frequency bins, over the per-token scatter."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    scatter = norm_section["tokens"]
    ax.scatter(scatter["count"], scatter["norm"], s=2, alpha=0.15, color="gray", label="tokens")
    bins = norm_section["binned"]
    mean, std = np.array(bins["mean_norm"]), np.array(bins["std_norm"])
    ax.errorbar(bins["frequency_geomean"], mean, yerr=std, fmt="o-", color="C3", capsize=2, label="bin mean ± std")
    ax.set_xscale("log")
    ax.set_xlabel("token count in the analysed texts")
    ax.set_ylabel("input-embedding norm")
    rho = norm_section["spearman"]["rho"]
    ax.set_title(f"Frequency vs embedding norm (Spearman ρ = {rho:.3f})")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    _save(fig, path)


def plot_delta(delta_section: dict, references: list[dict], path: Path) -> None:
    """Box plots of per-prompt δ_rel per dataset and representation, with reference spaces as lines."""
    plt = _pyplot()
    labels, values = [], []
    for representation, per_dataset in delta_section.items():
        for name, data in per_dataset.items():
            finite = [v for v in data["relative_delta"] if v == v]
            if finite:
                labels.append(f"{name}\n{representation}")
                values.append(finite)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.5))
    if values:
        ax.boxplot(values, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=30)
    sizes = sorted({ref["n_points"] for ref in references})
    spaces = list(dict.fromkeys(ref["space"] for ref in references))
    for ref in references:
        style = ":" if len(sizes) > 1 and ref["n_points"] == sizes[0] else "--"
        ax.axhline(ref["mean"], ls=style, lw=1, color=f"C{spaces.index(ref['space']) + 1}",
                   label=f"{ref['space']} ({ref['n_points']} points): {ref['mean']:.3f}")
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("relative δ = 2δ / diam per prompt")
    ax.set_title("δ-hyperbolicity of prompts (lower = more tree-like)")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def plot_hierarchy(hierarchy: dict, path: Path) -> None:
    """Tokens by frequency (x, log) and norm (y), and as a disk with radius = norm (general words near the
    centre, specific words and rare numbers outside), so the tree-like ordering shows at a glance."""
    plt = _pyplot()
    fig = plt.figure(figsize=(12, 5.5))
    ax = fig.add_subplot(1, 2, 1)
    polar = fig.add_subplot(1, 2, 2, projection="polar")
    groups = hierarchy["groups"]
    shown_norms = [e["norm"] for g in groups for e in g["entries"] if e["norm"] is not None]
    low, high = (min(shown_norms), max(shown_norms)) if shown_norms else (0.0, 1.0)
    span = (high - low) or 1.0
    n_groups = len(groups)
    for gi, group in enumerate(groups):
        entries = [e for e in group["entries"] if e["norm"] is not None]
        if not entries:
            continue
        color = f"C{gi}"
        shown = [e for e in entries if e["frequency"] > 0]
        ax.scatter([e["frequency"] for e in shown], [e["norm"] for e in shown], color=color, s=18, label=group["name"])
        for e in shown:
            ax.annotate(e["word"], (e["frequency"], e["norm"]), fontsize=7, xytext=(2, 2), textcoords="offset points")
        sector = 2 * np.pi / n_groups
        angles = gi * sector + (np.arange(len(entries)) + 0.5) * sector / len(entries)
        # Norms of real embeddings span a narrow band far from 0; rescale that band to [0.1, 1] so the
        # ordering is visible (the left panel keeps the true values).
        radii = [0.1 + 0.9 * (e["norm"] - low) / span for e in entries]
        polar.scatter(angles, radii, color=color, s=18, label=group["name"])
        for angle, radius, e in zip(angles, radii, entries):
            polar.annotate(e["word"], (angle, radius), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("token count in the analysed texts (tokens never seen are left out)")
    ax.set_ylabel("input-embedding norm")
    ax.set_title("Token groups by frequency and norm\n(a tree-like embedding puts general, frequent words at small norm)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    polar.set_rlim(0, 1.05)
    polar.set_xticklabels([])
    polar.set_yticklabels([])
    polar.set_title(f"Radius: norm rescaled from [{low:.2f}, {high:.2f}] to [0.1, 1]; one sector per group",
                    fontsize=9)
    _save(fig, path)
