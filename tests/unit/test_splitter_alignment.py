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
