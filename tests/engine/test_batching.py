"""The continuous-batching engine in process: requests that join and leave a running batch get exactly what
they would get alone, seeds hold whatever shares the batch, stop strings and cancellation work."""

import threading
import time
import warnings

import pytest
import torch

from r1kit.engine.batching import Failure, Finish, GenerationRequest, Token, TransformersEngine

PROMPTS = [
    "What is 2+2?",
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast.",
    "hi",
    "Tell me about the weather today, in a long sentence please.",
    "A robe takes 2 bolts of blue fiber.",
]


@pytest.fixture(scope="module", params=["tiny-qwen2", "tiny-deepseek-v3"])
def model_and_tokenizer(request, tmp_path_factory, tokenizer_dir):
    from r1kit.models.create import init_model
    from r1kit.models.load import load_model, load_tokenizer

    out_dir = tmp_path_factory.mktemp(request.param)
    init_model(request.param, tokenizer_dir, out_dir, seed=1)
    model = load_model(out_dir, dtype="float32").eval()
    if model.config.tie_word_embeddings:  # an untrained tied head repeats the last token forever: untie it
        model.config.tie_word_embeddings = False
        torch.manual_seed(1)
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.5)
    return model, load_tokenizer(out_dir)


def prompt_ids(tokenizer, text):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]


class Collector:
    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if isinstance(event, (Finish, Failure)):
            self.done.set()

    @property
    def text(self):
        return "".join(e.text for e in self.events if isinstance(e, Token))


def run(engine, requests, gap=0.0):
    collectors = []
    for request in requests:
        request.sink = collector = Collector()
        collectors.append(collector)
        engine.submit(request)
        time.sleep(gap)
    for collector in collectors:
        assert collector.done.wait(120)
    return collectors


def test_joined_batches_decode_as_each_request_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    budgets = [12 + 7 * i for i in range(len(PROMPTS))]  # different lengths: rows leave at different steps
    alone = []
    for text, budget in zip(PROMPTS, budgets):
        ids = torch.tensor([prompt_ids(tokenizer, text)])
        output = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=budget,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        alone.append(output[0, ids.shape[1] :].tolist())
    engine = TransformersEngine(
        model, tokenizer, max_batch_size=3
    )  # 5 requests, 3 places: some wait, then join
    try:
        requests = [
            GenerationRequest(prompt_ids(tokenizer, t), b, temperature=0.0) for t, b in zip(PROMPTS, budgets)
        ]
        with warnings.catch_warnings(record=True) as caught:  # the engine's thread warns into the same list
            warnings.simplefilter("always")
            collectors = run(engine, requests, gap=0.02)
    finally:
        engine.shutdown()
    # the cache goes by the name this transformers takes (the old one is deprecated and will be removed)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    assert sum(len(c.text) for c in collectors) > 50, "the model should write text, not only special tokens"
    for collector, expected in zip(collectors, alone):
        eos = tokenizer.eos_token_id
        expected = expected[: expected.index(eos)] if eos in expected else expected
        assert collector.text == tokenizer.decode(expected, skip_special_tokens=True)
        assert collector.events[-1].num_completion_tokens == len(expected)


