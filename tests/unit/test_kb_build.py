"""Building, extending and loading knowledge bases with the real MiniLM embedder, FAISS and bm25s."""

import numpy as np
import pytest

from kb.build import BuildOptions, add_documents, build_kb
from kb.chunking import ChunkSpec, chunk_spans
from kb.errors import KnowledgeBaseCorruptError, KnowledgeBaseMismatchError
from kb.ingest import Document
from kb.knowledge_base import FaissKnowledgeBase, LoadOptions
from kb.layout import current_version, versions
from server.pipeline.errors import FailedPreconditionError
from server.pipeline.types import RetrievalMode
from tests.conftest import damage

DOCS = [
    Document("card", "Warfarin is a vitamin K antagonist. Its anticoagulant effect is monitored with the INR.",
             "https://ex/warfarin", "Warfarin"),
    Document("card", "Heparin potentiates antithrombin. Unfractionated heparin is monitored with the aPTT.",
             "https://ex/heparin", "Heparin"),
    Document("endo", "Metformin lowers hepatic glucose production and is first-line for type 2 diabetes.",
             "https://ex/metformin", "Metformin"),
    Document("pulm", "Zafirlukast blocks leukotriene receptors and is used to prevent asthma attacks.",
             "https://ex/zafirlukast", "Zafirlukast"),
    Document("gi", "Omeprazole irreversibly blocks the gastric proton pump and reduces acid secretion.",
             "https://ex/omeprazole", "Omeprazole"),
]
NEW_DOCS = [
    Document("renal", "Furosemide inhibits the Na-K-2Cl cotransporter in the thick ascending limb.", "https://ex/furo"),
    DOCS[2],  # already in the KB: dropped as a duplicate, never embedded again
]


class RecordingEmbedder:
    """The real embedder, recording every text it is asked to encode."""

    def __init__(self, inner):
        self._inner = inner
        self.name, self.weights_hash, self.dim = inner.name, inner.weights_hash, inner.dim
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded.extend(texts)
        return self._inner.encode(texts)


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory, embedder):
    out = tmp_path_factory.mktemp("kb") / "kb"
    build_kb(DOCS, out, embedder, chunking=ChunkSpec(max_chars=60), progress=False)
    return out


def test_every_mode_finds_the_fact_and_modes_rank_differently(kb_dir, embedder):
    kb = FaissKnowledgeBase.load(kb_dir, embedder, LoadOptions(max_per_document=0))
    assert set(kb.info.modes) == set(RetrievalMode) and kb.info.index_family == "flat"
    for mode in RetrievalMode:
        top = kb.search(["How is the effect of warfarin monitored?"], 3, mode)[0]
        assert any("INR" in hit.text for hit in top), mode
    # A paraphrase without shared words: only dense retrieval can find it.
    dense = kb.search(["medicine to stop wheezing episodes"], 1, RetrievalMode.DENSE)[0]
    lexical = kb.search(["medicine to stop wheezing episodes"], 1, RetrievalMode.BM25)[0]
    assert "asthma" in dense[0].text and lexical == []
    hybrid = kb.search(["aPTT"], 5, RetrievalMode.HYBRID)[0]
    assert "aPTT" in hybrid[0].text and hybrid[0].score == pytest.approx((1 + 0.35) / 61)  # first in both lists


def test_repeated_source_ids_keep_every_documents_text_verbatim(kb_dir, embedder):
    kb = FaissKnowledgeBase.load(kb_dir, embedder, LoadOptions(max_per_document=0))
    hits = kb.search(["warfarin heparin vitamin K antithrombin INR aPTT"], 10, RetrievalMode.BM25)[0]
    card = sorted((h.fact_id, h.text, h.source) for h in hits if h.fact_id.startswith("card"))
    assert [fid for fid, _, _ in card] == ["card#0", "card#1", "card#2", "card#3"]
    for _, text, source in card:
        doc = next(d for d in DOCS if d.source == source)
        assert text in doc.text
    assert kb.info.num_documents == 5
    assert kb.info.num_facts == sum(len(chunk_spans(d.text, ChunkSpec(max_chars=60))) for d in DOCS)


