"""Re-read saved `decode.py` results with its current verdict: PASS, FAIL or UNDECIDED against the 0.95 target.

`decode.py` keeps every repeat's time in its JSON, so the verdict (`decode.verdict`: both ratio estimates and the
95% bootstrap interval of the median of paired ratios) can be applied to runs made before it existed. One row per
case and HypLoRA method, with LoRA's own spread between repeats (a noisy machine start shows there first).

    python benchmarks/decode_verdicts.py benchmarks/results/decode-static-*-2026-11-29g.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from _common import median_interval
from decode import verdict


def rows_of(path: str) -> list[dict]:
    """Every (case, HypLoRA method) of one saved run, with its verdict; ValueError for a file that is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            return _judge(json.load(handle)["cases"], path)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise ValueError(f"{path}: not a decode.py result ({type(error).__name__}: {error})") from error


def _judge(cases: list, path: str) -> list[dict]:
    out = []
    for case in cases:
        by_method = {row["method"]: row for row in case["rows"]}
        lora = by_method.get("lora")
        if lora is None:
            continue
        for row in case["rows"]:
            if not row["method"].startswith("hyplora"):
                continue
            paired = [lora_s / t for t, lora_s in zip(row["seconds"], lora["seconds"])]
            judged = {"ratio_to_lora": row["ratio_to_lora"], "paired_ratio_to_lora_median": statistics.median(paired),
                      "paired_ratio_to_lora_interval": median_interval(paired)}
            out.append({"file": path, "model": case["model"], "batch": case["batch"], "method": row["method"],
                        "repeats": len(paired), "lora_ms": (min(lora["seconds"]) * 1e3, max(lora["seconds"]) * 1e3),
                        **judged, "verdict": verdict(judged)})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="JSON files written by decode.py --json")
    args = parser.parse_args(argv)
    try:
        rows = [row for path in args.files for row in rows_of(path)]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("| file | model, batch | method | repeats | LoRA's calls (ms) | ratio of medians | paired median "
          "(95% interval) | verdict |")
    print("|---|---|---|---:|---|---:|---:|---|")
    for r in rows:
        low, high = r["paired_ratio_to_lora_interval"]
        print(f"| {r['file'].rsplit('/', 1)[-1]} | {r['model']}, {r['batch']} | {r['method'].removeprefix('hyplora-')} "
              f"| {r['repeats']} | {r['lora_ms'][0]:.0f}-{r['lora_ms'][1]:.0f} | {r['ratio_to_lora']:.3f} "
              f"| {r['paired_ratio_to_lora_median']:.3f} ({low:.3f}-{high:.3f}) | {r['verdict']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
