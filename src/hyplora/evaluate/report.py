"""Markdown tables of evaluation summaries (one run, or several side by side)."""

from __future__ import annotations

from ..data import BENCHMARKS

GROUP_COLUMNS = ("M.AVG", "AVG")


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def task_heading(task: str) -> str:
    """Column name of a task; approximate files are marked with an asterisk (explained under the table)."""
    return f"{task}*" if BENCHMARKS.get(task) and BENCHMARKS[task].approximate else task


def summary_table(summary: dict) -> str:
    """One run: a row per task (n, accuracy, unparseable), then the group averages, then notes."""
    lines = [
        f"**{summary.get('label') or summary.get('model')}** — protocol `{summary.get('protocol')}`, "
        f"{summary['generation']['decoding']}, device {summary.get('device')}",
        "",
        "| task | n | accuracy (%) | unparseable (%) |",
        "|---|---:|---:|---:|",
    ]
    for task, stats in summary["tasks"].items():
        n = f"{stats['n']}" if stats["complete"] else f"{stats['n']}/{stats['total']}"
        lines.append(f"| {task_heading(task)} | {n} | {pct(stats['accuracy'])} | {pct(stats['unparseable_rate'])} |")
    for name, group in summary.get("groups", {}).items():
        kind = "micro avg over " if group["kind"] == "micro" else "macro avg over "
        lines.append(f"| **{name}** ({kind}{', '.join(group['tasks'])}) | | **{pct(group['value'])}** | |")
    lines += _notes(summary.get("notes", []))
    return "\n".join(lines)


def _notes(notes: list[str]) -> list[str]:
    out = []
    for note in notes:
        prefix = "\\* " if note.startswith("hellaswag") else ""
        out.append(f"\n{prefix}{note}.")
    return out


def columns_of(summaries: list[dict]) -> list[str]:
    """Tasks in first-seen order, then the group averages present in any run."""
    tasks: list[str] = []
    for summary in summaries:
        for task in summary["tasks"]:
            if task not in tasks:
                tasks.append(task)
    groups = [g for g in GROUP_COLUMNS if any(g in s.get("groups", {}) for s in summaries)]
    return tasks + groups