def test_kb_add_embeds_only_new_text_and_extends_the_index(tmp_path, embedder):
    out = tmp_path / "kb"
    first = build_kb(DOCS, out, embedder, progress=False)
    recorder = RecordingEmbedder(embedder)
    second = add_documents(out, NEW_DOCS, recorder, progress=False)
    assert recorder.encoded == [NEW_DOCS[0].text]
    assert second.build["duplicates_dropped"] == 1 and second.num_facts == first.num_facts + 1
    assert second.build["parent"] == first.kb_id and [h["op"] for h in second.history] == ["build", "add"]
    kb = FaissKnowledgeBase.load(out, embedder)
    assert kb.info.kb_id == second.kb_id
    assert "Furosemide" in kb.search(["how does furosemide work"], 1, RetrievalMode.DENSE)[0][0].text
    assert "Furosemide" in kb.search(["cotransporter"], 1, RetrievalMode.BM25)[0][0].text


def test_rebuilding_reuses_cached_embeddings_bit_for_bit(tmp_path, embedder):
    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False)
    old_vectors = (current_version(out) / "vectors.f16").read_bytes()
    before = FaissKnowledgeBase.load(out, embedder).search(["blood thinner monitoring"], 3, RetrievalMode.DENSE)[0]
    recorder = RecordingEmbedder(embedder)
    manifest = build_kb(DOCS + NEW_DOCS[:1], out, recorder, progress=False)
    assert recorder.encoded == [NEW_DOCS[0].text]
    assert manifest.build["reused"] == len(DOCS) and manifest.build["embedded"] == 1
    new_vectors = (current_version(out) / "vectors.f16").read_bytes()
    assert new_vectors[:len(old_vectors)] == old_vectors  # the cached rows, bit for bit
    fresh = tmp_path / "fresh"
    build_kb(DOCS + NEW_DOCS[:1], fresh, embedder, progress=False)
    # a fresh build embeds the texts in other batches: on CPUs whose kernels depend on the batch (e.g. with AMX)
    # the float32 results differ in the last bits, so an fp16 value may round the other way
    rebuilt, fresh_vectors = (np.frombuffer(b, dtype=np.float16).astype(np.float32)
                              for b in (new_vectors, (current_version(fresh) / "vectors.f16").read_bytes()))
    assert rebuilt.shape == fresh_vectors.shape and np.abs(rebuilt - fresh_vectors).max() < 1e-3
    after = FaissKnowledgeBase.load(out, embedder).search(["blood thinner monitoring"], 3, RetrievalMode.DENSE)[0]
    assert [(h.fact_id, h.score) for h in after] == [(h.fact_id, h.score) for h in before]


def test_a_rebuild_repairs_damage_instead_of_carrying_it_and_kb_add_refuses_a_damaged_version(tmp_path, embedder):
    out, fresh = tmp_path / "kb", tmp_path / "fresh"
    build_kb(DOCS, fresh, embedder, progress=False)
    build_kb(DOCS, out, embedder, progress=False)
    damage(current_version(out) / "vectors.f16", at=1 / 3, mask=0x40)  # one damaged embedding
    with pytest.raises(KnowledgeBaseCorruptError, match="vectors.f16 fails its checksum"):
        add_documents(out, NEW_DOCS, embedder, progress=False)  # would copy the damage under new checksums
    recorder = RecordingEmbedder(embedder)
    manifest = build_kb(DOCS, out, recorder, progress=False)  # what the KB_CORRUPT error tells users to do
    assert manifest.build["reused"] == 0 and manifest.build["embedded"] == len(recorder.encoded) > 0
    assert (current_version(out) / "vectors.f16").read_bytes() == (current_version(fresh) / "vectors.f16").read_bytes()
    FaissKnowledgeBase.load(out, embedder)  # verifies
    assert add_documents(out, NEW_DOCS, embedder, progress=False).num_facts == manifest.num_facts + 1

    (out / "CURRENT").write_text("v000099\n")  # points nowhere: a rebuild still works
    rebuilt = build_kb(DOCS, out, embedder, progress=False)
    assert rebuilt.build["reused"] == 0 and FaissKnowledgeBase.load(out, embedder).info.kb_id == rebuilt.kb_id


