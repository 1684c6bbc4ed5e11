"""'max.' before a number is an abbreviation: "10 mg/kg (max. 600 mg)" is not cut inside the brackets.

Before, "The dose is 10 mg/kg (max. 600 mg)." gave the claims "The dose is 10 mg/kg (max." and "600 mg).", the
second judged as a fact of its own.
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


@pytest.mark.parametrize("text, claims", [
    ("Rifampin is dosed at 10 mg/kg (max. 600 mg). It induces CYP3A4.",
     ["Rifampin is dosed at 10 mg/kg (max. 600 mg).", "It induces CYP3A4."]),
    ("Acetaminophen is safe up to max. 4 g per day. Beyond that, it is hepatotoxic.",
     ["Acetaminophen is safe up to max. 4 g per day.", "Beyond that, it is hepatotoxic."]),
    ("Infuse over 30 min. Then recheck the level.", ["Infuse over 30 min.", "Then recheck the level."]),
    ("We take the max. The answer is 12.", ["We take the max.", "The answer is 12."]),
])
def test_max_before_a_number_does_not_end_a_sentence(text, claims):
    assert [c.text for s in SPLITTER.split(text).steps for c in s.claims] == claims
