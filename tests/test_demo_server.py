"""The demo's server in the background: a server that cannot start is reported, and is never left running."""

import signal

import pytest

from r1kit.demo import ask_server, serve_in_background
from r1kit.errors import UserError


def test_a_server_that_cannot_start_is_reported_and_stopped(tmp_path):
    with pytest.raises(UserError, match=r"the server did not start \(exit code [1-9]"):
        with serve_in_background(tmp_path / "no-model") as server:
            ask_server(server, "What is 2 + 2?", max_tokens=8)
    assert server.returncode not in (None, 0)


def test_the_server_is_stopped_when_the_block_fails(tmp_path):
    # The block fails while the server is still importing (seconds): it is terminated, not left to run on.
    with pytest.raises(RuntimeError, match="evaluation failed"):
        with serve_in_background(tmp_path / "no-model") as server:
            raise RuntimeError("evaluation failed")
    assert server.returncode == -signal.SIGTERM
