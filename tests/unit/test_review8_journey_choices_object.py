"""MedQA and MedBullets write a question's options as an object keyed by letter ({"A": "...", "B": "..."}); a row
carrying them so was refused ("choices: must be a list of strings or whole numbers"). Such an object is taken in
letter order; one keyed otherwise is refused saying what to give."""

import pytest

from client import requests
from client.errors import VerifierError


def test_options_keyed_by_letter_are_taken_in_letter_order():
    request = requests.chain_request({"reasoning": "x", "answer": "B",
                                      "choices": {"B": "Amitriptyline", "A": "Acetazolamide", "C": 3}})
    assert list(request.choices) == ["Acetazolamide", "Amitriptyline", "3"]


@pytest.mark.parametrize("choices", [{"A": "x", "C": "y"}, {"1": "x", "2": "y"}, {"a": "x", "A": "y"}])
def test_options_keyed_otherwise_are_refused_saying_what_to_give(choices):
    with pytest.raises(VerifierError) as refused:
        requests.chain_request({"reasoning": "x", "choices": choices})
    assert refused.value.field_violations == [
        ("choices", "is an object whose keys are not the letters A, B, C, ... in turn: give the options as a list of "
                    "their texts, in order")]
