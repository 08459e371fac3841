"""The default ("hyplora") answer extraction and scoring, on outputs written the way models write them."""

from __future__ import annotations

import pytest

from hyplora.errors import HypLoraUserError
from hyplora.evaluate import extract_answer, is_correct, score
from hyplora.evaluate.scoring import format_number, parse_number

NUMERIC_TASKS = ["gsm8k", "svamp", "mawps", "addsub", "multiarith", "singleeq"]

# (model output, expected extraction)
NUMERIC_CASES = [
    # the GSM8K / LLM-Adapters style rationale
    ("He needs 24 tiles for every sq ft, so he needs 24 * 24 = 576 tiles. The answer is 576.", "576"),
    ("The answer is 1,234.", "1234"),
    ("Total = 1,000 + 234 = 1,234 dollars. The answer is $1,234.50", "1234.5"),
    ("She earns $12.50 an hour for 8 hours: 8 x 12.5 = 100. The answer is 100", "100"),
    # several numbers, no marker: the last one
    ("He has 5 apples and 3 pears. So 8 in total.", "8"),
    ("5 + 7 = 12\n12 * 3 = 36", "36"),
    # the marker wins over later numbers
    ("The answer is 42. (Checked with 6 * 7 and 40 + 2.)", "42"),
    ("The answer is 12 apples, which is 3 more than the 9 she had.", "12"),
    # an equation after the marker: the result
    ("So 36 * 2/3 = 24. The answer is 5 + 3 = 8.", "8"),
    # the last marker counts
    ("The answer is 10. Wait, I made a mistake. The answer is 12.", "12"),
    ("#### 72", "72"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("The final answer is \\boxed{18}.", "18"),
    ("Answer: 7", "7"),
    # signs
    ("The temperature dropped to -5 degrees. The answer is -5.", "-5"),
    ("x = -3", "-3"),
    ("The answer is \u221212", "-12"),  # unicode minus
    ("10-5=5", "5"),  # a minus between numbers is subtraction, not a sign
    ("She lost $-4", "-4"),
    # decimals, percent, trailing period, fractions
    ("The answer is 0.75.", "0.75"),
    ("The answer is .5", "0.5"),
    ("The discount is 20%. The answer is 20%.", "20"),
    ("The answer is 3/4.", "0.75"),
    ("The answer is -3/4", "-0.75"),
    ("He ate 1/2 of the pie", "0.5"),
    ("It costs 3.", "3"),
    ("1,234,567 people", "1234567"),
    ("The answer is 5,000", "5000"),
    # numbers inside words are not numbers
    ("Water is H2O and there are 3 glasses", "3"),
    # a model running on into an invented next prompt: only the real response counts
    ("The answer is 5.\n\n### Instruction:\nTom has 7 cats. How many?\n\n### Response:\nThe answer is 7.", "5"),
    # nothing parseable
    ("I don't know.", None),
    ("", None),
    ("The answer is unknown.", None),
]


@pytest.mark.parametrize("text, expected", NUMERIC_CASES)
def test_numeric_extraction(text, expected):
    assert extract_answer("gsm8k", text) == expected


@pytest.mark.parametrize("task", NUMERIC_TASKS)
def test_every_numeric_task_uses_the_numeric_rules(task):
    assert extract_answer(task, "3 + 4 = 7. The answer is 7.") == "7"
    assert extract_answer(task, "no number") is None


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("576", "576.0", True),
        ("576", "576", True),
        ("576.00005", "576.0", True),  # within 1e-4 * |gold|
        ("577", "576.0", False),
        ("0.75", "0.75", True),
        ("1.8333333333", "1.8333333333333335", True),
        ("1.83", "1.8333333333333335", False),  # rounding to two places is not the answer
        ("0.00005", "0", True),  # absolute tolerance 1e-4 near zero
        ("0.001", "0", False),
        ("-15", "-15.0", True),
        ("15", "-15.0", False),
        ("1234", "1,234", True),
        (None, "5", False),
    ],
)
def test_numeric_correctness(prediction, gold, expected):
    assert is_correct("gsm8k", prediction, gold) is expected


def test_numeric_end_to_end_with_comma_and_decimal_gold():
    result = score("gsm8k", "The total is 1,200 + 34 = 1,234. The answer is 1,234.", "1234.0")
    assert result.extracted == "1234" and result.correct and result.parseable
    result = score("gsm8k", "nothing to see", "3")
    assert result.extracted is None and not result.correct and not result.parseable


