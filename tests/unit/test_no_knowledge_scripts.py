"""Claims in a script the English NO_KNOWLEDGE rules cannot read are judged, never silently skipped."""

from __future__ import annotations

import pytest

from server.pipeline.no_knowledge import is_no_knowledge
from server.pipeline.splitter import RuleSplitter


@pytest.mark.parametrize("claim", [
    "阿司匹林抑制环氧合酶。",                     # Chinese: aspirin inhibits cyclooxygenase
    "Аспирин ингибирует циклооксигеназу.",      # Russian
    "Η ασπιρίνη αναστέλλει την κυκλοοξυγενάση.",  # Greek
    "الأسبرين يثبط إنزيم الأكسدة الحلقية.",        # Arabic
    "アスピリンはシクロオキシゲナーゼを阻害する。",  # Japanese
])
def test_a_claim_in_another_script_is_judged(claim):
    assert not is_no_knowledge(claim)


@pytest.mark.parametrize("claim", ["...", "**", "—", "!?", "( )", "→"])
def test_markup_and_punctuation_alone_stay_no_knowledge(claim):
    assert is_no_knowledge(claim)


def test_a_chain_in_chinese_has_knowledge_steps_to_judge():
    """Every step of a Chinese chain was NO_KNOWLEDGE: nothing was judged, knowledge_index was null and
    knowledge_index_paper 1.0, as if every step were right."""
    result = RuleSplitter().split("阿司匹林抑制环氧合酶。华法林是维生素K拮抗剂。", "哪种药物抑制环氧合酶？")
    claims = [c for s in result.steps for c in s.claims]
    assert len(claims) == 2 and not any(c.no_knowledge for c in claims)
