"""The evaluation benchmarks of this line of work: names, files, answer kinds and groups.

Files live in a data directory (``--data-dir``, else ``$HYPLORA_DATA_DIR``, else ``../shared/data`` or
``./data`` seen from the working directory) under ``test/``, in the LLM-Adapters format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import HypLoraUserError
from .records import Record, load_records


@dataclass(frozen=True)
class Benchmark:
    name: str
    file: str
    kind: str  # "numeric", "option" (letters A-E), or "choice" (a fixed answer vocabulary)
    labels: tuple[str, ...] = ()  # the answer vocabulary of option and choice tasks
    approximate: bool = False  # the file is a reconstruction; reports must say so


_LETTERS = ("A", "B", "C", "D", "E")

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("gsm8k", "gsm8k.json", "numeric"),
        Benchmark("svamp", "SVAMP.json", "numeric"),
        Benchmark("mawps", "mawps.json", "numeric"),
        Benchmark("addsub", "AddSub.json", "numeric"),
        Benchmark("multiarith", "MultiArith.json", "numeric"),
        Benchmark("singleeq", "SingleEq.json", "numeric"),
        Benchmark("aqua", "AQuA.json", "option", _LETTERS),
        Benchmark("mathqa", "mathqa.json", "option", _LETTERS),
        Benchmark("boolq", "boolq.json", "choice", ("true", "false")),
        Benchmark("piqa", "piqa.json", "choice", ("solution1", "solution2")),
        Benchmark("social_i_qa", "social_i_qa.json", "choice", ("answer1", "answer2", "answer3")),
        Benchmark("winogrande", "winogrande.json", "choice", ("option1", "option2")),
        Benchmark("arc_easy", "ARC-Easy.json", "choice", tuple(f"answer{i}" for i in range(1, 6))),
        Benchmark("arc_challenge", "ARC-Challenge.json", "choice", tuple(f"answer{i}" for i in range(1, 6))),
        Benchmark("openbookqa", "openbookqa.json", "choice", tuple(f"answer{i}" for i in range(1, 5))),
        Benchmark("hellaswag", "hellaswag_approx.json", "choice", tuple(f"ending{i}" for i in range(1, 5)), True),
    ]
}

GROUPS: dict[str, tuple[str, ...]] = {
    "math": ("mawps", "svamp", "gsm8k", "aqua"),  # the paper's four arithmetic benchmarks
    "math-all": ("gsm8k", "svamp", "mawps", "addsub", "multiarith", "singleeq", "aqua", "mathqa"),
    "commonsense": (
        "boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
    ),
}


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: the explicit one, ``$HYPLORA_DATA_DIR``, or ``../shared/data`` / ``./data``."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise HypLoraUserError(f"data directory {path} does not exist")
        return path
    env = os.environ.get("HYPLORA_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise HypLoraUserError(f"HYPLORA_DATA_DIR={env} is not a directory")
        return path
    for candidate in (Path("../shared/data"), Path("data")):
        if (candidate / "test").is_dir():
            return candidate
    raise HypLoraUserError(
        "no data directory: pass --data-dir or set HYPLORA_DATA_DIR to a folder holding test/ and train/"
    )


def resolve_tasks(spec: str | list[str]) -> list[str]:
    """Expand a comma-separated list of task and group names into benchmark names (order kept, no repeats)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        members = GROUPS.get(name, (name,))
        for member in members:
            if member not in BENCHMARKS:
                known = ", ".join(list(GROUPS) + list(BENCHMARKS))
                raise HypLoraUserError(f"unknown task {raw.strip()!r}; known tasks and groups: {known}")
            if member not in out:
                out.append(member)
    if not out:
        raise HypLoraUserError("no tasks given")
    return out


def load_benchmark(name: str, directory: str | os.PathLike | None = None) -> list[Record]:
    """The test records of a benchmark (every record must have an answer)."""
    if name not in BENCHMARKS:
        raise HypLoraUserError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    path = data_dir(directory) / "test" / BENCHMARKS[name].file
    return load_records(path, require_answer=True)
