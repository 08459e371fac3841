"""Evaluation: answer extraction and scoring, batched generation, the benchmark runner and run comparison.

`extract_answer` / `is_correct` are the scoring API (default protocol "hyplora"; "reference" and
"reference-original" reproduce the paper harness's rules, see `reference_protocol`). `run_evaluation` runs
tasks on a model and writes per-example JSON lines, a summary JSON and a markdown table (`hyplora eval`);
`generate` / `iter_generate` are the batched generator; `compare` holds `hyplora compare`.
"""

from .generation import Generated, generate, iter_generate
from .runner import EvalSettings, read_results, run_evaluation
from .scoring import DEFAULT_PROTOCOL, PROTOCOLS, Score, extract_answer, is_correct, score

__all__ = [
    "DEFAULT_PROTOCOL", "PROTOCOLS", "EvalSettings", "Generated", "Score", "extract_answer", "generate",
    "is_correct", "iter_generate", "read_results", "run_evaluation", "score",
]
