"""The code a cut-off call is counted under: the client's deadline ends the call a transit time before the server's
copy of it passes, and such a call was counted CANCELLED (seen on a loaded machine: a stream ended at its 3 s
deadline logged "CANCELLED: stream ended after 5 items, 3.0 s")."""

from server.metrics import ended_code


class _Context:
    def __init__(self, remaining):
        self.remaining = remaining

    def time_remaining(self):
        return self.remaining


def test_a_call_ended_a_few_milliseconds_before_the_servers_deadline_counts_as_deadline_exceeded():
    assert ended_code(_Context(0.02), stopping=False) == "DEADLINE_EXCEEDED"
    assert ended_code(_Context(0.0), stopping=False) == "DEADLINE_EXCEEDED"


def test_a_call_the_client_cancelled_well_before_its_deadline_or_without_one_counts_as_cancelled():
    assert ended_code(_Context(5.0), stopping=False) == "CANCELLED"
    assert ended_code(_Context(None), stopping=False) == "CANCELLED"


def test_a_call_a_shutdown_ended_counts_as_unavailable():
    assert ended_code(_Context(0.01), stopping=True) == "UNAVAILABLE"
