"""Writing the analysis outputs: the JSON of every figure's numbers (atomically) and the markdown report."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def _json_safe(value):
    """NaN/inf become null (strict JSON has no NaN); numpy scalars and tuples become plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomically(data: dict, path: Path) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(_json_safe(data), handle, indent=1, allow_nan=False)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_text_atomically(text: str, path: Path) -> None:
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pvalue(p) -> str:
    return "n/a" if p is None or p != p else f"{p:.2g}"


def markdown_report(results: dict) -> str:
    """A short human-readable summary of ``results`` (the dict written to analysis.json)."""
    meta = results["meta"]
    lines = [
        f"# Geometry analysis of {meta['model']}",
        "",
        f"Datasets: {', '.join(meta['datasets'])}" + (f" (first {meta['max_prompts']} prompts each)" if meta["max_prompts"] else ""),
        f"Adapter: {meta['adapter'] or 'none'}. Vocabulary: {meta['vocab_size']} tokens, embedding size {meta['embedding_dim']}.",
        "",
        "## 1. Token frequency (discrete power law, `powerlaw` package)",
        "",
        "| dataset | prompts | tokens | types | γ | ± | xmin | tail types | KS D | R vs log-normal (p) | R vs exponential (p) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in results["frequency"].items():
        fit = data.get("power_law")
        if fit is None:
            lines.append(f"| {name} | {data['n_prompts']} | {data['n_tokens']} | {data['n_types']} | fit failed: {data.get('power_law_error')} |||||||")
            continue
        comps = {c["alternative"]: c for c in fit["comparisons"]}
        ln, ex = comps["lognormal"], comps["exponential"]
        lines.append(
            f"| {name} | {data['n_prompts']} | {data['n_tokens']} | {data['n_types']} | {fit['gamma']:.3f} | "
            f"{fit['gamma_standard_error']:.3f} | {fit['xmin']:g} | {fit['n_tail']} | {fit['ks_distance']:.4f} | "
            f"{ln['normalized_ratio']:.2f} ({_pvalue(ln['p_value'])}) | {ex['normalized_ratio']:.2f} ({_pvalue(ex['p_value'])}) |"
        )
    lines += [
        "",
        "R > 0 favours the power law; p is the significance of R's sign (Vuong's test).",
        "",
        "## 2. Frequency vs input-embedding norm (all datasets together)",
        "",
    ]
    sp = results["frequency_vs_norm"]["spearman"]
    lines += [
        f"Spearman ρ(count, norm) = {_fmt(sp['rho'])} (p = {_pvalue(sp['p_value'])}, {sp['n_tokens']} observed tokens); "
        "ρ < 0 means frequent tokens sit nearer the origin.",
        "",
        "| group | tokens (single whole-word tokens) | mean count | mean norm [min–max] |",
        "|---|---|---|---|",
    ]
    for group in results["frequency_vs_norm"]["groups"]:
        present = [e["word"] for e in group["entries"] if e["token_id"] is not None]
        missing = [e["word"] for e in group["entries"] if e["token_id"] is None]
        words = ", ".join(present) + (f" (not single tokens: {', '.join(missing)})" if missing else "")
        lines.append(
            f"| {group['group']} | {words} | {_fmt(group['mean_frequency'], 1)} | "
            f"{_fmt(group['mean_norm'])} [{_fmt(group['min_norm'])}–{_fmt(group['max_norm'])}] |"
        )
    lines += [
        "",
        "## 3. δ-hyperbolicity (relative δ = 2δ/diam per prompt, exact four-point condition)",
        "",
        "| representation | dataset | prompts | exact: mean ± std | exact: median | first-token base: mean ± std |",
        "|---|---|---|---|---|---|",
    ]
    for representation, per_dataset in results["delta"].items():
        for name, data in per_dataset.items():
            base = data["first_token_base"]
            lines.append(
                f"| {representation} | {name} | {data['n_prompts']} | {_fmt(data['mean'])} ± {_fmt(data['std'])} | "
                f"{_fmt(data['median'])} | {_fmt(base['mean'])} ± {_fmt(base['std'])} |"
            )
    lines += [
        "",
        "Exact: max over all quadruples of the prompt's distinct token vectors. First-token base: the "
        "fixed-base-point value of Khrulkov et al. (base = first token), as the reference code computes it; "
        "it is a lower bound of the exact value (δ_w <= δ <= 2 δ_w).",
    ]
    lines += ["", "Reference spaces (same computation):", "", "| space | points | relative δ mean ± std |", "|---|---|---|"]
    for ref in results["references"]:
        lines.append(f"| {ref['space']} ({ref['description']}) | {ref['n_points']} | {_fmt(ref['mean'])} ± {_fmt(ref['std'])} |")
    lines += [
        "",
        "δ_rel grows with the number of points, so compare prompts with the references of about their size. "
        "Random Gaussian points in high dimension are nearly equidistant, which also reads as tree-like "
        "(low δ_rel): a low value for token embeddings means more when it is below the Gaussian reference.",
        "",
        "## Figures",
        "",
    ]
    lines += [f"- `{file}` ({name.replace('_', ' ')})" for name, file in results["figures"].items()]
    lines += ["", "Every figure's numbers are in `analysis.json`.", ""]
    return "\n".join(lines)