def test_a_seed_gives_the_same_sample_whatever_shares_the_batch(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = TransformersEngine(model, tokenizer, max_batch_size=4)
    try:

        def seeded():
            return GenerationRequest(
                prompt_ids(tokenizer, PROMPTS[0]), 20, temperature=1.0, top_p=0.9, seed=5
            )

        alone = run(engine, [seeded()])[0].text
        crowded = run(
            engine,
            [GenerationRequest(prompt_ids(tokenizer, p), 20, temperature=1.0) for p in PROMPTS[1:]]
            + [seeded()],
        )[-1].text
        other_seed = run(
            engine,
            [GenerationRequest(prompt_ids(tokenizer, PROMPTS[0]), 20, temperature=1.0, top_p=0.9, seed=6)],
        )[0].text
    finally:
        engine.shutdown()
    assert alone == crowded
    assert alone != other_seed


def test_stop_strings_end_the_text_before_them(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = TransformersEngine(model, tokenizer)
    try:
        fulls = [
            c.text
            for c in run(
                engine, [GenerationRequest(prompt_ids(tokenizer, p), 30, temperature=0.0) for p in PROMPTS]
            )
        ]
        full, prompt = max(
            zip(fulls, PROMPTS), key=lambda pair: len(pair[0])
        )  # an untrained model may stop at once
        stop = full[len(full) // 2 : len(full) // 2 + 3]
        cut = run(
            engine, [GenerationRequest(prompt_ids(tokenizer, prompt), 30, temperature=0.0, stop=[stop])]
        )[0]
    finally:
        engine.shutdown()
    assert len(stop) == 3 and cut.text == full[: full.index(stop)]
    assert cut.events[-1].reason == "stop"


def test_a_cancelled_request_leaves_the_batch(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = TransformersEngine(model, tokenizer, max_batch_size=2)
    try:
        # ignore_eos: an untrained model sampling at T = 1 can draw its end of sequence before the cancel lands
        long = GenerationRequest(prompt_ids(tokenizer, PROMPTS[0]), 100_000, temperature=1.0, ignore_eos=True)
        long.sink = Collector()
        engine.submit(long)
        while not long.sink.events:
            time.sleep(0.01)
        long.cancelled = True
        short = run(
            engine, [GenerationRequest(prompt_ids(tokenizer, p), 5, temperature=0.0) for p in PROMPTS[:2]]
        )
        deadline = time.time() + 10
        while engine.stats()["batch_size"] and time.time() < deadline:
            time.sleep(0.01)
        assert engine.stats()["batch_size"] == 0, "the cancelled request is still being decoded"
    finally:
        engine.shutdown(timeout=5)
    assert all(c.events[-1].num_completion_tokens <= 5 for c in short)
    assert not any(isinstance(e, Finish) for e in long.sink.events)


@pytest.mark.parametrize("ending", ["eos", "length"])
def test_text_held_back_for_a_stop_string_is_sent_when_generation_ends_otherwise(tokenizer_dir, ending):
    from r1kit.engine.batching import _Row
    from r1kit.models.load import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    ids = tokenizer.encode('{"a": 1}', add_special_tokens=False)
    eos = tokenizer.eos_token_id
    request = GenerationRequest([1], len(ids) if ending == "length" else 100, temperature=0.0, stop=["}\n\n"])
    request.sink = sink = Collector()
    row = _Row(request, tokenizer, {eos}, "cpu")
    for token in ids:
        row.accept(token)
    assert sink.text == '{"a": 1' or ending == "length"  # the "}" may start the stop string: held back
    if ending == "eos":
        row.accept(eos)
    assert sink.text == '{"a": 1}'  # the stop string never came: the "}" is the answer's
    assert sink.events[-1].reason == ("stop" if ending == "eos" else "length")


def test_a_request_that_fails_fails_alone(model_and_tokenizer):
    """Sampling values that overflow, a seed the generator refuses and a prompt the model cannot embed (a failed
    prefill) each fail their own request; the request already decoding gets the text it gets alone."""
    model, tokenizer = model_and_tokenizer
    engine = TransformersEngine(model, tokenizer, max_batch_size=8)
    try:

        def good():
            return GenerationRequest(
                prompt_ids(tokenizer, PROMPTS[1]), 40, temperature=1.0, seed=3, ignore_eos=True
            )

        alone = run(engine, [good()])[0]
        running = good()
        running.sink = Collector()
        engine.submit(running)
        while not running.sink.events:
            time.sleep(0.005)
        ids = prompt_ids(tokenizer, PROMPTS[0])
        bad = run(
            engine,
            [
                GenerationRequest(ids, 20, temperature=1e-39),
                GenerationRequest(ids, 20, temperature=1.0, seed=2**64),
                GenerationRequest([model.config.vocab_size + 10], 20, temperature=0.0),
            ],
        )
        assert running.sink.done.wait(120)
    finally:
        engine.shutdown()
    assert [type(c.events[-1]) for c in bad] == [Failure, Failure, Failure]
    assert "sampling failed" in bad[0].events[-1].message
    assert "cannot start this request" in bad[1].events[-1].message
    assert "generation failed" in bad[2].events[-1].message
    assert running.sink.text == alone.text and isinstance(running.sink.events[-1], Finish)
    assert running.sink.events[-1].num_completion_tokens == 40


def test_a_cancelled_request_frees_its_queue_place_at_once(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = TransformersEngine(model, tokenizer, max_batch_size=1, max_queue_size=1)
    try:
        long = GenerationRequest(prompt_ids(tokenizer, PROMPTS[0]), 100_000, temperature=1.0, ignore_eos=True)
        long.sink = Collector()
        engine.submit(long)
        while not long.sink.events:
            time.sleep(0.005)
        waiting = GenerationRequest(prompt_ids(tokenizer, PROMPTS[1]), 5, temperature=0.0)
        engine.submit(waiting)
        assert engine.stats()["queue_depth"] == 1
        engine.cancel(waiting)
        assert engine.stats()["queue_depth"] == 0
        engine.submit(GenerationRequest(prompt_ids(tokenizer, PROMPTS[2]), 5, temperature=0.0))  # room again
        engine.cancel(long)
    finally:
        engine.shutdown(timeout=30)
    assert not engine.alive()


def test_a_top_p_below_float32s_range_keeps_the_likeliest_token():
    """A top_p of 1e-199 is valid (in (0, 1]) but rounds to 0 in float32: it once left no token to sample."""
    from r1kit.engine.batching import sample

    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    assert sample(logits, [1.5, 1.0], [5.7e-199, 1e-300], generators) == [1, 0]


def test_rows_sharing_a_generator_are_drawn_together_and_fail_alone():
    """GRPO's rollouts share one generator per batch: its rows are drawn in one call, reproducibly, and a row
    whose probabilities are not finite still fails alone."""
    from r1kit.engine.batching import sample

    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    shared = torch.Generator().manual_seed(3)
    first = sample(logits, [1.0] * 4, [1.0] * 4, [shared] * 4)
    shared.manual_seed(3)
    assert sample(logits, [1.0] * 4, [1.0] * 4, [shared] * 4) == first
    logits[2] = float("nan")
    tokens = sample(logits, [1.0, 1.0, 1.0, 0.0], [0.9] * 4, [shared] * 4)
    assert isinstance(tokens[2], RuntimeError)
    assert all(isinstance(t, int) for i, t in enumerate(tokens) if i != 2)
    assert tokens[3] == int(logits[3].argmax())


def test_the_cache_grows_into_room_up_to_what_its_rows_can_need(model_and_tokenizer):
    """Each step's keys are written into room kept after the cache, not copied with it into a new tensor (a
    cost that grows with the square of the length), and the room stops at what the rows can need."""
    model, tokenizer = model_and_tokenizer
    engine = TransformersEngine(model, tokenizer, max_batch_size=2, start=False)
    if not engine.joins_mid_batch:
        pytest.skip("this model's cache layers are transformers' own")
    seen = []
    forward = engine._forward

    def recording(input_ids, mask, cache):
        logits = forward(input_ids, mask, cache)
        tensor, length = cache.layers[0]._room["keys"]
        seen.append((tensor.data_ptr(), tensor.shape[2], length))
        return logits

    engine._forward = recording
    ids = [prompt_ids(tokenizer, text) for text in PROMPTS[:2]]
    requests = [GenerationRequest(i, 40, temperature=0.0, ignore_eos=True, detokenize=False) for i in ids]
    engine.run(requests)
    longest = max(map(len, ids))
    assert [length for _, _, length in seen] == list(range(longest, longest + 40))
    assert len({pointer for pointer, _, _ in seen}) <= 3  # 40 steps, at most 3 allocations
    assert max(room for _, room, _ in seen) <= longest + 40
