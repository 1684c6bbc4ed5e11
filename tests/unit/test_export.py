"""training/export_nli_judge.py publishes a judge whole or not at all (a checkpoint of the base model, tiny data)."""

from __future__ import annotations

import gzip
import json
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "training"))
import export_nli_judge as E  # noqa: E402
import train_nli_judge as T  # noqa: E402

LABELS = ("supported", "contradicted", "not_enough_info")


def _data(path, salt: str = ""):
    """checkcovid-like rows, enough of them for a few in the calibration slice."""
    rows = [{"id": f"checkcovid:{salt}{i}_0", "source": "checkcovid", "split": "train",
             "premise": f"Trial {i} found that drug {i % 7} lowered mortality in {i} patients.",
             "hypothesis": f"Drug {i % 7} lowers mortality.", "label": LABELS[i % 3]} for i in range(120)]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    assert sum(r for r in (T.slice_of(r, {"checkcovid": 120}) == "calibration" for r in rows)) >= 4
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training run directory whose checkpoint is the base model with the recipe's seeded head."""
    import torch

    root = tmp_path_factory.mktemp("export")
    data = _data(root / "train.jsonl.gz")
    run = root / "run"
    run.mkdir()
    model = T.build_model(T.base_model_dir())
    names = T.trainable_names(model)
    torch.save({"weights": T.trainable_state(model, names), "data_sha256": T.file_sha256(data),
                "meta": {"step": 1, "epoch": 0}}, run / "best.pt")
    (run / "run_config.json").write_text(json.dumps({"args": {"sources": "checkcovid"}, "torch": torch.__version__}))
    return run, data


def test_an_export_is_published_whole_and_an_interrupted_one_leaves_the_previous_judge(run, tmp_path, capsys):
    from server.backends.judges.nli_model import NliModel

    run_dir, data = run
    out = tmp_path / "models" / "nli-judge"
    assert E.main(["--run", str(run_dir), "--data", str(data), "--out", str(out), "--threads", "1"]) == 0
    published = json.loads(capsys.readouterr().out)
    cfg = json.loads((out / "config.json").read_text())
    assert published["weights_sha256"] == cfg["weights_sha256"][:12] and cfg["temperature"] > 0
    assert cfg["calibration"]["rows"] >= 4 and cfg["training"]["sources"] == ["checkcovid"]
    judge = NliModel.load(str(out))
    assert judge.predict_proba([("Drug 1 lowered mortality.", "Drug 1 lowers mortality.")]).shape == (1, 3)
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    import torch

    retrained = torch.load(run_dir / "best.pt", weights_only=False)
    retrained["weights"]["classifier.bias"] = retrained["weights"]["classifier.bias"] + 1.0
    torch.save(retrained, run_dir / "other.pt")
    other = _data(tmp_path / "other.jsonl.gz", salt="x")  # not the checkpoint's data: fails after the weights
    with pytest.raises(SystemExit, match="different data"):
        E.main(["--run", str(run_dir), "--ckpt", "other.pt", "--data", str(other), "--out", str(out),
                "--threads", "1"])
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["nli-judge"]  # no staging directory left behind


def test_checkpoint_averages_mix_parameter_by_parameter_and_refuse_mismatches():
    import torch

    import average_checkpoints as A

    a = {"w": torch.zeros(2, 3), "b": torch.ones(3)}
    b = {"w": torch.full((2, 3), 4.0), "b": torch.full((3,), 3.0)}
    assert torch.equal(A.mix([a, b], 0.0)["w"], a["w"]) and torch.equal(A.mix([a, b], 1.0)["b"], b["b"])
    half = A.mix([a, b], 0.25)
    assert torch.allclose(half["w"], torch.full((2, 3), 1.0)) and torch.allclose(half["b"], torch.full((3,), 1.5))
    with pytest.raises(SystemExit, match="different parameters"):
        A.mix([a, {"w": b["w"]}], 0.5)
    with pytest.raises(SystemExit, match="shape mismatch for w"):
        A.mix([a, {"w": torch.zeros(3, 2), "b": b["b"]}], 0.5)
