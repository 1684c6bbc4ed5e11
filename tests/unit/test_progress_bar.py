"""Progress bars in logs: a batch run with stderr in a file (nohup, a CI job, systemd) got tqdm's redraw every
0.1 s as another carriage-return line, tens of thousands an hour."""

from __future__ import annotations

import io
import time

from kb import progress
from kb.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def redraws(stream: io.StringIO, monkeypatch, interval_s: float) -> int:
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", interval_s)
    bar = progress_bar(total=400, unit="chain", file=stream)
    for _ in range(400):
        time.sleep(0.002)  # 0.8 s of work: eight redraws at tqdm's 0.1 s
        bar.update(1)
    bar.close()
    return stream.getvalue().count("\r")


def test_a_bar_written_to_a_log_is_redrawn_at_the_log_interval_only(monkeypatch):
    assert redraws(io.StringIO(), monkeypatch, interval_s=60.0) <= 2  # its first and its last state


def test_a_bar_on_a_terminal_moves_as_tqdm_draws_it(monkeypatch):
    assert redraws(Terminal(), monkeypatch, interval_s=60.0) >= 4


def test_a_stream_that_cannot_say_whether_it_is_a_terminal_is_treated_as_a_log(monkeypatch):
    class Closed(io.StringIO):
        def isatty(self):
            raise ValueError("I/O operation on closed file")

    bar = progress_bar(total=1, file=Closed())
    assert bar.mininterval >= progress.LOG_INTERVAL_S
    bar.close()
