"""Reading documents from JSONL, CSV/TSV, Parquet and text files, with field maps."""

import csv
import gzip
import json
import re

import pytest

from kb.ingest import Document, FieldMap, read_documents

ROWS = [
    {"qid": "q1", "answer": "Aspirin inhibits COX.", "url": "https://a/1", "focus": "Aspirin"},
    {"qid": "q1", "answer": "Warfarin needs INR checks.", "url": "https://a/2", "focus": "Warfarin"},
    {"qid": "", "answer": "Heparin activates antithrombin.", "url": None, "focus": None},
    {"qid": "q4", "answer": "   ", "url": "https://a/4", "focus": "empty"},
]
FIELDS = FieldMap(text="answer", id="qid", source="url", title="focus")


def _expected(name):
    return [
        Document("q1", "Aspirin inhibits COX.", "https://a/1", "Aspirin"),
        Document("q1", "Warfarin needs INR checks.", "https://a/2", "Warfarin"),
        Document(f"{name}:3", "Heparin activates antithrombin.", "", ""),
    ]


def test_jsonl_gz_keeps_repeated_ids_and_skips_empty_text(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    assert list(read_documents([path], FIELDS)) == _expected("docs.jsonl.gz")


def test_csv_and_tsv_with_multiline_cells(tmp_path):
    rows = [dict(r, url=r["url"] or "", focus=r["focus"] or "") for r in ROWS]
    rows[0]["answer"] = "Aspirin inhibits COX.\nIt thins blood, a lot."
    for name, delimiter in (("docs.csv", ","), ("docs.tsv", "\t")):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
        docs = list(read_documents([tmp_path / name], FIELDS))
        assert docs[0].text == "Aspirin inhibits COX.\nIt thins blood, a lot."
        assert docs[1:] == _expected(name)[1:]


def test_parquet_reads_only_the_mapped_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r, extra=[1, 2]) for r in ROWS]), path)
    assert list(read_documents([path], FIELDS)) == _expected("docs.parquet")


def test_text_files_and_directories_recursively_in_name_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("Beta blockers slow the heart.", encoding="utf-8")
    (tmp_path / "sub" / "a.md").write_text("# ACE inhibitors\nThey cause cough.", encoding="utf-8")
    (tmp_path / "notes.bin").write_bytes(b"\x00")  # not a document format: ignored inside directories
    docs = list(read_documents([tmp_path]))
    assert [(d.doc_id, d.text) for d in docs] == [
        ("b.txt", "Beta blockers slow the heart."), ("a.md", "# ACE inhibitors\nThey cause cough.")]
    assert docs[0].source == str(tmp_path / "b.txt")


def test_clear_errors_for_bad_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        list(read_documents([bad]))
    with pytest.raises(FileNotFoundError):
        list(read_documents([tmp_path / "missing.jsonl"]))
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported input format"):
        list(read_documents([tmp_path / "x.bin"]))
    (tmp_path / "c.csv").write_text("body\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="--text-field"):
        list(read_documents([tmp_path / "c.csv"]))


def test_a_text_field_holding_a_list_of_strings_is_one_document_with_a_blank_line_between_them(tmp_path):
    # PubMedQA keeps an abstract's sections as a list: {"pmid": ..., "CONTEXTS": ["Background ...", "Methods ..."]}
    rows = [{"pmid": "21645374", "CONTEXTS": ["Programmed cell death is regulated.", "Mitochondria were stained."]},
            {"pmid": "2", "CONTEXTS": []}]  # an empty list is a row without text: skipped
    fields = FieldMap(text="CONTEXTS", id="pmid")
    jsonl = tmp_path / "pubmedqa.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    expected = [Document("21645374", "Programmed cell death is regulated.\n\nMitochondria were stained.")]
    assert list(read_documents([jsonl], fields)) == expected

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "pubmedqa.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    assert list(read_documents([parquet], fields)) == expected


@pytest.mark.parametrize("value, kind", [(42, "int"), ({"a": "b"}, "dict"), (["ok", 3], "a list holding a non-string"),
                                         (True, "bool")])
def test_a_text_field_that_is_not_text_is_an_error_naming_the_line_and_the_field(tmp_path, value, kind):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "Fine."}) + "\n" + json.dumps({"body": "x", "text": value}) + "\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match=rf"docs.jsonl:2: field 'text' is {kind}, not text .*--text-field"):
        list(read_documents([path]))


