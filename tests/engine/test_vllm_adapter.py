"""The vLLM adapter's own logic on CPU, over a stand-in for vllm's async engine (vLLM itself needs a GPU): the
queue limit the transformers engine has, and a cancel that aborts the request in vLLM."""

import asyncio
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import pytest

from r1kit.engine.batching import EngineOverloaded, Finish, GenerationRequest, Token


@dataclass
class Output:
    text: str = ""
    token_ids: list = field(default_factory=list)
    finish_reason: str | None = None


class StandInEngine:
    """Generates one token per 10 ms, up to max_tokens, until aborted; at most `slots` requests at once."""

    def __init__(self):
        self.model_config = types.SimpleNamespace(max_model_len=128)
        self.aborted: set[str] = set()
        self.slots = asyncio.Semaphore(1)

    @classmethod
    def from_engine_args(cls, args):
        return cls()

    async def generate(self, prompt, params, request_id):
        async with self.slots:
            output = Output()
            while len(output.token_ids) < params.max_tokens and request_id not in self.aborted:
                await asyncio.sleep(0.01)
                output.token_ids.append(7)
                output.text += "x"
                if len(output.token_ids) == params.max_tokens:
                    output.finish_reason = "length"
                yield types.SimpleNamespace(outputs=[output])

    async def abort(self, request_id):
        self.aborted.add(request_id)

    def shutdown(self):
        pass


@pytest.fixture
def engine(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.AsyncEngineArgs = lambda **kwargs: kwargs
    fake.AsyncLLMEngine = StandInEngine
    fake.SamplingParams = lambda **kwargs: types.SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from r1kit.engine.vllm_engine import VllmEngine

    engine = VllmEngine("unused", max_batch_size=1, max_queue_size=1)
    yield engine
    engine.shutdown(timeout=10)


def request(max_new_tokens, done):
    def sink(event):
        if isinstance(event, Finish):
            done.set()

    return GenerationRequest([1, 2], max_new_tokens, sink=sink)


def test_the_queue_limit_and_cancel(engine):
    first_done, second_done = threading.Event(), threading.Event()
    first, second = request(10_000, first_done), request(3, second_done)
    engine.submit(first)
    engine.submit(second)  # waits in vLLM for first's slot
    with pytest.raises(EngineOverloaded, match="already waiting"):
        engine.submit(request(3, threading.Event()))
    assert engine.stats()["queue_depth"] == 1
    engine.cancel(first)  # aborted in vLLM: its slot goes to the second
    assert second_done.wait(10) and not first_done.is_set()
    deadline = time.time() + 10
    while engine.stats()["batch_size"] and time.time() < deadline:
        time.sleep(0.01)
    assert engine.stats()["batch_size"] == 0 and engine.alive()
    tokens = []
    third = request(4, threading.Event())
    third.sink = lambda event: tokens.append(event)
    engine.submit(third)  # there is room again
    deadline = time.time() + 10
    while not any(isinstance(e, Finish) for e in tokens) and time.time() < deadline:
        time.sleep(0.01)
    assert "".join(e.text for e in tokens if isinstance(e, Token)) == "xxxx"
    assert tokens[-1].reason == "length"
