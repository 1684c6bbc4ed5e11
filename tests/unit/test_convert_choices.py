"""Options arrive with the whitespace around them dropped: an option read from a file often ends in a line break
(38 of MedQA's 1,273 test questions), which c_0's one-option-per-line listing refused as "must be one line"."""

import pytest

from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import knowledge_service_pb2 as kpb
from server.pipeline.errors import InvalidArgumentError
from server.pipeline.info_gain import choose_target, render_context0
from server.pipeline.validation import Limits, validate_info_gain
from server.servicers import convert

FIELDS = dict(question="What reverses heparin?", steps=["Protamine binds heparin."], answer="A",
              choices=["Protamine sulfate\n", " Vitamin K\r\n", "\u2028Idarucizumab "])


@pytest.mark.parametrize("convert_request", [
    lambda: convert.info_gain_request(igpb.ScoreInfoGainRequest(**FIELDS)),
    lambda: convert.chain_request(kpb.ScoreChainRequest(**FIELDS)).info_gain,
], ids=["ScoreInfoGain", "ScoreChain"])
def test_options_lose_the_whitespace_around_them(convert_request):
    req = convert_request()
    assert req.choices == ("Protamine sulfate", "Vitamin K", "Idarucizumab")
    validate_info_gain(req, Limits())
    assert render_context0(req.chain.question, req.choices).splitlines()[-3:] == [
        "A. Protamine sulfate", "B. Vitamin K", "C. Idarucizumab"]
    assert choose_target(req.answer, req.gold_answer, req.choices) == ("answer", "Protamine sulfate")


def test_a_line_break_inside_an_option_is_still_refused():
    req = convert.info_gain_request(igpb.ScoreInfoGainRequest(**{**FIELDS, "choices": ["Protamine\nB. x", "y"]}))
    with pytest.raises(InvalidArgumentError, match=r"choices\[0\]: must be one line"):
        validate_info_gain(req, Limits())
