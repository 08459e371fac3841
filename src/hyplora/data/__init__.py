"""Data: benchmark registry, record readers, training mixes, synthetic data, dedup and tokenization."""

from .benchmarks import BENCHMARKS, GROUPS, Benchmark, data_dir, load_benchmark, resolve_tasks
from .dedup import deduplicate, normalize_question
from .records import Record, load_records
from .synthetic import synthetic_records
from .tokenization import tokenize_records
from .training_sets import TRAINING_TASKS, load_training_data

__all__ = [
    "BENCHMARKS", "GROUPS", "TRAINING_TASKS", "Benchmark", "Record", "data_dir", "deduplicate", "load_benchmark",
    "load_records", "load_training_data", "normalize_question", "resolve_tasks", "synthetic_records",
    "tokenize_records",
]