def test_the_reader_counts_rows_up_front_and_as_it_reads_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kb.ingest import DocumentReader

    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")  # a blank line is no row
    rows = [dict(r, url=r["url"] or "", focus=r["focus"] or "") for r in ROWS]
    rows[0]["answer"] = "Aspirin inhibits COX.\nIt thins blood."  # a cell over two lines is still one row
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("Beta blockers slow the heart.", encoding="utf-8")
    reader = DocumentReader([tmp_path], FIELDS)
    assert reader.count_rows() == 4 + 4 + 4 + 1
    docs = list(reader)
    assert len(docs) == 3 + 3 + 3 + 1 and reader.rows == 13  # rows without text are read, and counted
    with pytest.raises(FileNotFoundError, match="does not exist"):  # counting reads (and checks) every row
        DocumentReader([tmp_path / "missing.jsonl"]).count_rows()


def test_a_byte_order_mark_is_not_part_of_the_first_column_or_line(tmp_path):
    """A CSV from Excel ("CSV UTF-8") with the id column first silently lost its ids; a JSONL with a BOM failed."""
    (tmp_path / "facts.csv").write_bytes("\ufeffid,text\nw1,Warfarin is monitored with the INR.\n".encode())
    (tmp_path / "facts.jsonl").write_bytes('\ufeff{"id": "h1", "text": "Heparin is monitored with the aPTT."}\n'
                                           .encode())
    with gzip.open(tmp_path / "more.JSONL.GZ", "wt", encoding="utf-8") as fh:  # upper-case suffix: still gzip
        fh.write('{"id": "p1", "text": "Protamine reverses heparin."}\n')
    docs = list(read_documents([tmp_path / "facts.csv", tmp_path / "facts.jsonl", tmp_path / "more.JSONL.GZ"]))
    assert [d.doc_id for d in docs] == ["w1", "h1", "p1"]


def test_directories_skip_hidden_directories_and_knowledge_bases_inside_them(tmp_path):
    root = tmp_path / "corpus"
    (root / ".ipynb_checkpoints").mkdir(parents=True)
    (root / ".ipynb_checkpoints" / "notes-checkpoint.txt").write_text("A stale copy.")
    (root / "kb" / "versions" / "v000001" / "bm25").mkdir(parents=True)
    (root / "kb" / "CURRENT").write_text("v000001\n")
    (root / "kb" / "versions" / "v000001" / "bm25" / "params.index.json").write_text("{}")
    (root / "notes.txt").write_text("Warfarin is a vitamin K antagonist.")
    assert [d.text for d in read_documents([root])] == ["Warfarin is a vitamin K antagonist."]


def test_unreadable_files_are_errors_naming_the_file(tmp_path):
    """A file that is not UTF-8 said only "'utf-8' codec can't decode byte 0xe9"; a truncated or not-gzip .gz
    ended in an EOFError or BadGzipFile traceback (status 1, not 2)."""
    (tmp_path / "latin.jsonl").write_bytes(b'{"id": "a", "text": "caf\xe9 is coffee"}\n')
    whole = gzip.compress(b'{"id": "a", "text": "Warfarin is monitored with the INR."}\n' * 200)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "plain.jsonl.gz").write_bytes(b'{"id": "a", "text": "not compressed"}\n')
    for name, what in (("latin.jsonl", ":1: is not UTF-8"), ("cut.jsonl.gz", ": ends early"),
                       ("plain.jsonl.gz", ": is not gzip data")):
        with pytest.raises(ValueError, match=f"{name}{what}"):
            list(read_documents([tmp_path / name]))


def test_facts_without_any_indexable_word_are_refused_with_advice(tmp_path):
    from kb.lexical import build_bm25

    with pytest.raises(ValueError, match="--no-bm25"):
        build_bm25([["!!! ???", "the and of"]], tmp_path / "bm25")


