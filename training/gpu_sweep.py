#!/usr/bin/env python
"""Run several ``train_nli_judge.py`` configurations side by side on one GPU within a time limit, and pack what
a size-limited transfer can bring back. See ``training/gpu_session.md``.

Each ``--run "NAME: ARGS"`` trains ``<root>/NAME`` with ``--device`` (cuda), ``--data`` and ``--resume`` added:
a run stopped at ``--time-limit`` (SIGTERM; checkpoints are atomic) continues from its last checkpoint when the
same command is given again. Then ``--bring-back`` (a directory, the device session's ``$OUT``) receives:

* ``summary.json``: per run its state (finished / stopped at step N), its best selection score and step, the
  arguments, and which run is brought back;
* ``logs.tar.gz``: every run's ``train.log``, ``selection.jsonl`` and ``run_config.json``;
* ``best.manifest.json`` and ``best.partK-of-N`` (pieces of <= 15 MiB, see ``training/pieces.py``): the
  ``best.pt`` and ``run_config.json`` of the run with the highest selection score (or ``--pick NAME``), to be
  joined into ``runs/<NAME>/`` here and exported on the CPU.

Selection scores are comparable between runs of the same ``--sources`` (the selection slice follows them).

Example (there)::

    PYTHONPATH=$PWD/runs/kgv-base python3 training/gpu_sweep.py --data runs/gpu/train.jsonl.gz --root runs/sweep \\
        --time-limit 400 --bring-back "$OUT" --run "lr6: --lr 6e-5" --run "lr1: --lr 1e-4"
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import pieces  # noqa: E402

# Options the sweep sets itself: a run's ARGS must not repeat them.
OWN = ("--out", "--data", "--device", "--resume")


def parse_run(spec: str) -> tuple[str, list[str]]:
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not sep or not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise SystemExit(f"--run {spec!r}: 'NAME: ARGS' with a NAME of letters, digits, '.', '_' or '-'")
    args = shlex.split(rest)
    clash = [a for a in args if a.split("=")[0] in OWN]
    if clash:
        raise SystemExit(f"--run {name}: {', '.join(clash)} is set by the sweep")
    return name, args


def run_state(out: Path) -> dict:
    """What a run directory shows: finished or not, the last step, the best selection score and its step."""
    state: dict = {"finished": (out / "DONE").exists(), "step": None, "best_score": None, "best_step": None}
    if state["finished"]:
        state["step"] = json.loads((out / "DONE").read_text()).get("step")
    sel = out / "selection.jsonl"
    if sel.exists():
        rows = [json.loads(line) for line in sel.read_text().splitlines() if line.strip()]
        if rows:
            top = max(rows, key=lambda r: r["score"])
            state.update(best_score=top["score"], best_step=top["step"])
            state["step"] = state["step"] if state["step"] is not None else rows[-1]["step"]
    return state


def sweep(runs: Sequence[tuple[str, list[str]]], root: Path, data: str, device: str, time_limit: float,
          python: str = sys.executable) -> dict[str, int | None]:
    """Starts every run, waits until all end or the time limit; returns {name: exit status or None (stopped)}."""
    root.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, args in runs:
        out = root / name
        out.mkdir(parents=True, exist_ok=True)
        cmd = [python, str(HERE / "train_nli_judge.py"), "--out", str(out), "--data", data, "--device", device,
               "--resume", *args]
        log = open(out / "stdout.log", "a", encoding="utf-8")
        log.write(f"# {shlex.join(cmd)}\n")
        log.flush()
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    deadline = time.monotonic() + time_limit
    while time.monotonic() < deadline and any(p.poll() is None for p, _ in procs.values()):
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    codes: dict[str, int | None] = {}
    for name, (proc, log) in procs.items():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the last checkpoint is complete (atomic writes): --resume goes on
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            codes[name] = None
        else:
            codes[name] = proc.returncode
        log.close()
    return codes


def bring_back(runs: Sequence[tuple[str, list[str]]], root: Path, codes: dict, dest: Path, pick: str | None,
               max_mib: float = 15.0) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    summary: dict = {"runs": {}, "picked": None}
    for name, args in runs:
        state = run_state(root / name)
        code = codes.get(name, "not run")
        state.update(args=args, exit_status=code,
                     state="finished" if state["finished"] else "stopped at the time limit: give the same command "
                     "again to resume" if code is None else f"failed (exit status {code}): see its stdout.log")
        summary["runs"][name] = state
    scored = [n for n, s in summary["runs"].items() if s["best_score"] is not None and (root / n / "best.pt").exists()]
    if pick is not None and pick not in scored:
        raise SystemExit(f"--pick {pick}: no run of that name with a best.pt")
    chosen = pick or (max(scored, key=lambda n: summary["runs"][n]["best_score"]) if scored else None)
    with tarfile.open(dest / "logs.tar.gz", "w:gz") as tar:
        for name, _ in runs:
            for f in ("train.log", "selection.jsonl", "run_config.json", "stdout.log"):
                if (root / name / f).exists():
                    tar.add(str(root / name / f), arcname=f"{name}/{f}")
    if chosen is not None:
        pieces.split([str(root / chosen / "best.pt"), str(root / chosen / "run_config.json")], dest, "best",
                     max_mib)
        summary["picked"] = chosen
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--run", action="append", required=True, help="'NAME: train_nli_judge.py arguments' (repeat)")
    p.add_argument("--root", default="runs/sweep", help="run directories go under here")
    p.add_argument("--data", required=True, help="train.jsonl.gz (as carried to the device)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--time-limit", type=float, default=400.0,
                   help="seconds before unfinished runs are stopped (SIGTERM; they resume next time)")
    p.add_argument("--bring-back", default=None, help="directory for summary.json, logs.tar.gz and the pieces")
    p.add_argument("--pick", default=None, help="bring back this run's best.pt (default: the best selection score)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    runs = [parse_run(s) for s in args.run]
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise SystemExit("--run: each NAME once")
    root = Path(args.root)
    t0 = time.monotonic()
    codes = sweep(runs, root, args.data, args.device, args.time_limit)
    if args.bring_back:
        summary = bring_back(runs, root, codes, Path(args.bring_back), args.pick)
    else:
        summary = {"runs": {n: {**run_state(root / n), "exit_status": codes[n]} for n in names}}
    summary["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary, indent=1))
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
