"""vLLM behind the same API as the transformers engine (CUDA GPUs; `serve.engine: vllm`).

vLLM does its own continuous batching and paged KV cache; this adapter runs its async engine on an event loop
in a background thread and turns its cumulative outputs into the `Token`/`Finish` events the server reads.
The server refuses `vllm` before this module is imported where there is no CUDA GPU or no vllm package.

vLLM queues without bound; this adapter takes at most `max_batch_size + max_queue_size` requests at once and
refuses more with `EngineOverloaded` (the server's 503), as the transformers engine does. A cancelled request
is aborted in vLLM at once, whether it waits or runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

from r1kit.engine.batching import EngineOverloaded, Failure, Finish, GenerationRequest, Token


class VllmEngine:
    name = "vllm"

    def __init__(
        self,
        model_dir: Path,
        *,
        max_batch_size: int,
        max_queue_size: int = 256,
        trust_remote_code: bool = False,
    ):
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="r1kit-vllm", daemon=True)
        self._thread.start()
        args = AsyncEngineArgs(
            model=str(model_dir), max_num_seqs=max_batch_size, trust_remote_code=trust_remote_code
        )
        self._engine = asyncio.run_coroutine_threadsafe(
            self._create(AsyncLLMEngine, args), self._loop
        ).result()
        self.context_length = self._engine.model_config.max_model_len
        self.max_batch_size, self.max_queue_size = max_batch_size, max_queue_size
        self._in_flight, self._accepting = 0, True
        self._lock = threading.Lock()
        self._ids: dict[int, str] = {}  # id(request) -> vLLM's request id, while it runs
        self._recent: list[tuple[float, int]] = []
        self.num_generated_tokens = 0

    @staticmethod
    async def _create(engine_class, args):
        return engine_class.from_engine_args(args)

    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            if not self._accepting:
                raise EngineOverloaded("the server is shutting down")
            if self._in_flight >= self.max_batch_size + self.max_queue_size:
                raise EngineOverloaded(
                    f"{self._in_flight - self.max_batch_size} requests are already waiting; try again shortly"
                )
            self._in_flight += 1
            self._ids[id(request)] = uuid.uuid4().hex
        asyncio.run_coroutine_threadsafe(self._run(request), self._loop)

    def cancel(self, request: GenerationRequest) -> None:
        request.cancelled = True
        with self._lock:
            request_id = self._ids.get(id(request))
        if request_id is not None:
            asyncio.run_coroutine_threadsafe(self._engine.abort(request_id), self._loop)

    def alive(self) -> bool:
        return self._thread.is_alive() and not getattr(self._engine, "errored", False)

    async def _run(self, request: GenerationRequest) -> None:
        from vllm import SamplingParams

        params = SamplingParams(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            max_tokens=request.max_new_tokens,
            stop=request.stop or None,
            skip_special_tokens=True,
            ignore_eos=request.ignore_eos,
        )
        request_id, sent, output = self._ids[id(request)], 0, None
        try:
            async for result in self._engine.generate(
                {"prompt_token_ids": request.prompt_ids}, params, request_id
            ):
                if request.cancelled:
                    await self._engine.abort(request_id)
                    return
                output = result.outputs[0]
                if len(output.text) > sent:
                    request.sink(Token(output.text[sent:]))
                    sent = len(output.text)
            count = len(output.token_ids) if output else 0
            self.num_generated_tokens += count
            self._recent.append((time.perf_counter(), count))
            reason = "length" if output is not None and output.finish_reason == "length" else "stop"
            request.sink(Finish(reason, len(request.prompt_ids), count))
        except Exception as error:  # noqa: BLE001 - reported to the request; the engine keeps serving the others
            request.sink(Failure(f"generation failed: {error}"))
        finally:
            with self._lock:
                self._in_flight -= 1
                del self._ids[id(request)]

    def stats(self) -> dict[str, float]:
        now = time.perf_counter()
        self._recent = [(t, n) for t, n in self._recent if now - t <= 10.0]
        recent = sum(n for _, n in self._recent)
        return {
            "queue_depth": max(0, self._in_flight - self.max_batch_size),
            "batch_size": self._in_flight,
            "tokens_per_second": recent / 10.0,
            "generated_tokens": self.num_generated_tokens,
        }

    def shutdown(self, timeout: float = 300.0) -> None:
        self._accepting = False
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self._engine.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
