"""`--server http://127.0.0.1:50051` (a URL, as for most services) failed after 3 s with "cannot reach the kgverify
server at http://127.0.0.1:50051 (host name not found)". A URL scheme is now a usage error naming the form to give."""

import pytest

from client.cli import main


@pytest.mark.parametrize("argv", [["split", "--text", "x"], ["evaluate", "--question", "Q", "--reasoning", "x",
                                                               "--metrics", "ki"],
                                  ["demo"], ["kb", "reload"]])
@pytest.mark.parametrize("url, hint", [("http://127.0.0.1:50051", "127.0.0.1:50051"),
                                       ("grpc://verifier:50051/", "verifier:50051")])
def test_a_url_is_refused_as_a_server_address(capsys, argv, url, hint):
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--server", url])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --server: '{url}' is a URL: give host:port (e.g. {hint}) or unix:///path" in err, err


def test_batch_refuses_a_url_among_its_servers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["batch", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
              "--server", "127.0.0.1:50051", "--server", "https://other:50051"])
    assert exited.value.code == 2
    assert "'https://other:50051' is a URL" in capsys.readouterr().err
