"""Evaluation: answer extraction and scoring, batched generation, the benchmark runner and run comparison.

`extract_answer` / `is_correct` are the scoring API (default protocol "hyplora"; "reference" and
"reference-original" reproduce the paper harness's rules). `run_evaluation` runs tasks on a model and
writes per-example JSON lines, a summary JSON and a markdown table; `generate` is the batched generator.
"""

from .scoring import DEFAULT_PROTOCOL, PROTOCOLS, Score, extract_answer, is_correct, score

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "Score", "extract_answer", "is_correct", "score"]
