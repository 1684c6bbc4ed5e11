"""A selection or calibration slice with no rows of the chosen sources stops training, the export and the
checkpoint average with a sentence naming the slice, not an IndexError from the tokenizer."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_training_review import _args, _write

sys.path.insert(0, str(REPO / "training"))
import average_checkpoints as A  # noqa: E402
import export_nli_judge as E  # noqa: E402
import train_nli_judge as T  # noqa: E402

LABELS = ("supported", "contradicted", "not_enough_info")


def _one_claim(salt):
    """Rows that all share one claim: one group, so all of them land in the same slice."""
    return [{"id": f"checkcovid:{salt}{i}_0", "source": "checkcovid", "split": "train",
             "premise": f"Trial {i} found that the drug lowered mortality in {i} patients.",
             "hypothesis": "The drug lowers mortality.", "label": LABELS[i % 3]} for i in range(40)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    for salt in "abcdefghijklmnopqrstuvwxyz":
        rows = _one_claim(salt)
        if len(T.split_slices(rows)["train"]) == len(rows):
            return _write(tmp_path_factory.mktemp("nli") / "train.jsonl.gz", rows)
    raise AssertionError("no salt puts the group in train")


def test_training_stops_before_it_starts_when_the_selection_slice_is_empty(data, tmp_path):
    with pytest.raises(SystemExit, match=r"the selection slice holds no rows of checkcovid"):
        T.main(_args(data, tmp_path / "run", "--max-steps", "2"))
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "run_config.json").exists()


def test_export_and_average_name_an_empty_slice(data, tmp_path):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    model = T.build_model(T.base_model_dir())
    torch.save({"weights": T.trainable_state(model, T.trainable_names(model)), "data_sha256": T.file_sha256(data),
                "slices": 2, "meta": {"step": 1, "epoch": 0}}, run / "best.pt")
    (run / "run_config.json").write_text(json.dumps({"args": {"sources": "checkcovid"}}))
    with pytest.raises(SystemExit, match=r"the calibration slice holds no rows of checkcovid"):
        E.main(["--run", str(run), "--data", str(data), "--out", str(tmp_path / "judge"), "--threads", "1"])
    assert not (tmp_path / "judge").exists()
    with pytest.raises(SystemExit, match=r"the selection slice holds no rows of checkcovid"):
        A.main(["--ckpt", str(run / "best.pt"), "--ckpt", str(run / "best.pt"), "--data", str(data),
                "--out", str(tmp_path / "avg"), "--threads", "1"])


def test_no_rows_encode_to_nothing():
    from transformers import AutoTokenizer

    enc = T.Encoded([], AutoTokenizer.from_pretrained(T.base_model_dir()), 48)
    assert (enc.input_ids, enc.token_type_ids, enc.lengths) == ([], [], [])
