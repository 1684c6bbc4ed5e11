"""A Markdown table is read row by row: each row is a claim, the header row and the rule under it are none.

Before, the claims of "| Option | Analysis |\\n|---|---|\\n| A. Insulin | Causes ... |\\n| B. Metformin | ... |"
were "| Option | Analysis |\\n|---|---|\\n| A." and "Insulin | Causes hypoglycemia ... |\\n| B.": the option
letters were read as sentence ends and the rows ran into each other.
"""

from __future__ import annotations

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()
TABLE = ("| Option | Analysis |\n|---|:---:|\n| A. Insulin | Causes hypoglycemia and weight gain. |\n"
         "| B. Metformin | Lowers hepatic glucose output. |")


def test_each_row_is_a_claim_without_the_header():
    steps = SPLITTER.split(f"Let's compare the options:\n\n{TABLE}\n\nSo the answer is B.").steps
    assert [s.text for s in steps] == ["Let's compare the options:", TABLE, "So the answer is B."]
    assert [c.text for c in steps[1].claims] == ["Insulin | Causes hypoglycemia and weight gain. |",
                                                 "Metformin | Lowers hepatic glucose output. |"]
    assert not steps[1].no_knowledge


def test_a_long_table_stays_one_step():
    rows = "".join(f"| Drug{c} | Drug{c} causes effect {c}. |\n" for c in "ABCDEFGHIJ")
    table = "| Drug | Effect |\n|---|---|\n" + rows
    steps = SPLITTER.split(table).steps
    assert len(steps) == 1 and len(steps[0].claims) == 10
