"""`--protocol reference`: the paper harness's extraction rules (marlin-codes/HypLoRA evaluate.py and
commonsense_evaluate.py), on fixed cases worked out by hand from those rules, including the ones where they
differ from ours."""

from __future__ import annotations

import pytest

from hyplora.evaluate import extract_answer, is_correct, score


def ref(task, text):
    return extract_answer(task, text, protocol="reference")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 576.", 576.0),
        ("The answer is 1,234.", 1234.0),  # commas removed first
        ("5 + 7 = 12\n12 * 3 = 36", 36.0),
        # the last number, even after the stated answer (we take the stated one)
        ("The answer is 42. (Checked with 6 * 7.)", 7.0),
        ("The answer is -5 degrees", -5.0),
        ("10-5=5", 5.0),
        ("It is 3/4", 4.0),  # no fractions: "4" is the last number
        ("costs $12.50", 12.5),
        ("It costs 3.", 3.0),  # "3." parses as 3.0
        ("H2O", 2.0),  # digits inside words count
        # the invented next prompt is NOT cut off
        ("The answer is 5.\n\n### Instruction:\nTom has 7 cats.", 7.0),
    ],
)
def test_reference_numbers(text, expected):
    assert float(ref("gsm8k", text)) == expected


def test_reference_number_tolerance_is_absolute_0_001():
    assert is_correct("gsm8k", "576.0009", "576.0", protocol="reference")
    assert not is_correct("gsm8k", "576.002", "576.0", protocol="reference")
    # ours is relative (1e-4 * |gold|): 576.002 passes there
    assert is_correct("gsm8k", "576.002", "576.0")
    assert is_correct("gsm8k", "1.834", "1.8333333333333335", protocol="reference")
    assert not is_correct("gsm8k", "1.834", "1.8333333333333335")


def test_reference_nothing_parseable_is_wrong():
    assert ref("gsm8k", "no idea") is None
    assert not score("gsm8k", "no idea", "3", protocol="reference").correct


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is (B).", "B"),
        ("\\boxed{\\text{(C)}} and (A)", "C"),  # boxed outranks parentheses
        ("\\boxed{D}", "D"),
        # rule 3 takes any capital A-E directly followed by ")", the last one
        ("(A) 23.65 (B) 1000 (C) 35.62", "C"),
        ("The answer is (B). Option (A) was a distractor.", "A"),  # ours: B
        ("B) first, then D)", "D"),
        # rule 4: "answer is" with a letter, case-insensitive (so an article "a" is taken as "a")
        ("The answer is C", "C"),
        ("the answer is a number", "a"),
        # rule 6: "is X" at the very end
        ("So it is E.", "E"),
        # rule 7: "option X"
        ("I choose option D because", "D"),
        # nothing
        ("Because A is bigger", None),
        ("answer: C", None),  # "answer:" is not one of its forms
        ("", None),
    ],
)
def test_reference_letters(text, expected):
    assert ref("aqua", text) == expected


def test_reference_letter_is_case_sensitive_when_scored():
    assert is_correct("aqua", "B", "B", protocol="reference")
    assert not is_correct("aqua", "a", "A", protocol="reference")
    assert not score("aqua", "the answer is a", "A", protocol="reference").correct
    assert score("aqua", "the answer is a", "A").correct  # ours: lowercase letter at the end counts


def test_reference_original_letter_rules():
    """Before the harness's 2026-02-04 change: "X)" anywhere, else "correct answer is X"; no boxed, no option."""
    original = lambda text: extract_answer("aqua", text, protocol="reference-original")  # noqa: E731
    assert original("(A) 1 (B) 2") == "B"
    assert original("the correct answer is d") == "d"
    assert original("\\boxed{D}") is None
    assert original("I choose option D") is None
    assert original("The answer is C") is None


@pytest.mark.parametrize(
    "task, text, expected",
    [
        ("boolq", "TRUE", "true"),  # lowercased first
        # the FIRST occurrence, even before "answer is" (ours takes the stated one)
        ("boolq", "It is true that it burns; the answer is false", "true"),
        ("boolq", "that is untrue", "true"),  # no word boundaries
        ("piqa", "solution2 over solution1", "solution2"),
        ("social_i_qa", "Answer1: x. the correct answer is answer3", "answer1"),
        ("social_i_qa", "answer10", "answer1"),
        ("winogrande", "the correct answer is option2", "option2"),
        ("hellaswag", "the correct answer is ending3", "ending3"),
        ("arc_challenge", "nothing", None),
    ],
)
def test_reference_choices(task, text, expected):
    assert ref(task, text) == expected


def test_reference_choice_scoring():
    assert score("boolq", "the correct answer is true", "true", protocol="reference").correct
    assert not score("boolq", "It is true that it burns; the answer is false", "false", protocol="reference").correct
    assert score("boolq", "It is true that it burns; the answer is false", "false").correct
