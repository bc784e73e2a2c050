import pytest

from r1kit.config import DataConfig
from r1kit.data.clean import clean
from r1kit.data.synth import synthesize
from r1kit.models.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def sft_inputs(tmp_path_factory):
    """(tokenizer dir, cleaned data dir) for tiny training runs: easy arithmetic with worked solutions."""
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
