"""The answer-extraction rules of the paper's evaluation harness, for comparison with published numbers.

Source: the HypLoRA reference repository (github.com/marlin-codes/HypLoRA, commit 66df99a), files
``evaluate.py`` (arithmetic; inherited from LLM-Adapters) and ``commonsense_evaluate.py``. Re-implemented
here from its rules (not copied):

* numeric tasks: remove every comma, find all matches of ``-?\\d+\\.?\\d*`` and take the last as a float
  (none: the prediction is +inf, i.e. wrong); correct when ``|gold - pred| <= 0.001``.
* aqua (and here also mathqa, which the reference harness does not evaluate): the first rule below that
  matches anywhere in the stripped output gives the prediction, its last match; none: "N/A" (wrong).
  1. ``\\boxed{\\text{(X)}}`` / ``\\boxed{\\text{X}}``; 2. ``\\boxed{X}`` / ``\\boxed{(X)}``;
  3. ``X)`` with an optional "(" before it (any capital A-E directly followed by ")");
  4. "answer is" (optionally "correct answer is"), then colons/spaces, an optional "(", a letter A-E,
     matched case-insensitively (so a lowercase "a" counts and then never equals the gold letter);
  5. "The answer is" / "the answer is" likewise, case-sensitive letter;
  6. "is", colons/spaces and a letter A-E, optional ".", at the very end;
  7. "Option X" / "option (X)".
  Correct when the prediction equals the gold letter exactly (case-sensitive).
  ``reference-original`` uses the rules of that file before its 2026-02-04 change (the rules in force when
  the paper's numbers were produced): rule 3, else "correct answer is X" (case-insensitive), last match.
* commonsense tasks: lowercase the stripped output and take the FIRST match of the plain alternation of the
  task's vocabulary (``true|false``, ``solution1|solution2``, ``answer1|...|answer5``, ``option1|option2``,
  ``ending1|...|ending4``; no word boundaries); none: "" (wrong). Correct when equal to the gold label.

Like the reference, nothing is cut from the output: a model that runs on into an invented next question
is scored on all of it. (The reference applies the rules to the decoded response; for its LLaMA-7B path
of evaluate.py it decodes prompt and response together, which this module does not reproduce.)
"""

from __future__ import annotations

import re

from ..data import BENCHMARKS
from ..errors import HypLoraUserError

_NUMBER = re.compile(r"-?\d+\.?\d*")

# Letter rules, in priority order (see the module docstring).
_LETTER_RULES = [
    re.compile(r"\\boxed\{\\text\{\(?([A-E])\)?\}\}"),
    re.compile(r"\\boxed\{\(?([A-E])\)?\}"),
    re.compile(r"\(?([A-E])\)"),
    re.compile(r"(?:correct )?answer is[:\s]+\(?([A-E])\)?", re.IGNORECASE),
    re.compile(r"[Tt]he answer is[:\s]+\(?([A-E])\)?"),
    re.compile(r"is[:\s]+([A-E])\.?\s*$"),
    re.compile(r"[Oo]ption\s+\(?([A-E])\)?"),
]
_LETTER_RULES_ORIGINAL = [
    re.compile(r"\(?([A-E])\)"),
    re.compile(r"correct answer is\s+([A-E])", re.IGNORECASE),
]

_VOCABULARY = {
    "boolq": ("true", "false"),
    "piqa": ("solution1", "solution2"),
    "social_i_qa": tuple(f"answer{i}" for i in range(1, 6)),
    "arc_easy": tuple(f"answer{i}" for i in range(1, 6)),
    "arc_challenge": tuple(f"answer{i}" for i in range(1, 6)),
    "openbookqa": tuple(f"answer{i}" for i in range(1, 6)),
    "hellaswag": tuple(f"ending{i}" for i in range(1, 5)),
    "winogrande": ("option1", "option2"),
}


def reference_number(text: str) -> float | None:
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def reference_letter(text: str, *, original: bool = False) -> str | None:
    text = text.strip()
    for rule in _LETTER_RULES_ORIGINAL if original else _LETTER_RULES:
        found = rule.findall(text)
        if found:
            return found[-1]
    return None


def reference_choice(task: str, text: str) -> str | None:
    pattern = "|".join(_VOCABULARY[task])
    found = re.findall(pattern, text.strip().lower())
    return found[0] if found else None


def extract_answer(task: str, text: str, *, original: bool = False) -> str | None:
    if task not in BENCHMARKS:
        raise HypLoraUserError(f"unknown task {task!r}; known: {', '.join(BENCHMARKS)}")
    kind = BENCHMARKS[task].kind
    text = text or ""
    if kind == "numeric":
        value = reference_number(text)
        return None if value is None else repr(value)
    if kind == "option":
        return reference_letter(text, original=original)
    return reference_choice(task, text)


def is_correct(task: str, prediction: str | None, answer: str) -> bool:
    if task not in BENCHMARKS:
        raise HypLoraUserError(f"unknown task {task!r}; known: {', '.join(BENCHMARKS)}")
    if prediction is None:
        return False
    kind = BENCHMARKS[task].kind
    if kind == "numeric":
        try:
            gold = float(answer)
        except ValueError:
            raise HypLoraUserError(f"{task}: gold answer {answer!r} is not a number") from None
        return abs(gold - float(prediction)) <= 0.001
    return prediction == answer
