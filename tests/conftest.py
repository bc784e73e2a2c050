import os
import subprocess
import sys
from pathlib import Path

import pytest

import r1kit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch is imported)

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    """The slow tests start first, so that with `make test`'s two workers the longest do not end the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def reference_data(tmp_path_factory) -> Path:
    """The reference data r1kit ships, as plain files in a folder of the same layout (gsm8k/test.jsonl,
    math500/test.jsonl, chat_templates/), for tests that pass file paths to ingest or tokenizer training."""
    import gzip
    import shutil

    from r1kit.paths import reference_dir, reference_file

    out_dir = tmp_path_factory.mktemp("reference")
    for name in ("gsm8k", "math500"):
        source = reference_file(name)
        (out_dir / name).mkdir()
        data = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
        (out_dir / name / "test.jsonl").write_bytes(data)
    shutil.copytree(reference_dir() / "chat_templates", out_dir / "chat_templates")
    return out_dir


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, reference_data) -> Path:
    """A small byte-level BPE tokenizer trained on GSM8K, shared by the tests that need one."""
    from r1kit.models.tokenizer import train_tokenizer

    out_dir = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([reference_data / "gsm8k" / "test.jsonl"], out_dir, vocab_size=1024)
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


@pytest.fixture(scope="session")
def sft_inputs(tmp_path_factory):
    """(tokenizer dir, cleaned data dir) for tiny training runs: easy arithmetic with worked solutions."""
    from r1kit.config import DataConfig
    from r1kit.data.clean import clean
    from r1kit.data.synth import synthesize
    from r1kit.models.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("sft")
    problems = synthesize("arithmetic", 300, root / "arith.jsonl", difficulty="easy", seed=0)
    tokenizer_dir = root / "tok"
    train_tokenizer([problems], tokenizer_dir, vocab_size=400)
    data_dir = root / "data"
    clean([problems], data_dir, DataConfig(semantic={"enabled": False}, validation_fraction=0.1))
    return tokenizer_dir, data_dir


@pytest.fixture(scope="session")
def recipe_for(sft_inputs):
    """A tiny-qwen2 recipe on the arithmetic data, with overrides."""
    from r1kit.config import load_recipe

    tokenizer_dir, data_dir = sft_inputs

    def make(*overrides: str):
        return load_recipe(
            None,
            [
                "name=tiny",
                "model.preset=tiny-qwen2",
                f"model.tokenizer={tokenizer_dir}",
                f"train.dataset={data_dir}",
                "train.learning_rate=3e-3",
                "train.per_device_batch_size=1",
                "train.gradient_accumulation_steps=1",
                "train.max_seq_length=256",
                "train.max_steps=12",
                "train.logging_steps=1",
                "train.eval_steps=6",
                "train.save_steps=6",
                *overrides,
            ],
        )

    return make