def test_text_that_is_not_utf8_or_holds_a_lone_surrogate_is_an_error_naming_file_and_line(tmp_path):
    """The reader decodes ahead in blocks: a bad byte on line 3 of a CSV said "after 0 rows" and no line; a lone
    surrogate escape in JSON failed later with "'utf-8' codec can't encode character" naming no file."""
    (tmp_path / "latin.csv").write_bytes(b"id,text\na,Fine text here.\nb,\"Two\nlines\"\nc,Caf\xe9 au lait.\n")
    (tmp_path / "late.jsonl.gz").write_bytes(gzip.compress(
        b'{"id": "a", "text": "Fine."}\n' * 50_000 + b'{"id": "b", "text": "caf\xe9"}\n'))  # past the first block
    (tmp_path / "surrogate.jsonl").write_bytes(b'{"id": "a", "text": "Good \\ud83d\\ude00 pair."}\n'
                                               b'{"id": "b\\udc80", "text": "A bad id."}\n')
    for name, message in (("latin.csv", "latin.csv:5: is not UTF-8 text (invalid continuation byte)"),
                          ("late.jsonl.gz", "late.jsonl.gz:50001: is not UTF-8 text"),
                          ("surrogate.jsonl", "surrogate.jsonl:2: field 'id' holds a lone surrogate")):
        with pytest.raises(ValueError, match=re.escape(message)):
            list(read_documents([tmp_path / name]))


def test_an_input_that_cannot_be_opened_is_an_input_error_naming_it(tmp_path, monkeypatch):
    import builtins

    path = tmp_path / "secret.jsonl"
    path.write_text('{"id": "a", "text": "Warfarin."}\n')
    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)  # chmod 000 does not stop root
    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot be read (Permission denied)")):
        list(read_documents([path]))


def test_directories_skip_unpublished_knowledge_bases_and_the_excluded_output(tmp_path):
    """An output inside the input whose first build died after its version was renamed into place (versions/v…
    with manifest.json and bm25/*.json, no CURRENT yet) was read back: 'manifest.json:1: not valid JSON'."""
    from kb.ingest import DocumentReader

    root = tmp_path / "corpus"
    unborn = root / "kb" / "versions" / "v000001"
    (unborn / "bm25").mkdir(parents=True)
    (root / "kb" / ".lock").touch()
    (unborn / "manifest.json").write_text('{\n  "kb_id": "kb-1"\n}\n')
    (unborn / "bm25" / "vocab.index.json").write_text('{"warfarin": 0}\n')
    (root / "staged" / "versions" / ".tmp-3f2a").mkdir(parents=True)  # a build in progress, lock elsewhere
    (root / "staged" / "versions" / ".tmp-3f2a" / "notes.txt").write_text("Half-built.")
    (root / "out").mkdir()
    (root / "out" / "draft.txt").write_text("Not an input: the output directory.")
    (root / "versions").mkdir()  # a plain folder of that name is data
    (root / "versions" / "v2.txt").write_text("Heparin is monitored with the aPTT.")
    (root / "notes.txt").write_text("Warfarin is a vitamin K antagonist.")
    docs = DocumentReader([root], exclude=[root / "out"])
    assert [d.text for d in docs] == ["Warfarin is a vitamin K antagonist.", "Heparin is monitored with the aPTT."]
    with pytest.raises(ValueError, match="is a knowledge base, not documents"):
        list(read_documents([root / "kb"]))


@pytest.mark.parametrize("name", ["docs.tsv", "docs.csv"])
def test_a_stray_quote_is_an_error_naming_the_row_not_text_that_loses_its_quotes(tmp_path, name):
    sep = "\t" if name.endswith(".tsv") else ","
    fields = FieldMap(text="text", id="id")
    bad_start = tmp_path / name
    bad_start.write_text(f'id{sep}text\n1{sep}Aspirin inhibits COX.\n2{sep}"Heparin" is reversed by protamine.\n',
                         encoding="utf-8")
    with pytest.raises(ValueError, match=r"the row from line 3: not a well-formed"):
        list(read_documents([bad_start], fields))
    unbalanced = tmp_path / ("u" + name)
    unbalanced.write_text(f'id{sep}text\n1{sep}"Unbalanced start\n2{sep}Warfarin needs INR checks.\n',
                          encoding="utf-8")
    with pytest.raises(ValueError, match=r"the row from line 2: .*unexpected end of data"):
        list(read_documents([unbalanced], fields))
    # a quote inside a cell is text, as before
    inner = tmp_path / ("i" + name)
    inner.write_text(f'id{sep}text\n1{sep}He said "no" to it\n', encoding="utf-8")
    assert [d.text for d in read_documents([inner], fields)] == ['He said "no" to it']


def test_a_row_with_more_cells_than_the_header_is_an_error_not_a_cut_text(tmp_path):
    path = tmp_path / "docs.tsv"
    path.write_text("id\ttext\n1\tAspirin inhibits COX\tand thins blood.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 1 \(line 2\) has 3 cells, the header 2"):
        list(read_documents([path], FieldMap(text="text", id="id")))
