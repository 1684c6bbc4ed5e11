"""Aligning the LLM decomposer's step texts back to offsets in the chain."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.backends.splitters.alignment import StepAligner, StepNotFoundError

words = st.sampled_from(["warfarin", "is", "a", "vitamin", "K", "antagonist", "so", "the", "answer", "B", "2.5",
                         "mg", "$x^2$", "reverses", "it", "heparin", "“quoted”", "–", "\\[y\\]"])
pieces = st.lists(st.lists(words, min_size=1, max_size=8).map(" ".join), min_size=1, max_size=8)
seps = st.sampled_from([" ", "\n", "\n\n", "  "])


@settings(max_examples=200, deadline=None)
@given(pieces, seps)
def test_exact_copies_align_to_where_each_piece_starts(parts, sep):
    chain = sep.join(parts)
    expected, pos = [], 0
    for p in parts:
        expected.append(pos)
        pos += len(p) + len(sep)
    starts = StepAligner(chain).starts(parts)
    assert starts == expected
    assert starts == sorted(set(starts))  # strictly increasing
    assert [chain[s:s + len(p)] for s, p in zip(starts, parts)] == parts


@settings(max_examples=200, deadline=None)
@given(pieces)
def test_copies_with_other_spacing_case_and_quotes_still_align(parts):
    chain = "\n".join(parts)
    mangled = ["  ".join(p.upper().replace("“", '"').replace("”", '"').replace("–", "-").split()) for p in parts]
    starts = StepAligner(chain).starts(mangled)
    assert starts == sorted(set(starts)) and all(0 <= s < len(chain) for s in starts)


def test_light_rewording_aligns_and_invention_fails():
    chain = "Warfarin is a vitamin K antagonist, so vitamin K reverses its effect. Protamine reverses heparin."
    aligner = StepAligner(chain)
    assert aligner.starts(["Warfarin is a vitamin K antagonist so vitamin K reverses the effect.",
                           "Protamine reverses heparin"]) == [0, chain.index("Protamine")]
    with pytest.raises(StepNotFoundError) as info:
        aligner.starts(["Warfarin is a vitamin K antagonist.", "Dabigatran is reversed by idarucizumab."])
    assert info.value.index == 1


def test_steps_out_of_order_fail():
    chain = "First sentence here. Second sentence here."
    with pytest.raises(StepNotFoundError):
        StepAligner(chain).starts(["Second sentence here.", "First sentence here."])


@pytest.mark.parametrize("chain, steps, second", [
    ("Potassium is high, so the answer is B.\n\nSo the answer is B.",
     ["Potassium is high, so the answer is B.", "So the answer is B."], 40),  # normalized match inside step 0
    ("We know 2 + 2 = 4, so 4 is even. 4 is even.", ["We know 2 + 2 = 4, so 4 is even.", "4 is even."], 33),
])
def test_a_step_repeated_inside_the_previous_one_is_found_where_it_follows(chain, steps, second):
    assert StepAligner(chain).starts(steps) == [0, second]


def test_offsets_after_a_character_that_lower_cases_to_two():
    chain = "İstanbul has 15 million people. THE capital is Ankara. Ankara is in Anatolia."
    steps = ["İstanbul has 15 million people.", "the capital is Ankara.", "Ankara is in Anatolia."]
    assert StepAligner(chain).starts(steps) == [0, chain.index("THE"), chain.rindex("Ankara is")]
