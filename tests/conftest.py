import os
import subprocess
import sys
from pathlib import Path

import pytest

import r1kit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch is imported)
from r1kit.paths import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    """The slow tests start first, so that with `make test`'s two workers the longest do not end the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, shared_data) -> Path:
    """A small byte-level BPE tokenizer trained on GSM8K, shared by the tests that need one."""
    from r1kit.models.tokenizer import train_tokenizer

    out_dir = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([shared_data / "gsm8k" / "test.jsonl"], out_dir, vocab_size=1024)
    return out_dir


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `r1kit` command in a subprocess (as a user would)."""
    env = dict(os.environ, COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-m", "r1kit", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"r1kit {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


@pytest.fixture
def cli():
    return run_cli
