"""Rows that real datasets write were refused or lost their InfoGain target:

- a Parquet `choices` struct column of rows with 4 and 5 options gives the 4-option rows `E: null`, which failed
  every such row ("choices: must be a list of strings or whole numbers");
- a CSV `choices` cell holding a JSON object keyed by letter was refused, though JSONL takes one;
- a row with an answer but no question (ProcessBench's `problem`) failed whole, KI included (the server's
  "InfoGain needs the question"), where a row without an answer gets KI only;
- MedQA options ending in "\\n" failed the row ("choices[3]: must be one line");
- a Parquet float column of whole answers with a gap ([36.0, None, 36.0]) was refused as "the fraction 36.0",
  whose advice ("36.0") would change the target;
- question ids 3 and 3.0 (a float column with a gap) were journaled apart.
"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client import batch, requests
from client.batch_io import read_rows
from client.errors import VerifierError


def _plan(tmp_path, rows, metrics=("ki", "infogain"), name="in.jsonl"):
    source = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), source)
    elif not isinstance(rows, str):
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        source.write_text(rows)
    opts = batch.BatchOptions(input=source, output=tmp_path / "out.jsonl", metrics=metrics, progress=False)
    journal = batch.Journal(opts.output)
    try:
        summary = batch.BatchSummary()
        planned = [p for _, p in batch.plan_items(opts, journal, summary)]
    finally:
        journal.close()
    return planned, summary


def _error(planned):
    assert isinstance(planned, dict), planned
    return planned["status"]


# ---- 1. Parquet struct choices with null options ------------------------------------------------------------

def test_parquet_struct_choices_of_rows_with_4_and_5_options_are_scored_as_given(tmp_path):
    rows = [{"id": "four", "question": "q", "reasoning": "x", "answer": "B",
             "choices": {"A": "Protamine", "B": "Vitamin K", "C": "Heparin", "D": "Warfarin"}},
            {"id": "five", "question": "q", "reasoning": "x", "answer": "E",
             "choices": {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"}}]
    planned, _ = _plan(tmp_path, rows, name="in.parquet")
    assert [type(p) for p in planned] == [batch.Item, batch.Item], planned
    assert list(planned[0].request.choices) == ["Protamine", "Vitamin K", "Heparin", "Warfarin"]
    assert list(planned[1].request.choices) == ["a", "b", "c", "d", "e"]


def test_a_null_option_before_a_given_one_is_refused_naming_it():
    with pytest.raises(VerifierError) as refused:
        requests.chain_request({"reasoning": "x", "choices": {"A": "a", "B": "b", "C": None, "D": "d"}})
    assert refused.value.field_violations == [
        ("choices", "option C is null, but option D after it is given: give every option up to the last, or the "
                    "options as a list of their texts, in order")]


def test_options_that_are_all_null_are_no_options():
    request = requests.chain_request({"reasoning": "x", "choices": {"A": None, "B": None}})
    assert list(request.choices) == []


# ---- 2. CSV choices as a JSON object ---------------------------------------------------------------------------

def test_a_csv_choices_cell_may_hold_an_object_keyed_by_letter(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,question,reasoning,answer,choices\n'
                      'a,q,x,A,"{""A"": ""Protamine"", ""B"": ""Vitamin K""}"\n')
    assert dict(read_rows(source))["row-1"]["choices"] == {"A": "Protamine", "B": "Vitamin K"}
    planned, _ = _plan(tmp_path, source.read_text(), name="in.csv")
    assert list(planned[0].request.choices) == ["Protamine", "Vitamin K"]


def test_a_csv_steps_cell_holding_an_object_is_still_refused(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,steps\na,"{""A"": ""x""}"\n')
    assert str(dict(read_rows(source))["row-1"]) == "row 1: column 'steps' must hold a JSON list"


# ---- 3. no question; options with a trailing line break -------------------------------------------------------

@pytest.mark.parametrize("question", [None, "", "  \n"])
def test_a_row_without_a_question_gets_ki_only_with_the_reason(tmp_path, question):
    row = {"id": "a", "problem": "Which drug reverses heparin?", "reasoning": "Protamine reverses heparin.",
           "answer": "Protamine"}
    if question is not None:
        row["question"] = question
    (item,), summary = _plan(tmp_path, [row])
    assert isinstance(item, batch.Item), item
    assert list(item.request.metrics) == [requests.METRICS["ki"]]
    assert item.notes == {"info_gain_null_reason": batch.NO_QUESTION}
    assert batch.NO_QUESTION == "the row has no question: InfoGain needs the question (KI only)"
    assert summary.ki_only_no_question == 1 and summary.ki_only == 0


def test_a_row_without_answer_nor_question_keeps_the_no_target_reason(tmp_path):
    (item,), summary = _plan(tmp_path, [{"id": "a", "reasoning": "x"}])
    assert item.notes == {"info_gain_null_reason": batch.NO_TARGET} and summary.ki_only == 1


def test_a_row_with_its_question_asks_for_both_metrics(tmp_path):
    (item,), _ = _plan(tmp_path, [{"id": "a", "question": "q", "reasoning": "x", "answer": "B"}])
    assert len(item.request.metrics) == 2 and item.notes == {}


def test_infogain_alone_still_sends_a_row_without_a_question_for_the_server_to_refuse(tmp_path):
    (item,), _ = _plan(tmp_path, [{"id": "a", "reasoning": "x", "answer": "B"}], metrics=("infogain",))
    assert list(item.request.metrics) == [requests.METRICS["infogain"]] and item.notes == {}


@pytest.mark.parametrize("choices", [["Protamine", "Vitamin K", "Heparin", "Warfarin\n"],
                                     {"A": " Protamine", "B": "Vitamin K", "C": "Heparin", "D": "Warfarin\r\n"}])
def test_the_spaces_and_line_breaks_around_an_option_are_dropped(choices):
    request = requests.chain_request({"question": "q", "reasoning": "x", "answer": "A", "choices": choices})
    assert list(request.choices) == ["Protamine", "Vitamin K", "Heparin", "Warfarin"]


def test_a_line_break_inside_an_option_is_left_for_the_server_to_refuse():
    request = requests.chain_request({"reasoning": "x", "choices": ["one\ntwo", "three"]})
    assert list(request.choices) == ["one\ntwo", "three"]


# ---- 8. whole-number answers from a float column ---------------------------------------------------------------

def test_parquet_whole_answers_in_a_float_column_with_a_gap_are_their_integers(tmp_path):
    rows = [{"id": "a", "question": "q", "reasoning": "x", "gold_answer": 36.0, "answer": 36.0},
            {"id": "b", "question": "q", "reasoning": "x", "answer": None, "gold_answer": None},
            {"id": "c", "question": "q", "reasoning": "x", "gold_answer": 36.0, "answer": 2.5}]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    assert pq.read_schema(source).field("gold_answer").type == pa.float64()
    planned, _ = _plan(tmp_path, rows, name="in.parquet")
    assert (planned[0].request.gold_answer, planned[0].request.answer) == ("36", "36")
    assert _error(planned[2])["message"].startswith("row 3: invalid request: answer: must be a string or a whole "
                                                    "number, not the fraction 2.5")


def test_parquet_whole_options_in_a_float_list_are_their_integers(tmp_path):
    rows = [{"id": "a", "question": "q", "reasoning": "x", "answer": "A", "choices": [1.0, 2.0]}]
    planned, _ = _plan(tmp_path, rows, name="in.parquet")
    assert list(planned[0].request.choices) == ["1", "2"]


def test_a_jsonl_whole_float_answer_is_refused_with_the_gaps_hint(tmp_path):
    (record,), _ = _plan(tmp_path, [{"id": "a", "question": "q", "reasoning": "x", "answer": 36.0}])
    message = _error(record)["message"]
    assert "a column of whole numbers with gaps is written as floats" in message, message
    assert "write it as an integer (36)" in message, message


# ---- 4. question ids 3 and 3.0 -----------------------------------------------------------------------------------

def test_a_whole_float_question_id_or_group_is_journaled_as_its_integer(tmp_path):
    rows = [{"id": "a", "question": "q", "reasoning": "x", "answer": "A", "question_id": 3.0, "group": 1.0},
            {"id": "b", "question": "q", "reasoning": "x", "answer": "A", "question_id": 3.5, "group": "sft"}]
    planned, _ = _plan(tmp_path, rows)
    assert planned[0].extra == {"question_id": 3, "group": 1}
    assert planned[1].extra == {"question_id": 3.5, "group": "sft"}


def test_export_writes_a_whole_float_question_id_as_its_integer():
    from client.batch_io import flatten_record

    row = flatten_record({"id": "a", "status": "ok", "question_id": 3.0, "group": 2.0})
    assert (row["question_id"], row["group"]) == ("3", "2")
