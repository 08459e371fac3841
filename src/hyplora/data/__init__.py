"""Data: benchmark registry, record readers (and, with the training pipeline, training mixes and prompts)."""

from .benchmarks import BENCHMARKS, GROUPS, Benchmark, data_dir, load_benchmark, resolve_tasks
from .records import Record, load_records

__all__ = ["BENCHMARKS", "GROUPS", "Benchmark", "Record", "data_dir", "load_benchmark", "load_records", "resolve_tasks"]
