"""The LLM decomposer's steps are found in a chain written with compatibility characters.

Text copied from PDFs holds ligatures ("ﬁrst"), East Asian input full-width letters ("ＡＢＣ"), and either micro
sign; a model copying the step writes the plain letters. Before, a short such step was "not in the chain" and the
whole request failed with BACKEND_BAD_RESPONSE.
"""

from __future__ import annotations

import pytest

from server.backends.splitters.alignment import StepAligner


@pytest.mark.parametrize("chain, steps, starts", [
    ("Metformin is ﬁrst-line.\nIt lowers glucose.", ["Metformin is first-line.", "It lowers glucose."], [0, 24]),
    ("ＡＣＥ inhibitors cause cough.\nARBs do not.", ["ACE inhibitors cause cough.", "ARBs do not."], [0, 28]),
    ("Give 5 µg/kg.\nThen stop.", ["Give 5 μg/kg.", "Then stop."], [0, 14]),
    ("Café au lait spots.\nSo NF1.", ["Cafe\u0301 au lait spots.", "So NF1."], [0, 20]),  # NFD still matches
])
def test_a_plain_copy_of_compatibility_text_is_found(chain, steps, starts):
    assert StepAligner(chain).starts(steps) == starts
