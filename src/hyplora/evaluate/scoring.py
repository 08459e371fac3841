"""Answer extraction and scoring for the evaluation benchmarks (the default, "hyplora" protocol).

Three kinds of task (see `hyplora.data.BENCHMARKS`):

* numeric (gsm8k, svamp, mawps, addsub, multiarith, singleeq, builtin): the number after the last answer marker
  ("answer is", "answer:", "####", ``\\boxed{``), else the last number in the text. Numbers may carry
  thousands separators ("1,234"), a sign, decimals, a currency or percent sign, a trailing period, or be a
  simple fraction ("3/4"). Correct when ``|pred - gold| <= 1e-4 * max(1, |gold|)``.
* option (aqua, mathqa): the option letter after an answer marker ("answer is (C)", "answer: C"), else the
  last letter written as a standalone choice ("(C)", "C)", "option C", ``\\boxed{C}``); a capital letter
  inside a word or a sentence ("Because A is ...") is never taken. Letters are case-insensitive (mathqa's
  options are often written lowercase: "c )").
* choice (the commonsense tasks): a word of the task's answer vocabulary (true/false, solution1/2,
  answer1-5, option1/2, ending1-4), case-insensitive; the one stated after the last "answer is", else the
  first one in the text.

Before extraction the response is cut where the model starts a new prompt block ("### Instruction:",
"### Input:", "### Response:"): a model that does not stop at EOS often invents a next question and
answers it, and that answer must not be scored. `reference_protocol` has the paper harness's rules, which
do not do this.

An output from which nothing can be extracted gets ``None`` and counts as wrong (and as unparseable).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..data import BENCHMARKS
from ..errors import HypLoraUserError

PROTOCOLS = ("hyplora", "reference", "reference-original")
DEFAULT_PROTOCOL = "hyplora"

# ---------------------------------------------------------------------------------------------- helpers

_TEMPLATE_BLOCK = re.compile(r"#{2,}\s*(?:Instruction|Input|Response)\s*:", re.IGNORECASE)


def response_part(text: str) -> str:
    """The text before the model starts a new Alpaca-style block (see the module docstring)."""
    match = _TEMPLATE_BLOCK.search(text)
    return text[: match.start()] if match else text


def _benchmark(task: str):
    try:
        return BENCHMARKS[task]
    except KeyError:
        raise HypLoraUserError(f"unknown task {task!r}; known: {', '.join(BENCHMARKS)}") from None


# ---------------------------------------------------------------------------------------------- numbers

_MINUS = "-\u2212\u2013"  # hyphen-minus, unicode minus sign, en dash
_NUMBER = re.compile(
    r"(?<![\w.,/])"  # not the tail of a word or of another number
    rf"(?P<sign>[{_MINUS}+])?"
    r"(?:[$\u20ac\u00a3\u00a5]\s?)?"  # currency: $ EUR GBP JPY
    rf"(?P<sign2>[{_MINUS}])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?"
    r"(?P<frac>\.\d+)?"
    r"(?:/(?P<den>\d+(?:\.\d+)?)(?![\d/]))?"
)


def _numbers(text: str):
    """(start, value) of every number in the text, in order."""
    out = []
    for match in _NUMBER.finditer(text):
        whole, frac, den = match.group("int"), match.group("frac"), match.group("den")
        if whole is None and frac is None:
            continue
        value = float((whole or "0").replace(",", "") + (frac or ""))
        if den is not None:
            denominator = float(den)
            if denominator == 0:
                continue
            value /= denominator
        if match.group("sign") in tuple(_MINUS) or match.group("sign2"):
            value = -value
        if math.isfinite(value):
            out.append((match.start(), match.end(), value))
    return out


def parse_number(text: str) -> float | None:
    """The value of a number written as text ("1,234.5", "$-3", "3/4", "45%"), or None."""
    numbers = _numbers(str(text).strip())
    return numbers[0][2] if numbers else None


def format_number(value: float) -> str:
    """A canonical text form: integers without a decimal point, other values with full precision."""
    if value == 0:
        return "0"  # no "-0"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


_NUMERIC_MARKER = re.compile(r"answer\s*(?:is|:|=)|####|\\boxed\{", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")


def _number_after(segment: str) -> float | None:
    """The answer number stated at the start of a segment that follows an answer marker.

    Only the sentence right after the marker counts. If it is an equation ("5 + 3 = 8"), the number after
    its last "=" is taken; otherwise its first number.
    """
    end = _SENTENCE_END.search(segment)
    sentence = segment[: end.start()] if end else segment
    if "=" in sentence:
        tail = sentence[sentence.rindex("=") + 1 :]
        numbers = _numbers(tail)
        if numbers:
            return numbers[0][2]
    numbers = _numbers(sentence)
    return numbers[0][2] if numbers else None


def extract_number(text: str) -> float | None:
    markers = list(_NUMERIC_MARKER.finditer(text))
    for marker in reversed(markers):
        value = _number_after(text[marker.end() :])
        if value is not None:
            return value
    numbers = _numbers(text)
    return numbers[-1][2] if numbers else None


def numbers_match(prediction: float, gold: float) -> bool:
    return abs(prediction - gold) <= 1e-4 * max(1.0, abs(gold))


# ---------------------------------------------------------------------------------------------- options

_L = "A-Ea-e"
# A letter written as a standalone choice. Lower-case letters count only in forms that cannot be the article
# "a" or a word: "(c)", "c )", "option c", "\boxed{c}".
_CHOICE_FORMS = re.compile(
    rf"\\boxed\{{\s*(?:\\text\{{)?\s*\(?\s*(?P<boxed>[{_L}])\s*\)?\s*\}}"
    rf"|\(\s*(?P<paren>[{_L}])\s*\)"
    rf"|(?<![\w(\[])(?P<close>[{_L}])\s?\)"
    rf"|\b[Oo]ption\s*\(?\s*(?P<option>[{_L}])(?![\w'])"
)
_OPTION_MARKER = re.compile(r"answer\s*(?:is|:)\s*:?\s*(?:option\s*)?", re.IGNORECASE)
# What may follow a marker: a choice form, an upper-case letter standing alone ("is C.", "is C because"),
# or a lower-case one that ends the line or sentence ("is c." at the end).
_AFTER_MARKER = re.compile(
    rf"(?:[\[(]\s*(?P<wrapped>[{_L}])\s*[\])]"
    rf"|(?P<upper>[A-E])(?![\w'])"
    rf"|(?P<lower>[a-e])(?=\s?\)|[ \t]*[.!]?[ \t]*(?:\n|$)))"
)


def extract_option(text: str) -> str | None:
    for marker in reversed(list(_OPTION_MARKER.finditer(text))):
        match = _AFTER_MARKER.match(text, marker.end())
        if match:
            return next(g for g in match.groups() if g).upper()
    choices = list(_CHOICE_FORMS.finditer(text))
    if choices:
        return next(g for g in choices[-1].groups() if g).upper()
    return None


# ---------------------------------------------------------------------------------------------- vocabulary


def _vocabulary_pattern(labels: tuple[str, ...]) -> re.Pattern:
    words = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{words})(?![a-z0-9])", re.IGNORECASE)


_CHOICE_MARKER = re.compile(r"answer\s*(?:is|:)[\s:\"'(\[*]*", re.IGNORECASE)


def extract_choice(text: str, labels: tuple[str, ...]) -> str | None:
    vocabulary = _vocabulary_pattern(labels)
    for marker in reversed(list(_CHOICE_MARKER.finditer(text))):
        match = vocabulary.match(text, marker.end())
        if match:
            return match.group(0).lower()
    match = vocabulary.search(text)
    return match.group(0).lower() if match else None


# ---------------------------------------------------------------------------------------------- public API


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise HypLoraUserError(f"unknown scoring protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def extract_answer(task: str, text: str, protocol: str = DEFAULT_PROTOCOL) -> str | None:
    """The answer a model's output states for a task, as text ("576", "0.75", "C", "true"), or None."""
    _check_protocol(protocol)
    if protocol != DEFAULT_PROTOCOL:
        from . import reference_protocol

        return reference_protocol.extract_answer(task, text, original=protocol == "reference-original")
    bench = _benchmark(task)
    text = response_part(text or "")
    if bench.kind == "numeric":
        value = extract_number(text)
        return None if value is None else format_number(value)
    if bench.kind == "option":
        return extract_option(text)
    return extract_choice(text, bench.labels)


def is_correct(task: str, prediction: str | None, answer: str, protocol: str = DEFAULT_PROTOCOL) -> bool:
    """Whether an extracted prediction (from `extract_answer`) matches the gold answer of a record."""
    _check_protocol(protocol)
    if protocol != DEFAULT_PROTOCOL:
        from . import reference_protocol

        return reference_protocol.is_correct(task, prediction, answer)
    bench = _benchmark(task)
    if prediction is None:
        return False
    if bench.kind == "numeric":
        pred, gold = parse_number(prediction), parse_number(answer)
        if gold is None:
            raise HypLoraUserError(f"{task}: gold answer {answer!r} is not a number")
        return pred is not None and numbers_match(pred, gold)
    return str(prediction).strip().lower() == str(answer).strip().lower()


@dataclass(frozen=True)
class Score:
    extracted: str | None
    correct: bool

    @property
    def parseable(self) -> bool:
        return self.extracted is not None


def score(task: str, output: str, answer: str, protocol: str = DEFAULT_PROTOCOL) -> Score:
    extracted = extract_answer(task, output, protocol)
    return Score(extracted, is_correct(task, extracted, answer, protocol))
