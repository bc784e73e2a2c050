"""Benchmark: `r1kit serve` under concurrent load against one-request-at-a-time `generate` on the same model.

Model: a new small-qwen2 (~28M parameters with an 8k vocabulary), random weights, so every request generates
exactly `--max-tokens` tokens (an untrained model almost never ends early; the figures count what was really
generated). Prompts: GSM8K questions in R1's chat template.

- Baseline, the seed's `/generate` service: a lock around `model.generate`, so concurrent requests queue. It
  is measured in process, without HTTP (which only flatters it): the 16 requests run back to back; a request's
  time to first token is its wait in the queue plus its own first token.
- r1kit: the real server in a subprocess, spoken to over HTTP with streaming by 1, 4 and 16 clients at once,
  each sending its next request when the last one ends (`--requests` per client).

Printed side by side: generated tokens/s and time to first token (median, p95), with the ratios the serving
issue sets as targets at 16 clients: >= 4x the baseline's tokens/s and a p95 time to first token at most a
quarter of the baseline's for the same 16 requests.

    python benchmarks/serve_throughput.py [--max-tokens 64] [--requests 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def prepare(workdir: Path) -> tuple[Path, list[str]]:
    from r1kit.models.create import init_model
    from r1kit.models.tokenizer import train_tokenizer
    from r1kit.paths import reference_rows

    rows = reference_rows("gsm8k")
    gsm8k = workdir / "gsm8k.jsonl"
    gsm8k.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    train_tokenizer([gsm8k], workdir / "tok", vocab_size=8192)
    init_model("small-qwen2", workdir / "tok", workdir / "model", seed=0)
    questions = [row["question"] for row in rows[:64]]
    return workdir / "model", questions


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def baseline(model_dir: Path, questions: list[str], max_tokens: int) -> dict:
    """16 requests through one `model.generate` at a time, as a server with a lock would serve them."""
    import torch
    from transformers import TextIteratorStreamer

    from r1kit.models.load import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    ttfts, tokens, start = [], 0, time.perf_counter()
    for question in questions[:16]:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        first: list[float] = []

        def watch(streamer=streamer, first=first):
            for _ in streamer:
                first.append(time.perf_counter())
                break
            for _ in streamer:
                pass

        watcher = threading.Thread(target=watch)
        watcher.start()
        with torch.inference_mode():
            output = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=True,
                temperature=0.6,
                top_p=0.95,
                pad_token_id=tokenizer.pad_token_id,
                streamer=streamer,
            )
        watcher.join()
        tokens += output.shape[1] - ids.shape[1]
        ttfts.append(first[0] - start)  # every request arrived at `start`
    seconds = time.perf_counter() - start
    return {
        "tokens_per_second": tokens / seconds,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": percentile(ttfts, 0.95),
    }


async def load(
    url: str, questions: list[str], clients: int, requests_per_client: int, max_tokens: int
) -> dict:
    import httpx

    ttfts, tokens = [], 0

    async def client(index: int, http: httpx.AsyncClient):
        nonlocal tokens
        for n in range(requests_per_client):
            question = questions[(index * requests_per_client + n) % len(questions)]
            body = {
                "model": "bench",
                "messages": [{"role": "user", "content": question}],
                "stream": True,
                "max_tokens": max_tokens,
                "stream_options": {"include_usage": True},
            }
            sent, first = time.perf_counter(), None
            async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or line.endswith("[DONE]"):
                        continue
                    chunk = json.loads(line[5:])
                    if chunk.get("usage"):
                        tokens += chunk["usage"]["completion_tokens"]
                    delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
                    if first is None and (delta.get("content") or delta.get("reasoning_content")):
                        first = time.perf_counter()
            ttfts.append((first or time.perf_counter()) - sent)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*[client(i, http) for i in range(clients)])
    seconds = time.perf_counter() - start
    return {
        "tokens_per_second": tokens / seconds,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": percentile(ttfts, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=3, help="requests per client at each concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, questions = prepare(Path(tmp))
        print("baseline: one model.generate at a time ...", file=sys.stderr)
        base = baseline(model_dir, questions, args.max_tokens)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "r1kit",
                "serve",
                "--model",
                str(model_dir),
                "--port",
                "0",
                "--model-name",
                "bench",
                "--max-batch-size",
                "16",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            url = server.stdout.readline().split()[2]
            asyncio.run(load(url, questions, 2, 1, 4))  # warm-up
            rows = {}
            for clients in (1, 4, 16):
                print(f"r1kit serve: {clients} concurrent clients ...", file=sys.stderr)
                rows[clients] = asyncio.run(load(url, questions, clients, args.requests, args.max_tokens))
        finally:
            server.terminate()
            server.wait(timeout=120)
    print(f"\n{'':34} {'tokens/s':>9} {'TTFT p50 s':>11} {'TTFT p95 s':>11}")
    print(
        f"{'one-at-a-time generate (16 queued)':34} {base['tokens_per_second']:>9.0f} {base['ttft_p50']:>11.2f} "
        f"{base['ttft_p95']:>11.2f}"
    )
    for clients, row in rows.items():
        print(
            f"{f'r1kit serve, {clients} clients':34} {row['tokens_per_second']:>9.0f} {row['ttft_p50']:>11.2f} "
            f"{row['ttft_p95']:>11.2f}"
        )
    at16 = rows[16]
    print(
        f"\nat 16 clients: {at16['tokens_per_second'] / base['tokens_per_second']:.1f}x the tokens/s (target >= 4x), "
        f"p95 TTFT {at16['ttft_p95'] / base['ttft_p95']:.2f}x the one-at-a-time server's (target <= 0.25x); "
        f"{args.max_tokens} tokens per request, {args.requests} requests per client"
    )


if __name__ == "__main__":
    main()
