"""Every tensor the engine makes follows the model's device. This machine has no GPU, so the engine's thread runs
with a default device of `meta`: a tensor made without an explicit device lands there and fails against the CPU
model, as it would fail against a model on CUDA. Random generators, which the default device does not move, must
be made on the model's device too."""

import pytest
import torch

from r1kit.engine.batching import Finish, GenerationRequest, TransformersEngine
from r1kit.engine.chats import Settings, complete_chats


class MetaByDefault(TransformersEngine):
    """The engine, with `meta` as the default device of its worker thread (the default is per thread)."""

    def _loop(self) -> None:
        torch.set_default_device("meta")
        try:
            super()._loop()
        finally:
            torch.set_default_device(None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer_dir):
    from r1kit.models.create import init_model
    from r1kit.models.load import load_model, load_tokenizer

    out_dir = tmp_path_factory.mktemp("tiny-qwen2")
    init_model("tiny-qwen2", tokenizer_dir, out_dir, seed=1)
    return load_model(out_dir, dtype="float32").eval(), load_tokenizer(out_dir)


def test_the_engine_makes_no_tensor_off_the_models_device(tiny, monkeypatch):
    model, tokenizer = tiny
    made_on = []
    real_generator = torch.Generator

    def generator(device=None):
        made_on.append(device)
        return real_generator(device=device)

    monkeypatch.setattr(torch, "Generator", generator)
    engine = MetaByDefault(model, tokenizer, max_batch_size=3)
    try:
        chats = [[{"role": "user", "content": text}] for text in ("What is 2+2?", "hi", "A robe", "Count")]
        # rows join a running batch (4 chats, 3 rows) and leave it at different steps; greedy and sampled rows
        greedy = complete_chats(engine, tokenizer, chats, Settings(0.0, 1.0, 9, 0), [0, 1, 2, 3])
        sampled = complete_chats(engine, tokenizer, chats, Settings(1.0, 0.9, 7, 0), [4, 5, 6, 7])
    finally:
        engine.shutdown()
    assert [s.num_tokens for s in greedy + sampled] and all(s.finish_reason for s in greedy + sampled)
    assert made_on and all(torch.device(d) == model.device for d in made_on)


def test_the_check_catches_a_tensor_made_on_the_default_device(tiny):
    """The check itself: a tensor made without a device in the engine's thread fails the request."""
    model, tokenizer = tiny
    engine = MetaByDefault(model, tokenizer)
    engine._forward_real = engine._forward

    def forward(input_ids, mask, cache):
        return engine._forward_real(input_ids + torch.zeros(1, dtype=input_ids.dtype), mask, cache)

    engine._forward = forward
    try:
        with pytest.raises(RuntimeError, match="generation failed"):
            complete_chats(
                engine, tokenizer, [[{"role": "user", "content": "hi"}]], Settings(0.0, 1.0, 3, 0), [0]
            )
    finally:
        engine.shutdown()


def test_decoding_in_the_callers_thread_makes_no_tensor_off_the_models_device(tiny):
    """`run` (GRPO's rollouts) decodes in the calling thread, here with a default device of `meta`: sampled and
    greedy rows, with log-probabilities, leaving the batch at different steps."""
    model, tokenizer = tiny
    engine = TransformersEngine(model, tokenizer, max_batch_size=3, start=False)
    events = []
    requests = [
        GenerationRequest(
            tokenizer(text)["input_ids"],
            budget,
            temperature=temperature,
            top_p=0.9,
            seed=i,
            sink=events.append,
            detokenize=False,
            logprobs=True,
            ignore_eos=True,
        )
        for i, (text, budget, temperature) in enumerate(
            [("What is 2+2?", 5, 1.0), ("hi", 9, 0.0), ("A robe", 7, 0.7), ("Count", 3, 1.0)]
        )
    ]
    torch.set_default_device("meta")
    try:
        engine.run(requests)
    finally:
        torch.set_default_device(None)
    assert [type(e) for e in events] == [Finish] * 4
    assert sorted(len(e.token_ids) for e in events) == [3, 5, 7, 9]
    assert all(len(e.logprobs) == len(e.token_ids) and max(e.logprobs) <= 0 for e in events)
