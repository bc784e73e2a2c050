"""r1kit's one decoder: continuous batching over a transformers causal LM (vLLM on CUDA GPUs: engine/vllm_engine.py).
Serving, evaluation, validation during training, rejection sampling, `r1kit generate` and export's speed check
all decode through it (engine/chats.py turns chats into requests).

The transformers engine schedules at the level of single decode steps (Orca-style continuous batching): one
worker thread holds the active batch and its key/value cache; before each step it admits waiting requests
(prefilled together, then joined to the batch), and after each step it retires finished rows. A request that
arrives mid-generation therefore waits one step, not one whole generation, and the batch stays full.

Rows of different lengths share one cache by left padding: a row's cache is padded with zeros on the left and
its attention mask marks the padding, with position ids counted from the first real token, so each row sees
exactly what it would see alone. Only full-attention caches (`DynamicLayer`) can be joined that way; models
with sliding-window or other cache layers are batched in waves (a new batch starts when the last one ends),
which the engine says at start-up.

Both engines take a `GenerationRequest` and report to its `sink`, from the worker thread: `Token` events with
the new text, then one `Finish` (or `Failure`). The server turns these into HTTP responses. A caller that has a
whole batch at once and wants token ids, not text (GRPO's rollouts: train/rollouts.py), runs the same steps in
its own thread with `run` on an engine made with `start=False`, and skips detokenizing.

One request's failure is its own: a row whose sampling or decoding fails (values that cannot be sampled, a
seed its generator refuses) is failed and dropped while the rest of the batch goes on, and a prefill that fails
(out of memory, say) fails the requests it was admitting, not the batch they were to join. Only a failed decode
step, one forward for the whole batch, fails every row in it.

Every tensor the engine makes is made on the model's device (ids, masks, positions, each row's random
generator), so a model on a GPU decodes there; tests/engine checks it with a default device of `meta`.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("r1kit.serve")


@dataclass
class Token:
    text: str
    """New text since the last event (may be empty when a token only completes a multi-byte character)."""


@dataclass
class Finish:
    reason: str
    """`stop` (end of sequence or a stop string), `length` (max_tokens reached)."""
    num_prompt_tokens: int
    num_completion_tokens: int
    token_ids: list[int] = field(default_factory=list)
    """The completion's tokens, with the end-of-sequence token that ended it (as the model wrote them)."""
    logprobs: list[float] | None = None
    """With `GenerationRequest.logprobs`: each token's log-probability under the distribution it was sampled
    from before top-p (the softmax of the logits over the temperature; of the logits when greedy)."""


@dataclass
class Failure:
    message: str
    status: int = 500
    """The HTTP status the server answers with (a 5xx: the request was valid, serving it failed)."""


Event = Token | Finish | Failure


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    sink: Callable[[Event], None] = lambda event: None
    """Called from the engine's thread; must not block."""
    ignore_eos: bool = False
    """Decode `max_new_tokens` whatever the model ends with (speed measurements)."""
    detokenize: bool = True
    """Send text as it comes (`Token` events); False sends only the `Finish` with its token ids, and takes no
    stop strings."""
    logprobs: bool = False
    """Report each token's log-probability in the `Finish`."""
    generator: Any = None
    """A torch.Generator on the model's device, shared by requests decoded together (GRPO's rollouts): their
    rows are drawn in one call, reproducibly for the same requests in the same order. None: the request's
    own, from `seed`, whatever shares the batch."""
    cancelled: bool = False
    """Set by the server when the client goes away; the engine drops the row at its next step."""
    arrived: float = field(default_factory=time.perf_counter)


class EngineOverloaded(Exception):
    """The waiting queue is full, or the engine is shutting down."""


