"""An export killed mid-write (SIGKILL, the OOM killer) left its hidden `.NAME.*.tmp` beside the output for good:
the next export of that path removes the temporary files of writers that are gone, never a live writer's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from client.batch_io import atomic_output
from tests.conftest import REPO

WRITER = textwrap.dedent("""
    import os, signal, sys
    from client.batch_io import atomic_output
    with atomic_output(sys.argv[1]) as fh:
        fh.write(b"half a file")
        fh.flush()
        print("writing", flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.readline()  # a live writer, until the test lets it finish
""")


def writer(path, how):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout.readline().strip() == b"writing"
    return proc


def temporaries(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def test_the_next_export_removes_what_a_killed_one_left_and_keeps_a_live_writers_file(tmp_path):
    out = tmp_path / "scores.csv"
    killed = writer(out, "die")
    assert killed.wait(30) == -9
    orphans = temporaries(out)
    assert len(orphans) == 1 and not out.exists()
    live = writer(out, "live")
    try:
        with atomic_output(out) as fh:
            fh.write(b"id,ki\n")
        left = temporaries(out)
        assert out.read_bytes() == b"id,ki\n"
        assert orphans[0] not in left and len(left) == 1  # the live writer's file only
    finally:
        live.communicate(b"\\n", timeout=30)
    assert temporaries(out) == [] and out.read_bytes() == b"half a file"  # it finished, replacing the output


def test_an_output_name_near_the_file_name_limit_is_still_written(tmp_path):
    out = tmp_path / ("s" * 230 + ".csv")
    with atomic_output(out) as fh:
        fh.write(b"id\n")
    assert out.read_bytes() == b"id\n" and temporaries(out) == []


def test_only_files_named_by_this_host_and_a_gone_process_are_removed(tmp_path, monkeypatch):
    from client import batch_io

    out = tmp_path / "scores.csv"
    monkeypatch.setattr(batch_io, "_HOST", "node")
    others = [".scores.csv.node.50000.4242.abcdefgh.tmp",  # host "node.50000", pid 4242: another machine's writer
              ".scores.csv.node.².abcdefgh.tmp",  # not a pid
              ".scores.csv.node.99999999999999999999.abcdefgh.tmp",  # not a pid either
              ".scores.csv.other.4242.abcdefgh.tmp"]
    for name in others:
        (tmp_path / name).write_bytes(b"")
    with atomic_output(out) as fh:
        fh.write(b"x")
    assert temporaries(out) == sorted(others)