@pytest.mark.parametrize("family", ["hnsw", "ivfpq"])
def test_approximate_families_find_what_flat_finds(tmp_path, embedder, kb_dir, family):
    docs = DOCS + [Document(f"filler{i}", f"Filler note {i} about hospital logistics and scheduling number {i}.")
                   for i in range(400)]
    out = tmp_path / family
    build_kb(docs, out, embedder, chunking=ChunkSpec(max_chars=60), progress=False,
             options=BuildOptions(index=family, index_params={"nlist": 8, "nprobe": 8} if family == "ivfpq" else {}))
    kb = FaissKnowledgeBase.load(out, embedder, LoadOptions(max_per_document=0))
    assert kb.info.index_family == family
    for query, word in (("How is the effect of warfarin monitored?", "INR"), ("acid reflux pill", "Omeprazole")):
        assert word in " ".join(h.text for h in kb.search([query], 3, RetrievalMode.DENSE)[0])
    add_documents(out, NEW_DOCS[:1], embedder, progress=False)  # extends the trained index, no retraining
    kb = FaissKnowledgeBase.load(out, embedder, LoadOptions(mmap=True))
    assert kb.info.index_params == {k: str(v) for k, v in kb.manifest.index["params"].items()}
    assert "Furosemide" in kb.search(["how does furosemide work"], 1, RetrievalMode.DENSE)[0][0].text


def test_a_corrupted_index_file_is_detected_on_load(tmp_path, embedder):
    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False)
    index_file = current_version(out) / "index.faiss"
    data = damage(index_file)
    with pytest.raises(KnowledgeBaseCorruptError, match="index.faiss fails its checksum"):
        FaissKnowledgeBase.load(out, embedder)
    index_file.write_bytes(bytes(data[:100]))
    with pytest.raises(KnowledgeBaseCorruptError, match="truncated"):
        FaissKnowledgeBase.load(out, embedder, LoadOptions(verify="sample"))


