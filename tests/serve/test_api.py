"""The server over real HTTP, spoken to with the official OpenAI client where it applies."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scripted import ANSWER, API_KEY, MAX_TOKENS_LIMIT, REASONING

QUESTION = [{"role": "user", "content": "What is two plus two?"}]


def post(url: str, body, *, key: str | None = API_KEY, raw: bytes | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(
        url, data=raw if raw is not None else json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_chat_puts_the_reasoning_apart(client):
    reply = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=32)
    message = reply.choices[0].message
    assert message.reasoning_content == REASONING
    assert message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 2 and reply.usage.prompt_tokens > 2
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_sends_reasoning_then_content(client):
    stream = client.chat.completions.create(
        model="tiny", messages=QUESTION, max_tokens=32, stream=True, stream_options={"include_usage": True}
    )
    reasoning, content, order, finish, usage = [], [], [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            reasoning.append(delta.reasoning_content)
            order.append("reasoning")
        if delta.content:
            content.append(delta.content)
            order.append("content")
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(reasoning) == REASONING and "".join(content) == ANSWER
    assert len(reasoning) > 1, "reasoning arrives token by token"
    assert order == sorted(order, key=lambda kind: kind != "reasoning")
    assert finish == "stop" and usage.completion_tokens > 2


def test_completions_plain_and_streamed(client):
    reply = client.completions.create(model="tiny", prompt="Janet", max_tokens=12, temperature=1.0, seed=3)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 12
    streamed = client.completions.create(
        model="tiny", prompt="Janet", max_tokens=12, temperature=1.0, seed=3, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text


def test_seed_reproduces_a_sample(client):
    def sample(seed):
        return (
            client.completions.create(model="tiny", prompt="Janet", max_tokens=24, temperature=1.0, seed=seed)
            .choices[0]
            .text
        )

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_generate_endpoint(server):
    status, body = post(server.url + "/generate", {"prompt": "What is two plus two?", "temperature": 0})
    assert status == 200
    assert (body["reasoning"], body["answer"], body["finish_reason"]) == (REASONING, ANSWER, "stop")


def test_websocket_streams_tokens(server):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ws_url = server.url.replace("http://", "ws://") + "/v1/stream"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as socket:
        for _ in range(2):  # one connection, several requests
            socket.send(json.dumps({"prompt": "What is two plus two?", "temperature": 0}))
            messages = []
            while not messages or messages[-1]["type"] not in ("done", "error"):
                messages.append(json.loads(socket.recv(timeout=60)))
            assert "".join(m["text"] for m in messages if m["type"] == "reasoning") == REASONING
            assert "".join(m["text"] for m in messages if m["type"] == "content") == ANSWER
            assert messages[-1]["finish_reason"] == "stop" and messages[-1]["usage"]["completion_tokens"] > 2
        socket.send("{not json")
        assert json.loads(socket.recv(timeout=10))["status"] == 400
        socket.send(json.dumps({"prompt": "hi", "temperature": 9}))
        error = json.loads(socket.recv(timeout=10))
        assert error["status"] == 400 and "temperature" in error["message"]
    with connect(ws_url + f"?api_key={API_KEY}") as socket:
        socket.send(json.dumps({"prompt": "hi", "max_new_tokens": 2}))
        assert json.loads(socket.recv(timeout=30))["type"] in ("reasoning", "content", "done")
    with pytest.raises(InvalidStatus):  # no key: refused at the handshake
        with connect(ws_url):
            pass


def chat(**fields):
    return {"model": "tiny", "messages": QUESTION, **fields}


BAD_REQUESTS = [
    ("invalid JSON", "/v1/chat/completions", b'{"model": "tiny", "messages": [', 400, "invalid JSON"),
    ("unknown field", "/v1/chat/completions", chat(temprature=0.5), 400, "temprature: unknown field"),
    ("wrong type", "/v1/chat/completions", chat(max_tokens="many"), 400, "max_tokens"),
    ("temperature too high", "/v1/chat/completions", chat(temperature=2.5), 400, "temperature"),
    ("top_p zero", "/v1/chat/completions", chat(top_p=0), 400, "top_p"),
    (
        "max_tokens over the limit",
        "/v1/chat/completions",
        chat(max_tokens=MAX_TOKENS_LIMIT + 1),
        400,
        "max_tokens",
    ),
    (
        "prompt over the context",
        "/v1/chat/completions",
        chat(messages=[{"role": "user", "content": "Janet eggs " * 2000}]),
        400,
        "context",
    ),
    ("unknown model", "/v1/chat/completions", chat(model="gpt-5"), 404, "gpt-5"),
    ("several choices", "/v1/chat/completions", chat(n=2), 400, "n:"),
    ("no messages", "/v1/chat/completions", chat(messages=[]), 400, "messages"),
    ("unknown role", "/v1/chat/completions", chat(messages=[{"role": "robot", "content": "x"}]), 400, "role"),
    ("missing model", "/v1/chat/completions", {"messages": QUESTION}, 400, "model"),
    ("too many stops", "/v1/chat/completions", chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("a JSON list", "/v1/chat/completions", [1, 2], 400, "object"),
    ("two prompts", "/v1/completions", {"model": "tiny", "prompt": ["a", "b"]}, 400, "one prompt"),
    ("empty prompt", "/generate", {"prompt": ""}, 400, "prompt"),
    ("unknown route", "/v1/embeddings", {"input": "x"}, 404, "Not Found"),
]


@pytest.mark.parametrize("name, route, body, status, needle", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx(server, name, route, body, status, needle):
    got, reply = post(server.url + route, body, raw=body if isinstance(body, bytes) else None)
    assert got == status, reply
    assert needle.lower() in reply["error"]["message"].lower(), reply


def test_the_openai_client_sees_a_bad_request(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny", messages=QUESTION, temperature=5)
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="other", messages=QUESTION)


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_api_key_is_required(server, key):
    from openai import AuthenticationError, OpenAI

    status, body = post(server.url + "/v1/chat/completions", chat(), key=key)
    assert status == 401 and "API key" in body["error"]["message"]
    if key:  # the client itself refuses to send no key
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0).models.list()
    status, body = post(server.url + "/v1/chat/completions", {"not": "checked before the key"}, key=key)
    assert status == 401


def test_fifty_concurrent_requests_all_succeed(server):
    from openai import AsyncOpenAI

    async def run():
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)
        replies = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": f"question {i}"}],
                    max_tokens=32,
                    stream=i % 2 == 0,
                )
                for i in range(50)
            ]
        )
        texts = []
        for reply in replies:
            if hasattr(reply, "choices"):
                texts.append((reply.choices[0].message.reasoning_content, reply.choices[0].message.content))
            else:
                parts = {"reasoning_content": "", "content": ""}
                async for chunk in reply:
                    for field in parts:
                        parts[field] += (
                            getattr(chunk.choices[0].delta, field, None) or "" if chunk.choices else ""
                        )
                texts.append((parts["reasoning_content"], parts["content"]))
        await client.close()
        return texts

    assert asyncio.run(run()) == [(REASONING, ANSWER)] * 50


def scrape(url: str) -> dict:
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_metrics_count_requests_and_latency(server, client):
    client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8)
    post(server.url + "/v1/chat/completions", chat(temperature=9))
    samples = scrape(server.url)
    ok = (("route", "/v1/chat/completions"), ("status", "200"))
    bad = (("route", "/v1/chat/completions"), ("status", "400"))
    assert samples[("r1kit_serve_requests_total", ok)] >= 1
    assert samples[("r1kit_serve_requests_total", bad)] >= 1
    assert samples[("r1kit_serve_time_to_first_token_seconds_count", ())] >= 1
    assert samples[("r1kit_serve_request_latency_seconds_count", (("route", "/v1/chat/completions"),))] >= 1
    assert samples[("r1kit_serve_completion_tokens_total", ())] >= 8
    for gauge in ("r1kit_serve_queue_depth", "r1kit_serve_batch_size", "r1kit_serve_tokens_per_second"):
        assert samples[(gauge, ())] >= 0


def test_health_and_readiness_need_no_key(server):
    with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok", "engine": "transformers"}
    with urllib.request.urlopen(server.url + "/ready", timeout=10) as response:
        assert json.loads(response.read())["status"] == "ready"