def test_parse_and_format_number():
    assert parse_number("1,234.5") == 1234.5
    assert parse_number("$-3") == -3
    assert parse_number("3/4") == 0.75
    assert parse_number("45%") == 45
    assert parse_number("1/0") is None
    assert parse_number("abc") is None
    assert format_number(576.0) == "576"
    assert format_number(-0.0) == "0"
    assert format_number(0.1) == "0.1"


OPTION_CASES = [
    ("The answer is (B).", "B"),
    ("The answer is B", "B"),
    ("Answer: C", "C"),
    ("the correct answer is: (E) 1023.65", "E"),
    ("Because A is larger than B, the answer is C.", "C"),
    # a capital letter inside a sentence is not an answer
    ("Because A is larger than the other options we keep going.", None),
    ("A train travels at 60 km/h.", None),
    ("I think so. But wait.", None),
    # no marker: the last standalone choice
    ("Rationale: 1023.65 - 1022 = 1.65, closest is (D)", "D"),
    ("Options (A) 23.65 (B) 1000 ... so it must be (A)", "A"),
    ("B) 1000 looks right", "B"),
    ("I would pick option C", "C"),
    ("\\boxed{D}", "D"),
    ("\\boxed{\\text{(E)}}", "E"),
    # the marker beats a later standalone letter
    ("The answer is (B). Option (A) was a distractor.", "B"),
    # later markers win
    ("The answer is (A). Let me re-check: the answer is (D).", "D"),
    # nothing
    ("The answer is 23.65", None),
    ("", None),
    # an invented next prompt is ignored
    ("The answer is (C).\n\n### Instruction:\nPick one. The answer is (A).", "C"),
]


@pytest.mark.parametrize("text, expected", OPTION_CASES)
def test_option_extraction_aqua(text, expected):
    assert extract_answer("aqua", text) == expected


MATHQA_CASES = [
    # mathqa's options are written "a ) 38 , b ) 27.675": lowercase letters must count there
    ("the answer is c ) 30", "C"),
    ("profit = 31.1 % so c ) 30", "C"),
    ("answer : b", "B"),
    ("the answer is (d)", "D"),
    ("so option e", "E"),
    ("The answer is C", "C"),
    # ... but an article "a" is not option A
    ("the answer is a number larger than 30", None),
    ("this is a hard question", None),
]


@pytest.mark.parametrize("text, expected", MATHQA_CASES)
def test_option_extraction_mathqa(text, expected):
    assert extract_answer("mathqa", text) == expected


def test_option_correctness_is_case_insensitive():
    assert is_correct("mathqa", "C", "C")
    assert is_correct("mathqa", "c", "C")
    assert not is_correct("aqua", "B", "C")
    assert not is_correct("aqua", None, "C")


CHOICE_CASES = [
    ("boolq", "the correct answer is true", "true"),
    ("boolq", "TRUE", "true"),
    ("boolq", "False.", "false"),
    ("boolq", "the correct answer is FALSE", "false"),
    # after "answer is" beats an earlier mention
    ("boolq", "It is true that ethanol burns; the answer is false", "false"),
    ("boolq", "that is untrue", None),  # inside a word
    ("boolq", "I am not sure", None),
    ("piqa", "the correct answer is solution2", "solution2"),
    ("piqa", "Solution1 is better", "solution1"),
    ("social_i_qa", "the correct answer is answer3", "answer3"),
    ("arc_easy", "Answer1: sunlight. the correct answer is answer3", "answer3"),
    ("arc_challenge", "answer4", "answer4"),
    ("openbookqa", "The correct answer is Answer2.", "answer2"),
    ("winogrande", "the correct answer is option1", "option1"),
    ("hellaswag", "the correct answer is ending4", "ending4"),
    ("hellaswag", "ending2 fits; ending3 does not", "ending2"),  # no marker: the first one
    ("piqa", "the correct answer is solution3", None),  # not in the vocabulary
    ("social_i_qa", "answer10", None),
]


@pytest.mark.parametrize("task, text, expected", CHOICE_CASES)
def test_choice_extraction(task, text, expected):
    assert extract_answer(task, text) == expected


def test_choice_correctness():
    assert is_correct("boolq", "true", "true")
    assert is_correct("boolq", "TRUE", "true")
    assert not is_correct("boolq", "false", "true")
    assert not is_correct("boolq", None, "true")
    assert score("winogrande", "the correct answer is option2", "option2").correct


def test_unknown_task_and_protocol_are_user_errors():
    with pytest.raises(HypLoraUserError, match="unknown task"):
        extract_answer("nope", "text")
    with pytest.raises(HypLoraUserError, match="protocol"):
        extract_answer("gsm8k", "1", protocol="fancy")