@pytest.fixture(scope="module")
def other_embedder(tmp_path_factory):
    """A genuinely different sentence-transformers model: MiniLM plus a seeded 384->64 projection."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    from kb.embedder import SentenceTransformerEmbedder, resolve_model_dir

    torch.manual_seed(0)
    base = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu", local_files_only=True)
    projection = models.Dense(384, 64, bias=False, activation_function=torch.nn.Identity())
    path = tmp_path_factory.mktemp("models") / "minilm-64"
    SentenceTransformer(modules=[*base, projection, models.Normalize()]).save(str(path))
    return SentenceTransformerEmbedder(str(path))


def test_a_kb_built_with_another_embedder_is_refused_with_a_clear_error(tmp_path, embedder, other_embedder):
    out = tmp_path / "kb"
    build_kb(DOCS, out, other_embedder, progress=False)
    assert other_embedder.dim == 64 and other_embedder.weights_hash != embedder.weights_hash
    with pytest.raises(KnowledgeBaseMismatchError) as err:
        FaissKnowledgeBase.load(out, embedder)
    message = err.value.message
    assert "minilm-64" in message and "all-MiniLM-L6-v2" in message and "KGV_EMBEDDER__MODEL" in message
    assert err.value.code == "FAILED_PRECONDITION" and err.value.reason == "KB_EMBEDDER_MISMATCH"
    with pytest.raises(KnowledgeBaseMismatchError, match="--embedder"):
        add_documents(out, NEW_DOCS, embedder, progress=False)
    assert FaissKnowledgeBase.load(out, other_embedder).info.dim == 64


def test_a_kb_without_bm25_refuses_lexical_modes(tmp_path, embedder):
    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, options=BuildOptions(bm25=False), progress=False)
    kb = FaissKnowledgeBase.load(out, embedder)
    assert kb.info.modes == (RetrievalMode.DENSE,)
    with pytest.raises(FailedPreconditionError, match="built without BM25"):
        kb.search(["INR"], 3, RetrievalMode.HYBRID)


def test_a_loaded_version_keeps_serving_after_newer_ones_replace_it(tmp_path, embedder):
    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False)
    old = FaissKnowledgeBase.load(out, embedder)
    add_documents(out, NEW_DOCS, embedder, keep_versions=1, progress=False)
    assert [v.name for v in versions(out)] == ["v000002"]  # the old files are unlinked...
    for mode in RetrievalMode:  # ...but what a server already loaded still answers
        assert "INR" in " ".join(h.text for h in old.search(["warfarin INR"], 3, mode)[0])


def test_per_document_limit_and_top_k_edges(kb_dir, embedder):
    query = ["warfarin heparin INR aPTT monitoring"]
    uncapped = FaissKnowledgeBase.load(kb_dir, embedder, LoadOptions(max_per_document=0))
    many = [h.source for h in uncapped.search(query, 4, RetrievalMode.HYBRID)[0]]
    assert len(set(many)) < len(many) == 4
    kb = FaissKnowledgeBase.load(kb_dir, embedder)  # default: one fact per document
    sources = [h.source for h in kb.search(query, 4, RetrievalMode.HYBRID)[0]]
    assert len(sources) == len(set(sources)) == 4
    assert kb.search(["anything"], 0, RetrievalMode.DENSE) == [[]] and kb.search([], 3, RetrievalMode.DENSE) == []
    assert np.isfinite([h.score for h in kb.search(["x"], 50, RetrievalMode.DENSE)[0]]).all()


def test_source_context_is_embedded_with_every_part_of_a_source_but_never_stored(tmp_path, embedder):
    docs = [
        Document("gsd", "Glutathione synthetase deficiency prevents glutathione production. It is rare.", "u1"),
        Document("gsd", "This condition is inherited in an autosomal recessive pattern.", "u1"),
        Document("pku", "Phenylketonuria raises phenylalanine in the blood.", "u2"),
        Document("pku", "This condition is inherited in an autosomal recessive pattern.", "u2"),
        Document("pku", "This condition is inherited in an autosomal recessive pattern.", "u2"),
    ]
    recorder = RecordingEmbedder(embedder)
    manifest = build_kb(docs, tmp_path / "kb", recorder, chunking=ChunkSpec(max_chars=500, context_chars=40),
                        progress=False)
    assert recorder.encoded == [  # a fact lacking its context gets a second vector, in context
        docs[0].text,
        docs[1].text, "Glutathione synthetase deficiency\nThis condition is inherited in an autosomal recessive pattern.",
        docs[2].text,
        "Phenylketonuria raises phenylalanine in\nThis condition is inherited in an autosomal recessive pattern.",
    ]  # docs[3] alone is docs[1]: embedded once
    assert manifest.build["duplicates_dropped"] == 1 and manifest.num_facts == 4 and manifest.num_vectors == 6
    kb = FaissKnowledgeBase.load(tmp_path / "kb", embedder, LoadOptions(max_per_document=0))
    hits = kb.search(["Is phenylketonuria inherited?"], 4, RetrievalMode.DENSE)[0]
    assert hits[0].fact_id == "pku#1" and hits[0].text == docs[3].text
    assert sorted(h.fact_id for h in hits) == ["gsd", "gsd#1", "pku", "pku#1"]  # one hit per fact
    assert kb.search(["inherited phenylketonuria"], 1, RetrievalMode.BM25)[0][0].fact_id == "pku#1"


def test_memory_mapped_loading_searches_like_reading_into_memory(kb_dir, embedder):
    loaded = FaissKnowledgeBase.load(kb_dir, embedder)
    mapped = FaissKnowledgeBase.load(kb_dir, embedder, LoadOptions(mmap=True, verify="sample"))
    for mode in RetrievalMode:
        query = ["how is heparin monitored"]
        assert mapped.search(query, 3, mode) == loaded.search(query, 3, mode)


def test_a_source_id_repeated_by_another_source_does_not_share_its_context(tmp_path, embedder):
    # MedQuAD's ids restart in every collection: "0000022" names an NHLBI page and a GARD page
    docs = [
        Document("0000022", "Bronchopulmonary dysplasia is a lung disease of premature infants.", "nhlbi/bpd"),
        Document("0000022", "Adiposis dolorosa is a rare condition with painful lipomas.", "gard/adiposis"),
        Document("0000022", "It usually occurs in obese, post-menopausal women.", "gard/adiposis"),
    ]
    recorder = RecordingEmbedder(embedder)
    build_kb(docs, tmp_path / "kb", recorder, chunking=ChunkSpec(max_chars=500, context_chars=40), progress=False)
    assert recorder.encoded[-1] == "Adiposis dolorosa is a rare condition\n" + docs[2].text
    assert not any(text.startswith("Bronchopulmonary") and "obese" in text for text in recorder.encoded)
    # kb add continues a stored source with the context it was built with
    recorder.encoded.clear()
    add_documents(tmp_path / "kb", [Document("0000022", "Treatment removes the lipomas.", "gard/adiposis")],
                  recorder, progress=False)
    assert recorder.encoded == ["Treatment removes the lipomas.",
                                "Adiposis dolorosa is a rare condition\nTreatment removes the lipomas."]


def test_kb_add_reads_a_store_written_before_documents_kept_their_source(tmp_path, embedder):
    import sqlite3

    from kb.layout import current_version

    docs = [Document("gsd", "Glutathione synthetase deficiency prevents glutathione production.", "u1")]
    build_kb(docs, tmp_path / "kb", embedder, chunking=ChunkSpec(max_chars=500, context_chars=40), progress=False)
    store = current_version(tmp_path / "kb") / "facts.sqlite"
    con = sqlite3.connect(store)  # the earlier schema: documents (doc, doc_id, context)
    con.executescript("CREATE TABLE d2 (doc INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, context TEXT NOT NULL);"
                      "INSERT INTO d2 SELECT doc, doc_id, context FROM documents; DROP TABLE documents;"
                      "ALTER TABLE d2 RENAME TO documents; CREATE INDEX documents_doc_id ON documents (doc_id);")
    con.commit()
    con.close()
    from kb.manifest import FileEntry, Manifest

    manifest = Manifest.load(current_version(tmp_path / "kb"))
    manifest.files["facts.sqlite"] = vars(FileEntry.of(store))
    manifest.save(current_version(tmp_path / "kb"))
    recorder = RecordingEmbedder(embedder)
    add_documents(tmp_path / "kb", [Document("gsd", "This condition is inherited.", "u1")], recorder, progress=False)
    assert recorder.encoded[-1] == "Glutathione synthetase deficiency\nThis condition is inherited."
    kb = FaissKnowledgeBase.load(tmp_path / "kb", embedder)
    assert kb.info.num_facts == 2


def test_a_damaged_demo_kb_cache_is_rebuilt_by_the_server_and_a_configured_kb_is_not(tmp_path, embedder, caplog):
    from kb.demo import ensure_demo_kb
    from server.config import KbSettings
    from server.kb_holder import KbHolder

    demo = ensure_demo_kb(tmp_path / "cache", embedder)
    damaged = current_version(demo)
    damage(damaged / "index.faiss")
    holder = KbHolder(KbSettings(cache_dir=tmp_path / "cache"))
    holder.load(embedder)
    assert holder.current is not None and holder.error is None and current_version(demo) != damaged
    assert any("demo knowledge base" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)

    damage(current_version(demo) / "index.faiss")
    configured = KbHolder(KbSettings(cache_dir=tmp_path / "cache", path=demo))  # the user's own KB: only reported
    with pytest.raises(KnowledgeBaseCorruptError):
        configured.load(embedder)
    assert configured.current is None and configured.error is not None


class SmallBatchEmbedder(RecordingEmbedder):
    batch_size = 2


def test_progress_moves_per_embedding_batch_in_documents_with_the_current_counts(tmp_path, embedder, monkeypatch):
    import kb.build

    shown: list[tuple] = []

    class Shown(kb.build._Progress):  # the real bar, with what it was asked to show kept for the test
        def start(self, total):
            shown.append(("total", total))
            super().start(total)

        def advance(self, position, **postfix):
            shown.append((position, postfix["facts"], postfix["embedded"]))
            super().advance(position, **postfix)

    monkeypatch.setattr(kb.build, "_Progress", Shown)
    docs = [Document(f"d{i}", f"Drug {i} is given at {i + 1} mg per day for condition {i}.") for i in range(6)]
    recorder = SmallBatchEmbedder(embedder)
    build_kb(docs, tmp_path / "kb", recorder, chunking=ChunkSpec(max_chars=500, context_chars=0),
             options=BuildOptions(batch_facts=4), progress=True)
    # 4 facts per flush, 2 texts per embedding batch: the bar moves after every batch, not only per flush,
    # and each update carries the counts as they are then
    assert shown == [("total", 6), (2, 4, 2), (4, 4, 4), (4, 4, 4), (6, 6, 6), (6, 6, 6)]
    assert sorted(recorder.encoded) == sorted(d.text for d in docs)


def test_a_load_that_races_a_writer_pruning_its_version_loads_the_new_version(tmp_path, embedder, monkeypatch):
    """A writer that publishes and prunes (keep_versions=1) while a server reads the old version made the reload
    fail KB_CORRUPT ("No such file or directory") although every published version was whole."""
    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False)
    real = FaissKnowledgeBase._load_version.__func__
    raced = []

    def racing(cls, path, version, embedder_, options):
        if not raced:  # the writer publishes a new version and prunes this one mid-load
            raced.append(version.name)
            add_documents(out, NEW_DOCS[:1], embedder, keep_versions=1, progress=False)
            assert not version.exists()
        return real(cls, path, version, embedder_, options)

    monkeypatch.setattr(FaissKnowledgeBase, "_load_version", classmethod(racing))
    kb = FaissKnowledgeBase.load(out, embedder)
    assert raced and kb.version.name != raced[0] and kb.info.num_facts == len(DOCS) + 1


def test_a_manifest_with_unusable_index_settings_is_refused_at_load(tmp_path, embedder):
    import json

    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False, options=BuildOptions(index="hnsw"))
    manifest_path = current_version(out) / "manifest.json"
    good = json.loads(manifest_path.read_text())
    changes = [({"index": {**good["index"], "params": {**good["index"]["params"], "efSearch": 0}}}, "efSearch=0"),
               ({"index": {**good["index"], "family": "bogus"}}, "unknown index family 'bogus'"),
               ({"num_facts": 999}, "the fact store holds"),  # loaded, and reported 999 facts
               ({"bm25": {**good["bm25"], "stemmer": "klingon"}}, "klingon")]  # every BM25 search failed INTERNAL
    for change, message in changes:
        manifest_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(KnowledgeBaseCorruptError, match=message):
            FaissKnowledgeBase.load(out, embedder)


def test_index_parameters_are_checked_before_embedding_and_a_version_failing_its_test_load_is_not_published(
        tmp_path, embedder, monkeypatch):
    """A bad --index-param was found only after every fact was embedded (or never: one family's parameter given
    to another was ignored), and a version whose index could not be searched was published."""
    import kb.build
    import kb.index

    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False)
    published = current_version(out)
    recorder = RecordingEmbedder(embedder)
    for options, message in ((BuildOptions(index="hnsw", index_params={"nprobe": 4}), "does not apply to a hnsw"),
                             (BuildOptions(index="ivfpq", index_params={"m": 7}), "must divide the embedding")):
        with pytest.raises(ValueError, match=message):
            build_kb(NEW_DOCS, out, recorder, options=options, progress=False)
    assert recorder.encoded == []  # refused before anything was embedded

    def searches_nothing(self, queries, k):
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)

    breakages = [(kb.build, "add_vectors", lambda index, vectors, start=0: None, "index holds 0 vectors"),
                 (kb.index.VectorIndex, "search", searches_nothing, "found nothing")]
    for owner, name, broken, reason in breakages:
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, broken)
            with pytest.raises(KnowledgeBaseCorruptError,
                               match=f"failed its test load .*{reason}.*nothing was published"):
                build_kb(DOCS + NEW_DOCS[:1], out, embedder, progress=False)
        assert current_version(out) == published and versions(out) == [published]
        assert not [p for p in (out / "versions").iterdir() if p.name.startswith(".tmp-")]
    assert FaissKnowledgeBase.load(out, embedder).info.num_facts == len(DOCS)


def test_a_load_whose_current_version_is_pruned_as_it_is_resolved_loads_the_new_version(tmp_path, embedder,
                                                                                        monkeypatch):
    """CURRENT read, then the version it named pruned by a writer (keep_versions=1) before the reader looked it up:
    "CURRENT points at v000001, which is missing" (KB_CORRUPT) although every published version was whole."""
    import kb.knowledge_base
    import kb.layout

    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False)
    real = kb.layout.current_version
    raced = []

    def racing(path):
        if raced:
            return real(path)
        name = (out / "CURRENT").read_text().strip()
        raced.append(name)
        add_documents(out, NEW_DOCS[:1], embedder, keep_versions=1, progress=False)  # publishes, prunes `name`
        return _missing(path, name)

    def _missing(path, name):
        assert not (out / "versions" / name).exists()
        raise KnowledgeBaseCorruptError(f"{path}/CURRENT points at {name}, which is missing")  # as real() would

    monkeypatch.setattr(kb.knowledge_base, "current_version", racing)
    loaded = FaissKnowledgeBase.load(out, embedder)
    assert raced and loaded.version.name != raced[0] and loaded.info.num_facts == len(DOCS) + 1
    (out / "CURRENT").write_text("v000042\n")  # stays damaged: refused after the retries, not looped on
    with pytest.raises(KnowledgeBaseCorruptError, match="v000042, which is missing"):
        FaissKnowledgeBase.load(out, embedder)


def test_a_version_missing_a_file_or_whose_manifest_does_not_list_one_is_refused(tmp_path, embedder):
    """A flat KB loaded without vectors.f16 (only IVF-PQ reads it), and a file left out of the manifest was read
    without any checksum."""
    import json
    import shutil

    from kb.knowledge_base import required_files
    from kb.lexical import BM25_DIR

    out = tmp_path / "kb"
    build_kb(DOCS, out, embedder, progress=False)
    version = current_version(out)
    manifest_path = version / "manifest.json"
    good = json.loads(manifest_path.read_text())
    assert sorted(good["files"]) == sorted(required_files(FaissKnowledgeBase.load(out, embedder).manifest))
    pristine = tmp_path / "pristine"
    shutil.copytree(version, pristine)
    for name in ("vectors.f16", f"{BM25_DIR}/vocab.index.json"):
        manifest_path.write_text(json.dumps({**good, "files": {k: v for k, v in good["files"].items() if k != name}}))
        for verify in ("full", "off"):
            with pytest.raises(KnowledgeBaseCorruptError, match=f"incomplete: its manifest does not list {name}"):
                FaissKnowledgeBase.load(out, embedder, verify=verify)
    manifest_path.write_text(json.dumps(good))
    (version / "vectors.f16").unlink()
    with pytest.raises(KnowledgeBaseCorruptError, match="incomplete: vectors.f16 is missing"):
        FaissKnowledgeBase.load(out, embedder, verify="off")
    shutil.copy(pristine / "vectors.f16", version / "vectors.f16")
    assert FaissKnowledgeBase.load(out, embedder).info.num_facts == len(DOCS)


def _fact_ids(path):
    import sqlite3

    con = sqlite3.connect(current_version(path) / "facts.sqlite")
    try:
        return [row[0] for row in con.execute("SELECT fact_id FROM facts ORDER BY row")]
    finally:
        con.close()


def test_fact_ids_after_kb_add_are_those_one_build_gives_even_when_chunks_were_dropped(tmp_path, embedder):
    """Fact ids continued from the number of stored facts: a source id whose first chunk was dropped as a duplicate
    got 'a#2' twice and then 'a#2~1' from build + add, where one build gave 'a#3'."""
    import sqlite3

    from kb.manifest import FileEntry, Manifest

    spec = ChunkSpec(max_chars=36, context_chars=0)
    first = Document("z", "Aspirin is an NSAID.")
    repeated = Document("a", "Aspirin is an NSAID.\nWarfarin is monitored with the INR.\n"
                             "Heparin is monitored with aPTT.")
    later = Document("a", "Metformin lowers hepatic glucose output.")
    build_kb([first, repeated, later], tmp_path / "once", embedder, chunking=spec, progress=False)
    expected = _fact_ids(tmp_path / "once")
    assert expected == ["z", "a#1", "a#2", "a#3", "a#4"]  # a#0 was a duplicate of z
    build_kb([first, repeated], tmp_path / "twice", embedder, chunking=spec, progress=False)
    add_documents(tmp_path / "twice", [later], embedder, progress=False)
    assert _fact_ids(tmp_path / "twice") == expected
    # a KB built before chunks were counted numbers on from the highest fact id it holds
    legacy = tmp_path / "legacy"
    build_kb([first, repeated], legacy, embedder, chunking=spec, progress=False)
    store = current_version(legacy) / "facts.sqlite"
    con = sqlite3.connect(store)
    con.execute("DROP TABLE chunk_counts")
    con.commit()
    con.close()
    manifest = Manifest.load(current_version(legacy))
    manifest.files["facts.sqlite"] = vars(FileEntry.of(store))
    manifest.save(current_version(legacy))
    add_documents(legacy, [later], embedder, progress=False)
    assert _fact_ids(legacy) == expected and FaissKnowledgeBase.load(legacy, embedder).info.num_facts == 5
