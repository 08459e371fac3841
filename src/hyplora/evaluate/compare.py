"""Several evaluation runs side by side: a markdown table (mean ± std over seeds) and a bar chart."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..data import BENCHMARKS
from ..errors import HypLoraUserError
from .report import columns_of, task_heading
from .runner import APPROXIMATE_NOTE, SUMMARY_NAME


@dataclass
class Row:
    label: str
    summaries: list[dict]

    @property
    def seeds(self) -> list:
        return [s.get("seed") for s in self.summaries]


def load_summary(path: str | Path) -> dict:
    """A run's summary, from its output directory or its summary.json."""
    path = Path(path).expanduser()
    file = path / SUMMARY_NAME if path.is_dir() else path
    if not file.is_file():
        hint = " (the run may be unfinished: run the same `hyplora eval` command again)" if path.is_dir() else ""
        raise HypLoraUserError(f"no evaluation summary at {file}{hint}")
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HypLoraUserError(f"{file}: unreadable summary ({exc})") from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("tasks"), dict):
        raise HypLoraUserError(f"{file}: not a `hyplora eval` summary")
    summary["_path"] = str(file)
    return summary


def _config_key(summary: dict) -> str:
    """What must agree for runs to be averaged: label, model, protocol, decoding, template, limit."""
    generation = dict(summary.get("generation", {}))
    generation.pop("batch_size", None)
    generation.pop("max_new_tokens", None)
    return json.dumps(
        [summary.get("label"), summary.get("model"), summary.get("protocol"), summary.get("template"),
         summary.get("limit"), generation],
        sort_keys=True,
    )


def group_runs(summaries: list[dict], *, group: bool = True) -> list[Row]:
    """Runs with the same configuration (label and settings) become one row; others stay separate."""
    rows: dict[str, Row] = {}
    for index, summary in enumerate(summaries):
        key = _config_key(summary) if group else str(index)
        if key not in rows:
            label = summary.get("label") or summary.get("model") or summary["_path"]
            rows[key] = Row(label, [])
        rows[key].summaries.append(summary)
    out = list(rows.values())
    labels = [row.label for row in out]
    for row in out:  # same label, different settings: tell them apart
        if labels.count(row.label) > 1:
            first = row.summaries[0]
            row.label = f"{row.label} [{first.get('protocol')}, {first['generation'].get('decoding')}, " \
                        f"{Path(first['_path']).parent.name}]"
    return out


def values_of(row: Row, column: str) -> list[float]:
    out = []
    for summary in row.summaries:
        if column in summary.get("groups", {}):
            out.append(summary["groups"][column]["value"])
        else:
            stats = summary["tasks"].get(column)
            if stats is not None and stats.get("complete") and stats.get("accuracy") is not None:
                out.append(stats["accuracy"])
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)  # sample standard deviation


def cell(row: Row, column: str) -> str:
    values = values_of(row, column)
    mean, std = mean_std(values)
    if mean is None:
        return "-"
    text = f"{100 * mean:.1f}"
    if std is not None:
        text += f" ± {100 * std:.1f}"
    if len(values) < len(row.summaries):
        text += f" (n={len(values)})"
    return text


def compare_table(rows: list[Row]) -> str:
    columns = columns_of([s for row in rows for s in row.summaries])
    header = ["run", "runs"] + [task_heading(c) if c in BENCHMARKS else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(columns)]
    for row in rows:
        seeds = [s for s in row.seeds if s is not None]
        runs = str(len(row.summaries)) + (f" (seeds {', '.join(map(str, seeds))})" if seeds else "")
        lines.append("| " + " | ".join([row.label, runs] + [cell(row, c) for c in columns]) + " |")
    lines.append("")
    lines.append("Accuracy in %; mean ± sample standard deviation over the runs of one configuration. "
                 "M.AVG: micro average over mawps, svamp, gsm8k, aqua; AVG: macro average over the eight "
                 "commonsense tasks.")
    if any(BENCHMARKS.get(c) and BENCHMARKS[c].approximate for c in columns) or "AVG" in columns:
        lines.append(f"\\* {APPROXIMATE_NOTE} (AVG includes it).")
    protocols = sorted({str(s.get("protocol")) for row in rows for s in row.summaries})
    lines.append(f"Scoring protocol: {', '.join(protocols)}.")
    limits = sorted({s.get("limit") for row in rows for s in row.summaries if s.get("limit")})
    if limits:
        lines.append(f"Some runs evaluated only the first {', '.join(map(str, limits))} examples per task (--limit).")
    return "\n".join(lines)


def bar_chart(rows: list[Row], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = columns_of([s for row in rows for s in row.summaries])
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.9 * len(columns) * max(1, len(rows)) ** 0.5), 4.5))
    for k, row in enumerate(rows):
        means, errors = [], []
        for column in columns:
            mean, std = mean_std(values_of(row, column))
            means.append(math.nan if mean is None else 100 * mean)
            errors.append(0.0 if std is None else 100 * std)
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(columns))]
        ax.bar(xs, means, width, yerr=errors, capsize=2, label=f"{row.label} (n={len(row.summaries)})")
    labels = [f"{c}\n(approx.)" if BENCHMARKS.get(c) and BENCHMARKS[c].approximate else c for c in columns]
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
