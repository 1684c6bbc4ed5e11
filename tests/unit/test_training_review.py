"""The judge's training scripts: slices, loss, resume and export provenance (smoke runs of a few steps, tiny data)."""

from __future__ import annotations

import gzip
import json
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "training"))
import train_nli_judge as T  # noqa: E402

LABELS = ("supported", "contradicted", "not_enough_info")


def _write(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _checkcovid(n=90, salt=""):
    return [{"id": f"checkcovid:{salt}{i}_0", "source": "checkcovid", "split": "train",
             "premise": f"Trial {i} found that drug {i % 7} lowered mortality in {i} patients.",
             "hypothesis": f"Drug {i % 7} lowers mortality in trial {i}.", "label": LABELS[i % 3]} for i in range(n)]


def _args(data, out, *extra):
    return ["--data", str(data), "--out", str(out), "--sources", "checkcovid", "--epochs", "2", "--batch-size", "8",
            "--max-length", "48", "--ckpt-every", "2", "--eval-every", "1000", "--log-every", "1000",
            "--threads", "1", "--no-bf16", *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("nli") / "train.jsonl.gz", _checkcovid())


def _last(out):
    import torch

    return torch.load(out / "last.pt", map_location="cpu", weights_only=False)


def test_a_run_interrupted_mid_epoch_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    import torch

    T.main(_args(data, tmp_path / "whole", "--max-steps", "7"))
    calls = {"n": 0}
    loss = T.nli_loss

    def interrupted(*a):
        calls["n"] += 1
        if calls["n"] == 4:  # after the step-2 checkpoint and one more step
            raise KeyboardInterrupt
        return loss(*a)

    monkeypatch.setattr(T, "nli_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.main(_args(data, tmp_path / "cut", "--max-steps", "7"))
    monkeypatch.setattr(T, "nli_loss", loss)
    assert _last(tmp_path / "cut")["step"] == 2
    T.main(_args(data, tmp_path / "cut", "--max-steps", "7", "--resume"))
    whole, cut = _last(tmp_path / "whole"), _last(tmp_path / "cut")
    assert (whole["step"], whole["epoch"], whole["batch_in_epoch"]) == (cut["step"], cut["epoch"], cut["batch_in_epoch"])
    assert all(torch.equal(whole["weights"][k], cut["weights"][k]) for k in whole["weights"])


def test_resume_refuses_other_arguments_and_leaves_the_run_config(data, tmp_path):
    out = tmp_path / "run"
    T.main(_args(data, out, "--max-steps", "2"))
    config = (out / "run_config.json").read_text()
    with pytest.raises(SystemExit, match=r"--batch-size 8 -> 4"):
        T.main(_args(data, out, "--max-steps", "2", "--resume", "--batch-size", "4"))
    assert (out / "run_config.json").read_text() == config
    assert _last(out)["step"] == 2


def test_resuming_a_finished_run_trains_no_further_step(data, tmp_path):
    out = tmp_path / "run"
    T.main(_args(data, out, "--max-steps", "3"))
    before = _last(out)
    T.main(_args(data, out, "--max-steps", "3", "--resume"))
    after = _last(out)
    assert after["step"] == before["step"] == 3
    assert [h["step"] for h in after["history"]] == [3]
    assert json.loads((out / "DONE").read_text())["step"] == 3


def _slice_of_each(rows, version=None):
    slices = T.split_slices(rows) if version is None else T.split_slices(rows, version)
    return {r["id"]: name for name, part in slices.items() for r in part}


def test_a_claim_or_a_pair_never_straddles_train_and_a_slice():
    """A scifact claim has several evidence rows, each its own id; vitaminc repeats cases under other case ids."""
    rows = [{"id": f"scifact:train-{3 * c + k}", "source": "scifact", "split": "train", "premise": f"Evidence {k} on {c}.",
             "hypothesis": f"Claim {c} holds.", "label": LABELS[c % 2]} for c in range(300) for k in range(3)]
    rows += [{"id": f"vitaminc:case{c}{dup}_1", "source": "vitaminc", "split": "train", "premise": f"Revision {c}.",
              "hypothesis": f"Fact {c}.", "label": "supported"} for c in range(300) for dup in ("a", "b")]
    # covidfact: a claim and its automatic counter-claims over one evidence text
    rows += [{"id": f"covidfact:train-{3 * c + k}", "source": "covidfact", "split": "train", "premise": f"Study {c}.",
              "hypothesis": f"Drug {c} {verb} deaths.", "label": LABELS[min(k, 1)]}
             for c in range(300) for k, verb in enumerate(("cuts", "raises", "doubles"))]
    # citint ids are citint:<row>-<paper * 1000 + n>; a paper's citations share evidence sentences
    rows += [{"id": f"citint:{30 * p + n}-{p * 1000 + n}", "source": "citint", "split": "train",
              "premise": f"Paper {p} sentence {n % 4}.", "hypothesis": f"Paper {p} citation {n}.",
              "label": LABELS[n % 3]} for p in range(1, 60) for n in range(30)]
    where = _slice_of_each(rows)
    by_claim: dict = {}
    for r in rows:
        group = {"covidfact": r["premise"], "citint": r["id"].rsplit("-")[-1][:-3]}.get(r["source"], r["hypothesis"])
        by_claim.setdefault((r["source"], group), set()).add(where[r["id"]])
    assert all(len(s) == 1 for s in by_claim.values())
    assert {"selection", "calibration", "train"} <= set(where.values())
    # checkpoints written before claims and pairs were joined (no "slices" key) keep the slices they trained with
    old = _slice_of_each(rows, 1)
    counts = {"scifact": 900, "vitaminc": 600, "covidfact": 900, "citint": 1770}
    assert old == {r["id"]: T.slice_of(r, counts, T.group_key(r, 1)) for r in rows} != where


def test_slices_are_recorded_and_an_init_run_keeps_those_of_its_checkpoint(data, tmp_path):
    import torch

    T.main(_args(data, tmp_path / "new", "--max-steps", "1"))
    assert _last(tmp_path / "new")["slices"] == T.SLICE_VERSION == 2
    assert json.loads((tmp_path / "new" / "run_config.json").read_text())["slices"] == 2
    old = _last(tmp_path / "new")
    del old["slices"]  # a checkpoint from before slice versions
    torch.save(old, tmp_path / "new" / "old.pt")
    T.main(_args(data, tmp_path / "second", "--max-steps", "1", "--init", str(tmp_path / "new" / "old.pt")))
    assert _last(tmp_path / "second")["slices"] == 1


def _vitaminc(n=90):
    return [{"id": f"vitaminc:case{i}_1", "source": "vitaminc", "split": "train", "premise": f"The tower is {i} m tall.",
             "hypothesis": f"The tower is taller than {i + (i % 3) - 1} m.", "label": LABELS[i % 3]} for i in range(n)]


def test_an_export_lists_the_licences_of_every_source_its_weights_were_trained_on(tmp_path, capsys):
    """A second stage (--init) on checkcovid carries the vitaminc training of its first stage, and so does an average."""
    import average_checkpoints as A
    import export_nli_judge as E
    import torch

    data = _write(tmp_path / "train.jsonl.gz", _checkcovid() + _vitaminc())
    first, second = tmp_path / "first", tmp_path / "second"
    T.main([*_args(data, first, "--max-steps", "1"), "--sources", " vitaminc"])
    T.main([*_args(data, second, "--max-steps", "1", "--init", str(first / "best.pt")), "--sources", "checkcovid"])
    A.main(["--ckpt", str(second / "best.pt"), "--ckpt", str(first / "best.pt"), "--alphas", "0.5", "--data", str(data),
            "--out", str(tmp_path / "soup"), "--threads", "1"])
    assert torch.load(tmp_path / "soup" / "best.pt", weights_only=False)["max_length"] == 48
    for run in (second, tmp_path / "soup"):
        out = tmp_path / "judge" / run.name
        assert E.main(["--run", str(run), "--data", str(data), "--out", str(out), "--threads", "1",
                       "--max-length", "48"]) == 0
        training = json.loads((out / "config.json").read_text())["training"]
        assert sorted(training["sources"]) == ["checkcovid", "vitaminc"]
        assert training["source_licences"] == {"checkcovid": "MIT", "vitaminc": "CC BY-SA 3.0"}
    capsys.readouterr()


def test_training_refuses_dev_rows_a_missing_file_and_unknown_sources(data, tmp_path):
    dev = _write(tmp_path / "dev.jsonl.gz", [{**r, "split": "dev"} for r in _checkcovid()])
    with pytest.raises(SystemExit, match=r"other splits \({'dev': 90}\)"):
        T.main(_args(dev, tmp_path / "on-dev", "--max-steps", "1"))
    with pytest.raises(SystemExit, match="training data not found: .*absent.jsonl.gz"):
        T.main(_args(tmp_path / "absent.jsonl.gz", tmp_path / "none", "--max-steps", "1"))
    with pytest.raises(SystemExit, match="has no rows of scifcat .*its sources: checkcovid"):
        T.main([*_args(data, tmp_path / "typo", "--max-steps", "1"), "--sources", "checkcovid,scifcat"])
    assert not (tmp_path / "typo" / "run_config.json").exists()


def test_export_refuses_dev_data_and_a_run_trained_from_another_base_model(data, tmp_path, capsys):
    import export_nli_judge as E

    run = tmp_path / "run"
    T.main(_args(data, run, "--max-steps", "1"))
    config = json.loads((run / "run_config.json").read_text())
    assert config["base_weights_sha256"] == T.file_sha256(f"{T.base_model_dir()}/model.safetensors")
    dev = _write(tmp_path / "dev.jsonl.gz", [{**r, "split": "dev"} for r in _checkcovid()])
    out = tmp_path / "judge"
    with pytest.raises(SystemExit, match="other splits"):
        E.main(["--run", str(run), "--data", str(dev), "--out", str(out), "--threads", "1", "--max-length", "48"])
    (run / "run_config.json").write_text(json.dumps({**config, "base_weights_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="is not the one .* was trained from"):
        E.main(["--run", str(run), "--data", str(data), "--out", str(out), "--threads", "1", "--max-length", "48"])
    assert not out.exists()
    capsys.readouterr()


def test_a_binary_source_is_taught_supported_versus_not_never_contradicted():
    """scifact's "contradicted" means "not entailed": moving mass between contradicted and not_enough_info is free."""
    import math

    import torch

    logits = torch.log(torch.tensor([[0.2, 0.2, 0.6], [0.2, 0.6, 0.2]]))
    labels = torch.tensor([T.LABEL2ID["contradicted"]] * 2)
    ones = torch.ones(2)
    binary = T.nli_loss(logits, labels, torch.tensor([True, True]), ones)
    assert binary.item() == pytest.approx(-math.log(0.8))
    three_way = T.nli_loss(logits, labels, torch.tensor([False, False]), ones)
    assert three_way.item() == pytest.approx((-math.log(0.2) - math.log(0.6)) / 2)
    z = logits[:1].clone().requires_grad_(True)
    T.nli_loss(z, labels[:1], torch.tensor([True]), ones[:1]).backward()
    # the gradient lowers contradicted and not_enough_info alike, in proportion to their probabilities
    assert z.grad[0, 1].item() / 0.2 == pytest.approx(z.grad[0, 2].item() / 0.6)
    supported = T.nli_loss(logits, torch.tensor([0, 0]), torch.tensor([True, False]), torch.tensor([1.0, 3.0]))
    assert supported.item() == pytest.approx(-math.log(0.2))  # both rows say supported: one target either way


def test_a_checkpoint_write_that_fails_keeps_the_last_good_one_and_leaves_no_partial_file(tmp_path):
    import torch

    path = tmp_path / "last.pt"
    T.atomic_torch_save({"step": 1, "weights": torch.zeros(4)}, path)
    good = path.read_bytes()
    with pytest.raises(Exception):  # pickling fails after the tensor was written, as a full disk would
        T.atomic_torch_save({"weights": torch.ones(1 << 16), "step": lambda: 2}, path)
    assert path.read_bytes() == good and torch.load(path, weights_only=False)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_export_cuts_pairs_at_the_length_the_checkpoint_was_trained_with(data, tmp_path, capsys):
    import export_nli_judge as E

    run = tmp_path / "run"
    T.main(_args(data, run, "--max-steps", "1"))  # --max-length 48
    assert E.main(["--run", str(run), "--data", str(data), "--out", str(tmp_path / "judge"), "--threads", "1"]) == 0
    assert json.loads((tmp_path / "judge" / "config.json").read_text())["max_length"] == 48
    assert E.main(["--run", str(run), "--data", str(data), "--out", str(tmp_path / "long"), "--threads", "1",
                   "--max-length", "64"]) == 0
    assert json.loads((tmp_path / "long" / "config.json").read_text())["max_length"] == 64
    capsys.readouterr()


def test_init_refuses_a_checkpoint_trained_from_another_base_model(data, tmp_path):
    first = tmp_path / "first"
    T.main(_args(data, first, "--max-steps", "1"))
    config = json.loads((first / "run_config.json").read_text())
    (first / "run_config.json").write_text(json.dumps({**config, "base_weights_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="trained from another base model"):
        T.main(_args(data, tmp_path / "second", "--max-steps", "1", "--init", str(first / "best.pt")))


def test_a_resumed_second_stage_keeps_the_sources_of_its_first_without_init(tmp_path):
    data = _write(tmp_path / "train.jsonl.gz", _checkcovid() + _vitaminc())
    first, second = tmp_path / "first", tmp_path / "second"
    T.main([*_args(data, first, "--max-steps", "1"), "--sources", "vitaminc"])
    T.main(_args(data, second, "--max-steps", "1", "--init", str(first / "best.pt")))
    T.main(_args(data, second, "--max-steps", "1", "--resume"))  # the documented command, --init left out
    config = json.loads((second / "run_config.json").read_text())
    assert config["trained_sources"] == ["checkcovid", "vitaminc"] and config["args"]["init"] == str(first / "best.pt")


def test_resume_accepts_a_checkpoint_older_than_an_option_left_at_its_default(data, tmp_path):
    import torch

    out = tmp_path / "run"
    T.main(_args(data, out, "--max-steps", "1", "--epochs", "1"))
    old = _last(out)
    del old["args"]["negation_aug"]  # written by a version without --negation-aug
    torch.save(old, out / "last.pt")
    assert T.main(_args(data, out, "--max-steps", "1", "--epochs", "1", "--resume")) == 0
    with pytest.raises(SystemExit, match=r"--negation-aug 0.0 -> 0.5"):
        T.main(_args(data, out, "--max-steps", "1", "--epochs", "1", "--resume", "--negation-aug", "0.5"))
