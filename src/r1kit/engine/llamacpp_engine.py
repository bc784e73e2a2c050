"""llama.cpp behind the same API as the transformers engine: GGUF files on CPUs (`serve.engine: llama.cpp`).

llama.cpp runs the forward passes (its own CPU kernels for f16, q8_0 and the k-quants); r1kit keeps everything
else: the prompt is rendered and tokenized by the server with the model's Hugging Face tokenizer, each token is
chosen by the transformers engine's `sample` from llama.cpp's logits (so temperature, top-p, seeds and logprobs
mean exactly what they mean there), and text, stop strings and finish reasons come from the same row logic.
Requests are decoded one after another, each in llama.cpp's context from its first token that differs from
the previous prompt (a shared system prompt or chat history is not recomputed). The queue is bounded as the
transformers engine's is, and a cancelled request stops at its next token.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from r1kit.engine.batching import Failure, GenerationRequest, WorkerEngine, _Row, sample

log = logging.getLogger("r1kit.serve")

DEFAULT_CONTEXT = 8192
"""Tokens of KV cache llama.cpp allocates when the model's own context is longer (131,072 for the R1-Distill
models would take gigabytes); `serve.context_length` asks for more."""


class LlamaCppEngine(WorkerEngine):
    name = "llama.cpp"

    def __init__(
        self,
        gguf_path: Path,
        tokenizer,
        *,
        max_queue_size: int = 256,
        context_length: int | None = None,
        threads: int | None = None,
        eos_ids=None,
        start: bool = True,
    ):
        import llama_cpp
        import torch

        self._llama_cpp, self._torch = llama_cpp, torch
        trained = _trained_context(gguf_path)
        if context_length and trained and context_length > trained:
            from r1kit.errors import UserError

            raise UserError(
                f"serve.context_length {context_length} is longer than the {trained} tokens of context "
                f"{gguf_path.name} declares (llama.cpp would allocate its KV cache for all of them)"
            )
        n_ctx = context_length or min(trained or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        self.llama = load_llama(gguf_path, n_ctx, threads or default_threads())
        self.context_length = self.llama.n_ctx()
        self.tokenizer = tokenizer
        self.vocab_size = self.llama.n_vocab()
        self.eos_ids = set(eos_ids) if eos_ids is not None else _eos_ids(self.llama, tokenizer)
        self.max_batch_size = 1
        self._current: _Row | None = None
        self._start_worker(max_queue_size, "r1kit-llama.cpp", start)

    # ---- the server's side (WorkerEngine)
    def _live_rows(self) -> int:
        return int(self._current is not None and self._current.live)

    def _has_rows(self) -> bool:
        return self._current is not None

    def shutdown(self, timeout: float = 300.0) -> None:
        """WorkerEngine's shutdown, then the model's memory is freed."""
        super().shutdown(timeout)
        if not self._thread.is_alive():
            self.llama.close()

    def run(self, requests: list[GenerationRequest]) -> None:
        """Decode `requests` in the calling thread (an engine made with `start=False`)."""
        if self._thread.is_alive():
            raise RuntimeError("run() decodes in the caller's thread: make the engine with start=False")
        for request in requests:
            self._generate(request)

    # ---- the worker thread
    def _loop(self) -> None:
        while True:
            with self._lock:
                while self._running and not self._waiting:
                    self._lock.wait()
                if not self._running:
                    return
                request = self._waiting.popleft()
            if not request.cancelled:
                self._generate(request)

    def _generate(self, request: GenerationRequest) -> None:
        try:
            row = _Row(request, self.tokenizer, self.eos_ids, "cpu")
        except Exception as error:  # noqa: BLE001 - reported to the request (a seed out of range, say)
            request.sink(Failure(f"cannot start this request: {error}"))
            return
        with self._lock:
            self._current = row
        try:
            self._prefill(request.prompt_ids)
            while row.live:
                token, logprob = self._choose(row)
                row.accept(token, logprob)
                self._count(1)
                if row.live:
                    self.llama.eval([token])
        except (
            Exception
        ) as error:  # this request's, not the engine's: the next one starts from a clean context
            log.exception("llama.cpp generation failed")
            if not row.finished:
                row.fail(f"generation failed: {error}")
            self.llama.reset()
        finally:
            with self._lock:
                self._current = None

    def _prefill(self, prompt_ids: list[int]) -> None:
        """Evaluate the prompt from its first token that differs from what the context holds (at least the last
        token is evaluated, for its logits)."""
        if any(not 0 <= token < self.vocab_size for token in prompt_ids):
            raise ValueError(f"a prompt token is outside the model's vocabulary of {self.vocab_size}")
        held = list(self.llama.input_ids[: self.llama.n_tokens])
        shared = 0
        for a, b in zip(held, prompt_ids[:-1]):
            if a != b:
                break
            shared += 1
        self.llama.n_tokens = shared
        self.llama.eval(prompt_ids[shared:])

    def _choose(self, row: _Row) -> tuple[int, float | None]:
        import numpy as np

        pointer = self._llama_cpp.llama_get_logits_ith(self.llama.ctx, -1)
        logits = self._torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self.vocab_size,)).copy())
        request = row.request
        if request.logprobs:
            (token,), (logprob,) = sample(
                logits[None], [request.temperature], [request.top_p], [row.generator], logprobs=True
            )
        else:
            (token,), logprob = (
                sample(logits[None], [request.temperature], [request.top_p], [row.generator]),
                None,
            )
        if isinstance(token, Exception):
            raise token
        return token, logprob


def default_threads() -> int:
    """llama.cpp's compute threads: the CPUs this process may use, less one for the server's own work (its event
    loop, tokenizing, detokenizing). llama.cpp's threads wait for each other by spinning: when one of them shares
    its core with anything else, every step waits for it. Measured on 2 cores with one busy with another
    process: 23 tokens/s with 2 threads against 1,707 with 1 (the demo model, f16; 1,461 against 1,631 with both
    cores free)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


