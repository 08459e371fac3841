"""`hyplora compare`: several `hyplora eval` runs side by side (table and bar chart)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare evaluation runs: markdown table (mean ± std over seeds) and a bar chart",
        description=(
            "Read the summary.json of each run (a `hyplora eval` output directory or the file itself). Runs with "
            "the same label and settings (e.g. several training seeds of one configuration) are averaged: "
            "mean ± sample standard deviation."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run output directory or summary.json")
    parser.add_argument("--plot", default="compare.png", help="bar-chart PNG to write")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--no-group", action="store_true", help="one row per run, no averaging")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate.compare import bar_chart, compare_table, group_runs, load_summary
    from ..evaluate.runner import atomic_write_text

    import os
    import sys

    summaries, seen = [], set()
    for path in args.runs:
        summary = load_summary(path)
        key = os.path.realpath(summary["_path"])
        if key in seen:
            print(f"hyplora compare: warning: {path} given twice; counted once", file=sys.stderr)
            continue
        seen.add(key)
        summaries.append(summary)
    rows = group_runs(summaries, group=not args.no_group)
    table = compare_table(rows)
    print(table)
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    bar_chart(rows, args.plot)
    print(f"\nwrote {args.plot}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0
