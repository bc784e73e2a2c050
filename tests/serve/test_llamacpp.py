"""`r1kit serve` on a GGUF export with the llama.cpp engine: the same OpenAI API, `reasoning_content`, streaming,
seeds and metrics as the transformers engine, spoken to with the official OpenAI client."""

import asyncio
import json
import urllib.request

import pytest
from scripted import ANSWER, API_KEY, REASONING, start_server

pytest.importorskip("llama_cpp", reason="the llamacpp extra (make setup installs it)")

QUESTION = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def gguf_dir(scripted_model_dir, tmp_path_factory):
    from r1kit.export import export

    out_dir = tmp_path_factory.mktemp("gguf") / "scripted-gguf"
    export(scripted_model_dir, out_dir, format="gguf", quantize="f16", speed_tokens=4)
    return out_dir


@pytest.fixture(scope="module")
def gguf_server(gguf_dir):
    server = start_server(gguf_dir, "--set", "serve.threads=1")  # no --engine: a GGUF export is llama.cpp's
    yield server
    assert server.stop() == 0


@pytest.fixture
def gguf_client(gguf_server):
    from openai import OpenAI

    return OpenAI(base_url=gguf_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_chat_plain_and_streamed(gguf_client, gguf_server):
    reply = gguf_client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=32)
    assert reply.choices[0].message.reasoning_content == REASONING
    assert reply.choices[0].message.content == ANSWER and reply.choices[0].finish_reason == "stop"
    stream = gguf_client.chat.completions.create(
        model="tiny", messages=QUESTION, max_tokens=32, stream=True, stream_options={"include_usage": True}
    )
    parts, usage = {"reasoning_content": [], "content": []}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for field, pieces in parts.items():
            if chunk.choices and getattr(chunk.choices[0].delta, field, None):
                pieces.append(getattr(chunk.choices[0].delta, field))
    assert "".join(parts["reasoning_content"]) == REASONING and "".join(parts["content"]) == ANSWER
    assert len(parts["reasoning_content"]) > 1 and usage.completion_tokens == reply.usage.completion_tokens
    with urllib.request.urlopen(gguf_server.url + "/health", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok", "engine": "llama.cpp"}


def test_a_seed_samples_what_the_transformers_engine_samples(gguf_client, client):
    """Both engines draw from the same logits with the same sampler and seed (the f16 file's logits differ from
    the model's by rounding only)."""

    def sample(chosen, seed):
        reply = chosen.completions.create(
            model="tiny", prompt="Janet", max_tokens=16, temperature=1.0, seed=seed
        )
        return reply.choices[0].text

    assert sample(gguf_client, 7) == sample(gguf_client, 7) == sample(client, 7)
    assert sample(gguf_client, 7) != sample(gguf_client, 8)


def test_concurrent_requests_queue_and_all_succeed(gguf_server):
    from openai import AsyncOpenAI

    async def run():
        client = AsyncOpenAI(base_url=gguf_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        replies = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=32
                )
                for i in range(12)
            ]
        )
        await client.close()
        return [(r.choices[0].message.reasoning_content, r.choices[0].message.content) for r in replies]

    assert asyncio.run(run()) == [(REASONING, ANSWER)] * 12
    request = urllib.request.Request(
        gguf_server.url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        metrics = response.read().decode()
    generated = [
        line for line in metrics.splitlines() if line.startswith("r1kit_serve_completion_tokens_total")
    ]
    assert generated and float(generated[0].split()[-1]) >= 12 * 10


def test_eval_reads_a_gguf_export(gguf_dir, tmp_path, cli):
    """`r1kit eval --model` on a GGUF export decodes with llama.cpp: the scripted answer, right for GSM8K's first
    problem."""
    cli("eval", "--model", str(gguf_dir), "--suite", "gsm8k", "--limit", "2", "--set", "eval.temperature=0",
        "--out", str(tmp_path / "eval"), check=True)  # fmt: skip
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["suites"]["gsm8k"]["accuracy"] == 0.5


def test_what_llama_cpp_cannot_serve_is_refused(scripted_model_dir, gguf_dir, tmp_path, cli):
    done = cli("serve", "--model", str(scripted_model_dir), "--engine", "llama.cpp")
    assert done.returncode != 0 and "r1kit export --model" in done.stderr + done.stdout
    twice = tmp_path / "two"
    twice.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (twice / name).write_bytes(b"GGUF")
    done = cli("serve", "--model", str(twice))
    assert done.returncode != 0 and "2 GGUF files" in done.stderr + done.stdout
    alone = tmp_path / "alone"
    alone.mkdir()
    (gguf_file,) = gguf_dir.glob("*.gguf")
    (alone / gguf_file.name).write_bytes(gguf_file.read_bytes())
    done = cli("serve", "--model", str(alone / gguf_file.name))
    assert done.returncode != 0 and "no tokenizer.json beside" in done.stderr + done.stdout
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in gguf_dir.iterdir():
        (broken / path.name).write_bytes(
            path.read_bytes()[:4096] if path.suffix == ".gguf" else path.read_bytes()
        )
    done = cli("serve", "--model", str(broken))
    assert done.returncode != 0 and "llama.cpp cannot load" in done.stderr + done.stdout


def test_llama_cpp_leaves_a_core_to_the_server(gguf_dir):
    """Its threads spin while they wait for each other: by default one fewer than the CPUs, serve.threads sets it."""
    import os

    from r1kit.config import ServeConfig
    from r1kit.serve.server import build_engine

    cores = len(os.sched_getaffinity(0))
    for asked, expected in [(None, max(1, cores - 1)), (1, 1)]:
        engine, _, context = build_engine(gguf_dir, ServeConfig(engine="llama.cpp", threads=asked))
        assert engine.llama.n_threads == expected and context == engine.context_length == 2048
        engine.shutdown()


def test_a_context_longer_than_the_models_is_refused(gguf_dir):
    """Before llama.cpp allocates a KV cache for it (ten million tokens here)."""
    from r1kit.config import ServeConfig
    from r1kit.errors import UserError
    from r1kit.serve.server import build_engine

    with pytest.raises(UserError, match="context_length 10000000 is longer than the 2048 tokens"):
        build_engine(gguf_dir, ServeConfig(engine="llama.cpp", context_length=10_000_000))
