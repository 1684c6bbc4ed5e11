"""Chinese and Japanese sentences end at 。！？ (no space follows them): steps, KB facts and evidence windows."""

from kb.chunking import ChunkSpec, chunk_spans
from server.pipeline.splitter import RuleSplitter, sentence_spans

ZH = "华法林是维生素K拮抗剂。阿司匹林抑制血小板聚集！二甲双胍会引起低血糖吗？不会。"
JA = "ワルファリンはビタミンK拮抗薬である。「アスピリンは血小板凝集を抑制する。」次に進む。"


def _texts(text, spans):
    return [text[s:e] for s, e in spans]


def test_cjk_full_stops_end_sentences():
    assert _texts(ZH, sentence_spans(ZH, 0, len(ZH))) == [
        "华法林是维生素K拮抗剂。", "阿司匹林抑制血小板聚集！", "二甲双胍会引起低血糖吗？", "不会。"]
    assert _texts(JA, sentence_spans(JA, 0, len(JA))) == [
        "ワルファリンはビタミンK拮抗薬である。", "「アスピリンは血小板凝集を抑制する。」", "次に進む。"]


def test_a_chinese_run_on_paragraph_gives_claims_per_sentence():
    result = RuleSplitter().split(ZH, "")
    claims = [c.text for step in result.steps for c in step.claims]
    assert "华法林是维生素K拮抗剂。" in claims and "阿司匹林抑制血小板聚集！" in claims
    for step in result.steps:
        for c in step.claims:
            assert ZH[c.start:c.end] == c.text


def test_kb_facts_of_chinese_text_end_at_sentence_ends_not_at_hard_cuts():
    text = "".join(f"第{i}条：华法林需要监测国际标准化比值，以避免出血并发症。" for i in range(40))
    facts = _texts(text, chunk_spans(text, ChunkSpec(max_chars=100)))
    assert len(facts) > 1 and all(f.endswith("。") for f in facts)