class _Row:
    """One request being decoded: its tokens, the text already sent, its random generator."""

    def __init__(self, request: GenerationRequest, tokenizer, eos_ids: set[int], device):
        import torch

        self.request, self.tokenizer = request, tokenizer
        self.eos_ids = set() if request.ignore_eos else eos_ids
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.ended_by: int | None = None  # the end-of-sequence token that ended the row
        self.text = ""  # decoded so far
        self._prefix, self._read = 0, 0  # incremental decoding window: ids[prefix:read] are already in text
        self.num_sent_chars = 0
        self.generator = (
            request.generator
            if request.generator is not None
            else torch.Generator(device=device).manual_seed(
                request.seed if request.seed is not None else random.getrandbits(63)
            )
        )
        self.finished = False

    def accept(self, token_id: int, logprob: float | None = None) -> None:
        """Take the sampled token: send the new text, finish on end of sequence, a stop string or max_tokens."""
        request = self.request
        if logprob is not None:
            self.logprobs.append(logprob)
        if token_id in self.eos_ids:
            self.ended_by = token_id
            if request.detokenize:
                self._send_all()  # what was held back for a stop string that never came is the answer's
            return self._finish("stop")
        self.ids.append(token_id)
        if not request.detokenize:
            if len(self.ids) >= request.max_new_tokens:
                self._finish("length")
            return
        self._decode_new()
        for stop in request.stop:
            at = self.text.find(stop, max(0, self.num_sent_chars - len(stop)))
            if at >= 0:
                self._send(self.text[:at])
                return self._finish("stop")
        self._send(self.text[: len(self.text) - _held_back(self.text, request.stop)])
        if len(self.ids) >= request.max_new_tokens:
            self._send_all()
            self._finish("length")

    def _send_all(self) -> None:
        """Send the text held back so far (the start of a stop string, an unfinished character): generation
        ends without the next tokens that would have completed it."""
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        self._send(self.text)

    def _decode_new(self) -> None:
        """Extend `text` by decoding a short window of tokens, not the whole sequence each step: a window that
        starts a few tokens back decodes word boundaries (a leading space, a merged byte) as the full text
        would, and text that ends mid-character waits for the next token."""
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        after = decode(self.ids[self._prefix :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)

    def _send(self, text: str) -> None:
        if len(text) > self.num_sent_chars:
            self.request.sink(Token(text[self.num_sent_chars :]))
            self.num_sent_chars = len(text)

    def _finish(self, reason: str) -> None:
        self.finished = True
        ids = self.ids + ([self.ended_by] if self.ended_by is not None else [])
        logprobs = self.logprobs if self.request.logprobs else None
        self.request.sink(Finish(reason, len(self.request.prompt_ids), len(self.ids), ids, logprobs))

    def fail(self, message: str) -> None:
        self.finished = True
        self.request.sink(Failure(message))

    @property
    def live(self) -> bool:
        return not (self.finished or self.request.cancelled)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters to hold back: the start of a stop string the next tokens may complete."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


def sample(
    logits, temperatures: list[float], top_ps: list[float], generators, *, logprobs: bool = False
) -> list[int | Exception] | tuple[list[int | Exception], list[float]]:
    """One token per row of `logits` (B, V): greedy where the temperature is 0, else nucleus sampling with the
    row's own generator (so a request's seed reproduces its output whatever else is in the batch). A row that
    cannot be sampled (its probabilities are not finite) gets the error in place of a token, the others their
    tokens. With `logprobs`, also each chosen token's log-probability (see `Finish.logprobs`).

    The distributions of the sampled rows are computed together (one softmax, one sort when a row has
    top_p < 1), and rows that share a generator are drawn in one call."""
    import torch

    chosen: list[int | Exception] = list(logits.argmax(dim=-1).tolist())
    sampled = [i for i, temperature in enumerate(temperatures) if temperature != 0]
    if not sampled and not logprobs:  # a greedy batch: the argmax is all
        return chosen
    scaled = logits.to(torch.float32, copy=True)
    if sampled:
        scale = torch.tensor([temperatures[i] for i in sampled], device=logits.device)[:, None]
        scaled[sampled] = scaled[sampled] / scale
        probs = torch.softmax(scaled[sampled], dim=-1)
        if any(top_ps[i] < 1.0 for i in sampled):
            cut = [top_ps[i] if top_ps[i] < 1.0 else math.inf for i in sampled]
            probs = _nucleus(probs, torch.tensor(cut, device=logits.device))
        groups: dict[int, list[int]] = {}  # rows by generator, as positions in `sampled`
        for j, i in enumerate(sampled):
            groups.setdefault(id(generators[i]), []).append(j)
        draws = {}
        for group in groups.values():
            generator = generators[sampled[group[0]]]
            try:
                drawn = torch.multinomial(probs[group], 1, generator=generator)[:, 0]
            except (RuntimeError, ValueError):
                drawn = None
            if drawn is not None:
                draws.update({sampled[j]: drawn[k : k + 1] for k, j in enumerate(group)})
                continue
            for j in group:  # a row cannot be drawn: draw each alone, so only that row fails
                try:
                    draws[sampled[j]] = torch.multinomial(probs[j], 1, generator=generator)
                except (RuntimeError, ValueError) as error:
                    chosen[sampled[j]] = error
        if draws:  # one transfer for the batch
            for i, token in zip(draws, torch.cat(list(draws.values())).tolist()):
                chosen[i] = token
    if not logprobs:
        return chosen
    tokens = torch.tensor([t if isinstance(t, int) else 0 for t in chosen], device=logits.device)
    picked = torch.log_softmax(scaled, dim=-1).gather(1, tokens[:, None])[:, 0]
    return chosen, picked.tolist()


def _nucleus(probs, top_ps):
    """`probs` (n, V) with each row cut to its smallest set of likeliest tokens holding `top_ps` (n,) of the
    mass, and always the likeliest (below float32's range a top_p rounds to 0); not renormalised (multinomial
    takes weights)."""
    import torch

    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_ps[:, None]  # keeps the token that crosses top_p
    outside[:, 0] = False
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


ROW_BUCKET = 8
"""The batch sheds ended rows in multiples of this many (an ended row is decoded, and its token dropped, until
then): each shed copies the whole cache, and shedding in multiples of 8 decoded the demo's GRPO rollouts (64
rows) 1.1x faster than shedding each row as it ended, in bf16 and in fp32; the batch also takes fewer shapes."""


class WorkerEngine:
    """The server's side of an engine whose worker thread decodes (`_loop`): a bounded queue of requests, their
    cancellation, the figures /metrics reads, and a shutdown that finishes what was taken. A subclass calls
    `_start_worker` and says how many rows it is decoding (`_live_rows`)."""

    def _start_worker(self, max_queue_size: int, name: str, start: bool) -> None:
        self.max_queue_size = max_queue_size
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._lock = threading.Condition()
        self._accepting, self._running = True, True
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self.num_generated_tokens = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        if start:
            self._thread.start()

    def _loop(self) -> None:
        raise NotImplementedError

    def _live_rows(self) -> int:
        """Rows being decoded now (called with the lock held)."""
        raise NotImplementedError

    def _has_rows(self) -> bool:
        """Rows taken and not yet let go, live or not (called with the lock held)."""
        raise NotImplementedError

    def _count(self, num_tokens: int) -> None:
        with self._lock:
            self.num_generated_tokens += num_tokens
            self._recent.append((time.perf_counter(), num_tokens))

    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            if not self._accepting:
                raise EngineOverloaded("the server is shutting down")
            if len(self._waiting) >= self.max_queue_size:
                raise EngineOverloaded(
                    f"{len(self._waiting)} requests are already waiting; try again shortly"
                )
            self._waiting.append(request)
            self._lock.notify()

    def cancel(self, request: GenerationRequest) -> None:
        """The client went away: free its place in the queue now, and its row at the next step (the row stops
        being decoded for it)."""
        with self._lock:
            request.cancelled = True
            for i, waiting in enumerate(self._waiting):
                if waiting is request:
                    del self._waiting[i]
                    break

    def alive(self) -> bool:
        """The worker thread runs (False once it has died or been shut down)."""
        return self._thread.is_alive()

    def stats(self) -> dict[str, float]:
        now = time.perf_counter()
        with self._lock:
            while self._recent and now - self._recent[0][0] > 10.0:
                self._recent.popleft()
            recent = sum(n for _, n in self._recent)
            span = now - self._recent[0][0] if self._recent else 0.0
            return {
                "queue_depth": len(self._waiting),
                "batch_size": self._live_rows(),
                "tokens_per_second": recent / span if span > 0.5 else 0.0,
                "generated_tokens": self.num_generated_tokens,
            }

    def shutdown(self, timeout: float = 300.0) -> None:
        """Stop taking requests, finish the ones already taken (waiting or running), then stop the thread."""
        with self._lock:
            self._accepting = False
            self._lock.notify()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._waiting and not self._has_rows():
                    break
            time.sleep(0.05)
        with self._lock:
            self._running = False
            self._lock.notify()
        self._thread.join(timeout=10)


class TransformersEngine(WorkerEngine):
    """Continuous batching over a transformers causal LM on one device (see the module docstring)."""

    name = "transformers"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_batch_size: int = 8,
        max_queue_size: int = 256,
        eos_ids=None,
        start: bool = True,
    ):
        """`eos_ids`: the tokens that end a sequence (default: the model's and the tokenizer's); `start=False`
        starts no worker thread: the caller decodes with `run`."""
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        eos = model.generation_config.eos_token_id
        self.eos_ids = (
            set(eos_ids)
            if eos_ids is not None
            else {
                *(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []),
            }
        )
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        # The KV cache is the forward's `cache` in transformers 5.24, which warns that `past_key_values` goes in
        # 5.40; a forward without `cache` (an older release, remote code) takes the old name. A PEFT model passes
        # its arguments on to the model it wraps, whose forward says.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        parameters = inspect.signature(base.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        probe = DynamicCache(config=model.config)
        self.joins_mid_batch = all(type(layer) is DynamicLayer for layer in probe.layers)
        if not self.joins_mid_batch:
            log.warning(
                "this model's cache has sliding-window or other non-full layers: requests are batched in "
                "waves (a new batch starts when the current one ends), not joined mid-generation"
            )
        self._torch = torch
        self._rows: list[_Row] = []
        self._cache = None
        self._mask = None  # (B, T) 1 for real tokens, 0 for left padding
        self._next_ids: list[int] = []
        self._start_worker(max_queue_size, "r1kit-engine", start)

    # ---- the server's side (WorkerEngine): what it reads of the batch
    def _live_rows(self) -> int:
        return sum(row.live for row in self._rows)

    def _has_rows(self) -> bool:
        return bool(self._rows)

    def run(self, requests: list[GenerationRequest]) -> None:
        """Decode `requests` to their end in the calling thread, `max_batch_size` rows at a time (an engine made
        with `start=False`); each request's sink gets its events as with `submit`. Decodes under `no_grad`, not
        `inference_mode`: autocast keeps the low-precision copies of the weights it makes only outside
        inference mode, so a caller's autocast around `run` casts each weight once, not at every step (1.2x
        faster rollouts in the demo's GRPO under bf16 autocast)."""
        if self._thread.is_alive():
            raise RuntimeError("run() decodes in the caller's thread: make the engine with start=False")
        self._waiting.extend(requests)
        while self._waiting or self._rows:
            self._step(self._take_waiting(), self._torch.no_grad)

    # ---- the worker thread
    def _loop(self) -> None:
        while True:
            with self._lock:
                while self._running and not self._waiting and not self._rows:
                    self._lock.wait()
                if not self._running:
                    return
                admitted = self._take_waiting()
            self._step(admitted, self._torch.inference_mode)

    def _step(self, admitted: list[GenerationRequest], grad_mode) -> None:
        """Prefill the admitted requests into the batch, then decode one token for every row."""
        with grad_mode():
            try:
                if admitted:
                    self._admit(admitted)
                if self._rows:
                    self._decode_step()
            except Exception as error:  # one forward for the whole batch: its rows fail together
                log.exception("generation step failed")
                for row in self._rows:
                    row.fail(f"generation failed: {error}")
                self._rows, self._cache, self._mask, self._next_ids = [], None, None, []

    def _take_waiting(self) -> list[GenerationRequest]:
        if self._rows and not self.joins_mid_batch:
            return []
        taken = []
        live = sum(row.live for row in self._rows)
        while self._waiting and live + len(taken) < self.max_batch_size:
            request = self._waiting.popleft()
            if not request.cancelled:
                taken.append(request)
        return taken

    def _admit(self, requests: list[GenerationRequest]) -> None:
        """Start each request's row (a seed its generator refuses fails that request alone) and prefill them
        together; when that fails, prefill them one by one, so only a request that fails alone (a prompt the
        model cannot take, one too long for memory) is failed, and the running batch stays as it was."""
        rows = []
        for request in requests:
            try:
                rows.append(_Row(request, self.tokenizer, self.eos_ids, self.device))
            except Exception as error:  # noqa: BLE001 - reported to the request (a seed out of range, say)
                request.sink(Failure(f"cannot start this request: {error}"))
        if rows and not all(row.live for row in self._rows):  # they take the places of rows that ended
            self._select([i for i, row in enumerate(self._rows) if row.live])
        self._prefill_rows(rows)

    def _prefill_rows(self, rows: list[_Row]) -> None:
        if not rows:
            return
        try:
            cache, mask, logits = self._prefill([row.request for row in rows])
        except Exception as error:
            if len(rows) > 1:
                for row in rows:
                    self._prefill_rows([row])
                return
            log.exception("prefill failed")
            rows[0].fail(f"generation failed: {error}")
            return
        try:
            self._join(rows, cache, mask)
        except Exception as error:  # the batch's cache may be half-extended: the caller fails the batch
            for row in rows:
                if not any(row is joined for joined in self._rows):
                    row.fail(f"generation failed: {error}")
            raise
        self._accept(logits, rows)

    def _prefill(self, requests: list[GenerationRequest]):
        """Run the new prompts together (left-padded): (their cache, their mask, their last logits)."""
        torch = self._torch
        from transformers import DynamicCache

        length = max(len(r.prompt_ids) for r in requests)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor(
            [[pad_id] * (length - len(r.prompt_ids)) + r.prompt_ids for r in requests], device=self.device
        )
        mask = torch.tensor(
            [[0] * (length - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests],
            device=self.device,
        )
        cache = DynamicCache(config=self.model.config)
        if self.joins_mid_batch:
            limit = length + max(r.max_new_tokens for r in requests)  # the most columns these rows can need
            cache.layers = [_growing_layer(limit) for _ in cache.layers]
        return cache, mask, self._forward(input_ids, mask, cache)  # logits (n, V)

    def _decode_step(self) -> None:
        torch = self._torch
        ones = torch.ones(len(self._rows), 1, dtype=self._mask.dtype, device=self.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        logits = self._forward(
            torch.tensor(self._next_ids, device=self.device)[:, None], self._mask, self._cache
        )
        self._accept(logits, list(self._rows))

    def _forward(self, input_ids, mask, cache):
        """Logits of the last position, (B, V); position ids count real tokens only."""
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_argument: cache},
        )
        return output.logits[:, -1]

    def _accept(self, logits, rows: list[_Row]) -> None:
        """Sample a token for each of `rows` (the last len(rows) rows of the batch), send it, retire rows that
        finished or whose client left."""
        offset = len(self._rows) - len(rows)
        settings = (
            [r.request.temperature for r in rows],
            [r.request.top_p for r in rows],
            [r.generator for r in rows],
        )
        if any(r.request.logprobs for r in rows):
            tokens, logprobs = sample(logits, *settings, logprobs=True)
        else:
            tokens, logprobs = sample(logits, *settings), [None] * len(rows)
        count = 0
        for i, (row, token) in enumerate(zip(rows, tokens)):
            if not row.live:  # ended, kept for the batch's shape (see ROW_BUCKET), or cancelled
                token = 0
            elif isinstance(token, Exception):
                row.fail(f"sampling failed: {token}")
                token = 0
            else:
                count += 1
                try:
                    row.accept(token, logprobs[i] if row.request.logprobs else None)
                except Exception as error:  # this row's decoding, not the batch's
                    log.exception("decoding a row failed")
                    row.fail(f"decoding failed: {error}")
            self._next_ids[offset + i] = token
        self._count(count)
        live = [i for i, row in enumerate(self._rows) if row.live]
        size = -(-len(live) // ROW_BUCKET) * ROW_BUCKET
        if size < len(self._rows):
            ended = [i for i, row in enumerate(self._rows) if not row.live][: size - len(live)]
            self._select(sorted(live + ended))

    def _join(self, rows: list[_Row], cache, mask) -> None:
        """Append `rows` with their cache (n, H, T2, D) per layer to the batch's (B, H, T, D), padding the shorter
        of the two on the left to a common length."""
        torch = self._torch
        if not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            self._next_ids = [0] * len(rows)
            return
        length = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([_pad_left(old.keys, length), _pad_left(new.keys, length)], dim=0)
            old.values = torch.cat([_pad_left(old.values, length), _pad_left(new.values, length)], dim=0)
        self._mask = torch.cat([_pad_left(self._mask, length, dim=1), _pad_left(mask, length, dim=1)], dim=0)
        limit = length + max(row.request.max_new_tokens - len(row.ids) for row in self._rows + rows)
        for layer in self._cache.layers:
            layer.limit = limit
        self._rows = self._rows + rows
        self._next_ids = self._next_ids + [0] * len(rows)

    def _select(self, keep: list[int]) -> None:
        """Keep only the rows at `keep`, and drop the left-padding columns no remaining row needs."""
        if not keep:
            self._rows, self._cache, self._mask, self._next_ids = [], None, None, []
            return
        index = self._torch.tensor(keep, device=self.device)
        mask = self._mask[index]
        start = int((mask.sum(0) == 0).int().cumprod(0).sum())  # leading all-padding columns
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self._mask = mask[:, start:]
        self._rows = [self._rows[i] for i in keep]
        self._next_ids = [self._next_ids[i] for i in keep]


def _growing_layer(limit: int):
    """A full-attention cache layer that writes each step's keys and values into room kept free after them
    (doubled when full, up to `limit` columns: the most its rows can need), where transformers' `DynamicLayer`
    copies the whole cache into a new tensor at every step: a cost that grows with the square of the
    completion's length. Reads and assignments of `keys` and `values` (the engine's joins and selections) see
    and set exactly the cached part."""
    layer = _growing_layer_class()()
    layer.limit = limit
    return layer


def _cached_part(name: str) -> property:
    """`keys` or `values` of a growing layer: reads see the cached columns, assignments set them (no room)."""

    def read(layer):
        tensor, length = layer.__dict__.get("_room", {}).get(name, (None, 0))
        return tensor if tensor is None or tensor.dim() != 4 else tensor[:, :, :length]

    def write(layer, tensor):
        length = tensor.shape[2] if tensor is not None and tensor.dim() == 4 else 0
        layer.__dict__.setdefault("_room", {})[name] = (tensor, length)

    return property(read, write)


@functools.cache
def _growing_layer_class():
    """The class of `_growing_layer`, made on first use (transformers is imported only when a model is)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        _room: dict  # "keys"/"values" -> (tensor with room, cached length)
        limit = 0
        keys = _cached_part("keys")
        values = _cached_part("values")

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            for name, new in (("keys", key_states), ("values", value_states)):
                tensor, length = self._room[name]
                needed = length + new.shape[2]
                if tensor is None or tensor.dim() != 4 or needed > tensor.shape[2]:
                    room = max(needed, min(2 * needed, self.limit))
                    tensor = _with_room(getattr(self, name), new, room)
                tensor[:, :, length:needed] = new
                self._room[name] = (tensor, needed)
            return self.keys, self.values

    return GrowingLayer


def _with_room(cached, new, capacity: int):
    """A (B, H, capacity, D) tensor like `new` holding `cached` (or nothing) at its start."""

    room = new.new_empty(new.shape[0], new.shape[1], capacity, new.shape[3])
    if cached is not None and cached.dim() == 4 and cached.shape[2]:
        room[:, :, : cached.shape[2]] = cached
    return room


def _pad_left(tensor, length: int, dim: int = 2):
    """`tensor` with zeros prepended along `dim` up to `length`."""
    import torch

    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
