"""The judge's training checkpoints: a damaged or wrong checkpoint is named, not a traceback; a run killed while it
writes a checkpoint resumes from the previous complete one; a GPU run's resumable checkpoint holds CPU tensors only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_training_review import _args, _checkcovid, _last, _write

sys.path.insert(0, str(REPO / "training"))
import export_nli_judge as E  # noqa: E402
import train_nli_judge as T  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("nli") / "train.jsonl.gz", _checkcovid())


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A run of 4 steps: last.pt (step 4), best.pt."""
    out = tmp_path_factory.mktemp("run") / "run"
    T.main(_args(data, out, "--max-steps", "4"))
    return out


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_resume_names_a_damaged_last_checkpoint_and_changes_nothing(data, finished, tmp_path, damage):
    out = _copy(finished, tmp_path)
    last = out / "last.pt"
    blob = last.read_bytes()
    last.write_bytes({"truncated": blob[: len(blob) // 2], "empty": b"", "garbage": b"not a checkpoint\n" * 9}[damage])
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file() and f.name != "train.log"}
    with pytest.raises(SystemExit) as info:
        T.main(_args(data, out, "--max-steps", "6", "--resume"))
    says = str(info.value)
    assert says.startswith(f"resume: {last} is not a complete checkpoint") and "cut short or damaged" in says
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file() and f.name != "train.log"} == before


def test_resume_from_a_weights_checkpoint_says_which_kind_it_is(data, finished, tmp_path):
    out = _copy(finished, tmp_path)
    shutil.copyfile(out / "best.pt", out / "last.pt")
    with pytest.raises(SystemExit, match=r"resume: .*last\.pt lacks optimizer, scheduler, torch_rng.*a weights "
                                         r"checkpoint such as best\.pt"):
        T.main(_args(data, out, "--max-steps", "6", "--resume"))


def test_init_and_export_name_a_damaged_or_missing_checkpoint(data, finished, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((finished / "best.pt").read_bytes()[:1000])
    with pytest.raises(SystemExit, match=r"^--init: .*bad\.pt is not a complete checkpoint"):
        T.main(_args(data, tmp_path / "second", "--max-steps", "2", "--init", str(bad)))
    with pytest.raises(SystemExit, match=r"^--init: .*nowhere\.pt does not exist"):
        T.main(_args(data, tmp_path / "third", "--max-steps", "2", "--init", str(tmp_path / "nowhere.pt")))
    run = _copy(finished, tmp_path)
    shutil.copyfile(bad, run / "best.pt")
    with pytest.raises(SystemExit, match=r"^export: .*best\.pt is not a complete checkpoint"):
        E.main(["--run", str(run), "--data", str(data), "--out", str(tmp_path / "judge"), "--threads", "1"])
    assert not (tmp_path / "judge" / "config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".judge.export-")]
    import negation_probe

    with pytest.raises(SystemExit, match=r"^negation_probe: .*bad\.pt is not a complete checkpoint"):
        negation_probe.main([str(bad), "--data", str(data), "--threads", "1"])


_KILLED_WHILE_SAVING = """
import io, os, signal, sys
sys.path.insert(0, {training!r})
import torch
import train_nli_judge as T

save, writes = torch.save, []

def dying_save(obj, f, *a, **kw):
    if "last.pt.tmp" in getattr(f, "name", ""):
        writes.append(1)
        if len(writes) == 2:  # the step-4 checkpoint: half of it reaches the disk, then kill -9
            buf = io.BytesIO()
            save(obj, buf, *a, **kw)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, f, *a, **kw)

torch.save = dying_save
T.main({argv!r})
"""


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(data, tmp_path):
    import torch

    T.main(_args(data, tmp_path / "whole", "--max-steps", "6"))
    out = tmp_path / "killed"
    argv = _args(data, out, "--max-steps", "6")
    script = _KILLED_WHILE_SAVING.format(training=str(REPO / "training"), argv=argv)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert partial and all(p.startswith("last.pt.tmp") for p in partial)
    assert _last(out)["step"] == 2  # the last complete checkpoint
    T.main(argv + ["--resume"])
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # the dead run's partial write is gone
    whole, resumed = _last(tmp_path / "whole"), _last(out)
    assert (resumed["step"], resumed["epoch"], resumed["batch_in_epoch"]) == (whole["step"], whole["epoch"],
                                                                              whole["batch_in_epoch"])
    assert all(torch.equal(whole["weights"][k], resumed["weights"][k]) for k in whole["weights"])


def test_a_live_runs_temp_file_is_left_alone(tmp_path):
    mine = tmp_path / f"last.pt.tmp{os.getppid()}"  # a live process's write in progress
    mine.write_bytes(b"x")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"best.pt.tmp{int(dead.stdout)}"
    gone.write_bytes(b"x")
    (tmp_path / "notes.tmp").write_text("x")
    assert T.remove_stale_temp_files(tmp_path) == [gone.name]
    assert mine.exists() and (tmp_path / "notes.tmp").exists()


def test_cpu_copy_keeps_an_optimizer_state_as_it_is():
    import torch

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones(3)
    opt.step()
    state = opt.state_dict()
    copy = T.cpu_copy(state)
    assert copy["param_groups"] == state["param_groups"]
    assert all(torch.equal(copy["state"][0][k], state["state"][0][k]) for k in state["state"][0])
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    fresh.load_state_dict(copy)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_runs_last_checkpoint_holds_cpu_tensors_only_and_resumes_on_the_cpu(data, tmp_path, monkeypatch):
    import torch

    calls, loss = {"n": 0}, T.nli_loss

    def interrupted(*a):
        calls["n"] += 1
        if calls["n"] == 3:  # after the step-2 checkpoint
            raise KeyboardInterrupt
        return loss(*a)

    out = tmp_path / "gpu"
    monkeypatch.setattr(T, "nli_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.main(_args(data, out, "--max-steps", "4", "--device", "cuda"))
    monkeypatch.setattr(T, "nli_loss", loss)
    seen = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            seen.append(x.device.type)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    ck = torch.load(out / "last.pt", weights_only=False)  # no map_location: tensors come back where they were saved
    walk(ck)
    assert ck["step"] == 2 and ck["optimizer"]["state"] and set(seen) == {"cpu"}
    T.main(_args(data, out, "--max-steps", "4", "--resume", "--device", "cpu"))
    assert _last(out)["step"] == 4