_LOADING = threading.Lock()


def load_llama(gguf_path: Path, n_ctx: int, threads: int):
    """A `llama_cpp.Llama` for `gguf_path`, quiet. On CPUs with AMX, without llama.cpp's extra weight buffers: its
    AMX repacking crashes the process on the first forward of q8_0 and q4_k_m files (llama-cpp-python 0.3.36 on
    a Xeon with AMX, checked: a segmentation fault, f16 unaffected), and the plain CPU kernels it falls back to
    still run these files faster than f16. `Llama` takes no argument for it, so the default parameters it
    starts from are adjusted while it loads."""
    import llama_cpp
    import llama_cpp.llama_cpp as bindings

    from r1kit.hardware import cpu_flags

    defaults = bindings.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    with _LOADING:
        if "amx_int8" in cpu_flags():
            bindings.llama_model_default_params = without_extra_buffers
        try:
            return llama_cpp.Llama(
                model_path=str(gguf_path),
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                n_threads=threads,
                verbose=False,
            )
        except ValueError as error:  # what llama-cpp-python raises for a file llama.cpp cannot load
            from r1kit.errors import UserError

            raise UserError(f"llama.cpp cannot load {gguf_path}: {error}") from None
        finally:
            bindings.llama_model_default_params = defaults


def _trained_context(gguf_path: Path) -> int | None:
    """The context length the file declares, read with the `gguf` package before llama.cpp loads it."""
    import gguf

    from r1kit.errors import UserError

    try:
        reader = gguf.GGUFReader(gguf_path)
        arch = reader.fields["general.architecture"].contents()
        field = reader.fields.get(f"{arch}.context_length")
        return int(field.contents()) if field is not None else None
    except Exception as error:  # noqa: BLE001 - the reader fails in many ways on a file that is not whole
        raise UserError(
            f"llama.cpp cannot load {gguf_path}: not a whole GGUF file ({type(error).__name__}: {error})"
        ) from None


def _eos_ids(llama, tokenizer) -> set[int]:
    """The tokens that end generation: the GGUF's end-of-sequence token and the tokenizer's."""
    ids = {llama.token_eos()}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
