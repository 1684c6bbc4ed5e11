"""An equation number standing alone ("... (2)") is no claim.

Before, "x^2 + y^2 = 1600 ... (2)" gave a claim "(2)" that was sent to the judge as a fact (while "(1)" two lines
up was NO_KNOWLEDGE); "\\((i)\\)" after display math was a claim too.
"""

from __future__ import annotations

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def test_an_equation_number_alone_is_not_a_claim():
    text = ("Then we have: x - y = 34 ... (1)\n\nBy the Pythagorean theorem, x^2 + y^2 = 1600 ... (2)\n\n"
            "From (1), y = x - 34.")
    claims = [[c.text for c in s.claims] for s in SPLITTER.split(text).steps]
    assert claims == [["Then we have: x - y = 34 ..."], ["By the Pythagorean theorem, x^2 + y^2 = 1600 ..."],
                      ["From (1), y = x - 34."]]


def test_a_label_inside_a_sentence_stays():
    assert [c.text for c in SPLITTER.split("Metformin (B) is first-line.").steps[0].claims] == [
        "Metformin (B) is first-line."]
