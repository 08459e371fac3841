"""`hyplora analyze`: the geometry analysis of a model's tokens on benchmark texts (see hyplora.analysis)."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def register(subparsers) -> None:
    from ..analysis.corpus import DEFAULT_DATASETS
    from ..models import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "analyze",
        help="token geometry: frequency power law, frequency vs norm, δ-hyperbolicity",
        description=(
            "Token frequency power law, frequency vs input-embedding norm, and relative δ-hyperbolicity of "
            "prompts (input embeddings and final hidden states), with reference spaces for calibration. "
            "Writes PNG figures, analysis.json and report.md to --output-dir."
        ),
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default: {DEFAULT_MODEL})")
    parser.add_argument(
        "--datasets", default=DEFAULT_DATASETS,
        help="comma-separated benchmarks, groups (math, math-all, commonsense) or LLM-Adapters .json/.jsonl "
             f"files (default: {DEFAULT_DATASETS})",
    )
    parser.add_argument("--output-dir", required=True, help="directory for the figures, analysis.json, report.md")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $HYPLORA_DATA_DIR or ../shared/data)")
    parser.add_argument("--adapter", default=None, help="also measure δ of the final hidden states with this adapter")
    parser.add_argument("--max-prompts", type=_positive_int, default=None,
                        help="analyse only the first N prompts of each dataset (default: all)")
    parser.add_argument("--no-hidden-states", action="store_true",
                        help="skip δ of the final hidden states (no forward passes)")
    parser.add_argument("--reference-points", type=_positive_int, default=200,
                        help="points of the dense reference-space samples (default: 200); references are also "
                             "computed at the median prompt size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reference spaces (default: 0)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="torch threads for the forward passes (default: 1, robust on shared machines; "
                             "δ itself always runs on one)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.pipeline import JSON_NAME, REPORT_NAME, AnalysisConfig, run_analysis

    config = AnalysisConfig(
        output_dir=args.output_dir, model=args.model, datasets=args.datasets, data_dir=args.data_dir,
        adapter=args.adapter, max_prompts=args.max_prompts, hidden_states=not args.no_hidden_states,
        reference_points=args.reference_points, seed=args.seed, progress=not args.quiet, threads=args.threads,
    )
    run_analysis(config)
    print(f"wrote {args.output_dir}/{REPORT_NAME}, {JSON_NAME} and figures")
    return 0
