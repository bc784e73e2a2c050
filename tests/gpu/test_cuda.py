"""End to end on a CUDA GPU (`make test-gpu`): every stage that puts a model on the GPU decodes or trains there.
Skipped where no CUDA device is visible; on CPUs, tests/engine/test_device.py checks the engine's devices."""

import json

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu on a GPU machine)"
    ),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_dir):
    from r1kit.models.create import init_model

    out_dir = tmp_path_factory.mktemp("gpu") / "tiny"
    init_model("tiny-qwen2", tokenizer_dir, out_dir, seed=0)
    return out_dir


def test_the_engine_decodes_on_the_gpu_as_generate_does(model_dir):
    from r1kit.engine.chats import Settings, decode_chats
    from r1kit.models.load import load_model, load_tokenizer

    model, tokenizer = load_model(model_dir, dtype="float32").to("cuda").eval(), load_tokenizer(model_dir)
    chats = [[{"role": "user", "content": text}] for text in ("What is 2+2?", "hi", "A robe takes 2 bolts")]
    greedy = decode_chats(model, tokenizer, chats, Settings(0.0, 1.0, 12, 0), [0, 1, 2], max_batch_size=2)
    for chat, sample in zip(chats, greedy):
        ids = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        ids = ids["input_ids"].to("cuda")
        output = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=sample.num_tokens, do_sample=False
        )
        assert sample.text == tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)
    sampled = decode_chats(model, tokenizer, chats, Settings(1.0, 0.9, 12, 0), [3, 4, 5])
    again = decode_chats(model, tokenizer, chats, Settings(1.0, 0.9, 12, 0), [3, 4, 5])
    assert [s.text for s in sampled] == [s.text for s in again]


def test_serve_answers_on_the_gpu(model_dir):
    from r1kit.config import ServeConfig
    from r1kit.engine.chats import Settings, complete_chats
    from r1kit.serve.server import build_engine

    engine, tokenizer, _ = build_engine(model_dir, ServeConfig())
    try:
        assert engine.device.type == "cuda"
        (sample,) = complete_chats(
            engine, tokenizer, [[{"role": "user", "content": "hi"}]], Settings(0.6, 0.95, 8, 1), [1]
        )
        assert sample.num_tokens > 0
    finally:
        engine.shutdown()


def test_eval_and_sample_on_the_gpu(model_dir, sft_inputs, tmp_path, cli):
    _, data_dir = sft_inputs
    cli(
        "eval",
        "--model",
        str(model_dir),
        "--suite",
        "heldout",
        "--limit",
        "4",
        "--set",
        f"eval.dataset={data_dir}",
        "--set",
        "eval.max_new_tokens=8",
        "--out",
        str(tmp_path / "eval"),
        check=True,
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["suites"]["heldout"]["problems"] == 4
    cli(
        "sample",
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path / "sample"),
        "--set",
        f"sample.dataset={data_dir}",
        "--set",
        "sample.limit=4",
        "--set",
        "sample.num_samples=2",
        "--set",
        "sample.max_new_tokens=8",
        check=True,
    )
    assert json.loads((tmp_path / "sample" / "report.json").read_text())["samples"] == 8


def test_sft_and_grpo_steps_on_the_gpu(recipe_for, tmp_path):
    from r1kit.train.grpo import train_grpo
    from r1kit.train.sft import train_sft

    sft = train_sft(
        recipe_for("train.max_steps=4", "eval.during_training=true", "eval.during_training_problems=4"),
        tmp_path / "sft",
    )
    assert sft.final().is_dir()
    grpo = train_grpo(
        recipe_for(
            f"model.path={sft.final()}",
            "model.preset=null",
            "train.per_device_batch_size=4",
            "grpo.num_generations=4",
            "grpo.max_completion_length=16",
            "train.max_steps=2",
        ),
        tmp_path / "grpo",
    )
    assert grpo.final().is_dir()


def test_export_measures_on_the_gpu(model_dir, tmp_path, cli):
    done = cli("export", "--model", str(model_dir), "--out", str(tmp_path / "out"), check=True)
    assert "tok/s" in done.stdout
