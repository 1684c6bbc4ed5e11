"""Chunking documents into facts: verbatim spans, size limits, overlap, no text lost."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb.chunking import ChunkSpec, chunk_spans, embed_input, embed_key, lead, text_key

WORDS = ["Aspirin", "inhibits", "COX-1.", "Dose", "2.5 mg", "e.g.", "Dr.", "Smith", "said", "so.", "The", "INR",
         "is", "monitored!", "Why?", "\n", "\n\n", "- item", "1.", "a" * 40, "supercalifragilistic" * 5, "  "]
documents = st.lists(st.sampled_from(WORDS), max_size=80).map(" ".join) | st.text(max_size=300)


@settings(max_examples=300, deadline=None)
@given(documents, st.integers(20, 400), st.integers(0, 3))
def test_chunks_are_verbatim_bounded_ordered_and_lose_no_text(text, max_chars, overlap):
    spans = chunk_spans(text, ChunkSpec(max_chars=max_chars, overlap=overlap))
    covered = set()
    for (s, e), nxt in zip(spans, spans[1:] + [None]):
        assert 0 <= s < e <= len(text)
        assert e - s <= max_chars
        assert text[s:e] == text[s:e].strip()
        covered.update(range(s, e))
        if nxt is not None:
            assert nxt[0] > s  # progress: no chunk repeats its predecessor's start
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_sentences_are_packed_whole_and_overlap_repeats_the_last_sentence():
    text = "Aspirin inhibits COX. It lowers fever. It thins blood. It can cause ulcers."
    plain = [text[s:e] for s, e in chunk_spans(text, ChunkSpec(max_chars=40))]
    assert plain == ["Aspirin inhibits COX. It lowers fever.", "It thins blood. It can cause ulcers."]
    overlapped = [text[s:e] for s, e in chunk_spans(text, ChunkSpec(max_chars=40, overlap=1))]
    assert overlapped == ["Aspirin inhibits COX. It lowers fever.", "It lowers fever. It thins blood.",
                          "It thins blood. It can cause ulcers."]


def test_line_breaks_end_units_and_long_sentences_are_cut_at_spaces():
    text = "Key Points\n  - Warfarin needs INR checks\n" + "word " * 30
    spans = chunk_spans(text, ChunkSpec(max_chars=30))
    pieces = [text[s:e] for s, e in spans]
    assert pieces[0] == "Key Points"
    assert pieces[1] == "- Warfarin needs INR checks"
    assert all(p.replace("word", "").strip() == "" for p in pieces[2:]) and len(pieces) > 3


def test_context_is_the_first_sentence_and_is_prepended_to_later_facts_only():
    text = "Glaucoma damages the optic nerve. Pressure in the eye is often high. Drops lower it."
    spec = ChunkSpec(max_chars=40, context_chars=200)
    assert lead(text, spec) == "Glaucoma damages the optic nerve."
    first, second = (text[s:e] for s, e in chunk_spans(text, spec)[:2])
    assert embed_input(first, lead(text, spec)) == first
    assert embed_input(second, lead(text, spec)) == f"Glaucoma damages the optic nerve.\n{second}"
    assert lead(text, ChunkSpec(context_chars=10)) == "Glaucoma"
    assert lead(text, ChunkSpec()) == ""


def test_keys_ignore_case_and_spacing_for_dedup_but_not_for_the_embedding_cache():
    assert text_key("Aspirin  inhibits\nCOX.") == text_key("aspirin inhibits cox.")
    assert text_key("aspirin inhibits cox.") != text_key("aspirin inhibits cox-2.")
    assert embed_key("Aspirin") != embed_key("aspirin") and len(embed_key("x")) == 16


def test_spec_validation_and_round_trip():
    spec = ChunkSpec(300, 1, 120)
    assert ChunkSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError):
        ChunkSpec(max_chars=0)
    with pytest.raises(ValueError):
        ChunkSpec(overlap=-1)
