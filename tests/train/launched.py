"""Running the commands that start ranks (torchrun and its workers) from tests: in their own process group, so that
no rank outlives its test, with the output that explains a failure."""

import os
import signal
import subprocess


def output_excerpt(text: str, limit: int = 3000) -> str:
    """The first traceback and the end of a run's output. Ranks share one stderr: the first traceback is usually
    the rank that failed first, and the end is where the others noticed."""
    first = text.find("Traceback")
    if first < 0 or first >= len(text) - limit:
        return text[-limit:]
    return f"{text[first : first + limit]}\n[...]\n{text[-limit:]}"


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_launched(command: list[str], *, timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `command` to its end and check that it succeeded. One still running after `timeout` seconds has its
    whole process group killed and fails the test with what it had printed."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{' '.join(command)} was still running after {timeout:.0f} s:\n{output_excerpt(stderr)}"
        ) from None
    finally:
        kill_group(process.pid)  # also a rank left behind by a launcher that exited
    assert process.returncode == 0, (
        f"{' '.join(command)} exited {process.returncode}:\n{output_excerpt(stderr)}"
    )
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
