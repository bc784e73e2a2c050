"""Where completions come from: a local model folder (through r1kit's continuous-batching engine, in
process) or any OpenAI-compatible endpoint (r1kit's server, vLLM, a hosted API). Both return the same
`Sample`s with timings, so accuracy and speed are measured alike.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from r1kit.engine.chats import PromptTooLong, Sample, Settings, complete_chats, sample_from_deltas
from r1kit.errors import UserError
from r1kit.r1format import CONTENT, REASONING, ReasoningStream

__all__ = ["EndpointBackend", "LocalBackend", "Sample", "Settings"]


class LocalBackend:
    """A model folder, or a LoRA adapter folder (merged into its base in memory), decoded by
    r1kit's engine (all requests batched together); a GGUF export, decoded by llama.cpp."""

    def __init__(self, model_dir, *, max_batch_size: int = 16, trust_remote_code: bool = False):
        from pathlib import Path

        from r1kit.engine.batching import TransformersEngine
        from r1kit.hardware import cuda_available
        from r1kit.models.load import gguf_export_file, load_full_model, load_tokenizer

        model_dir = Path(model_dir)
        self.name = str(model_dir)
        gguf_path = gguf_export_file(model_dir)
        if gguf_path is not None:  # a GGUF export: llama.cpp decodes, the tokenizer beside the file renders
            from r1kit.engine.llamacpp_engine import LlamaCppEngine
            from r1kit.hardware import require_module

            require_module("llama_cpp", "llamacpp", f"evaluating the GGUF file {gguf_path}")
            self.model, self.tokenizer = None, load_tokenizer(gguf_path.parent)
            self.engine = LlamaCppEngine(gguf_path, self.tokenizer, max_queue_size=1_000_000)
            return
        is_adapter = (model_dir / "adapter_config.json").is_file()
        self.model, base_dir = load_full_model(model_dir, is_adapter, trust_remote_code)
        self.model.eval()
        has_tokenizer = any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
        self.tokenizer = load_tokenizer(
            model_dir if has_tokenizer else base_dir, trust_remote_code=trust_remote_code
        )
        if self.tokenizer.chat_template is None:
            raise UserError(f"{model_dir}: the tokenizer has no chat template, so problems cannot be asked")
        if cuda_available():
            self.model = self.model.to("cuda")
        self.engine = TransformersEngine(
            self.model, self.tokenizer, max_batch_size=max_batch_size, max_queue_size=1_000_000
        )

    def complete(self, chats: list[list[dict]], settings: Settings, seeds: list[int]) -> list[Sample]:
        """One sample per chat, in order."""
        try:
            return complete_chats(self.engine, self.tokenizer, chats, settings, seeds)
        except PromptTooLong as error:
            raise UserError(str(error)) from None

    def close(self) -> None:
        self.engine.shutdown()


class EndpointBackend:
    """An OpenAI-compatible chat endpoint, streamed so that time to first token is measured; `concurrency`
    requests in flight. Reasoning comes from `reasoning_content` when the server separates it, else from a
    `<think>` block in `content`."""

    def __init__(
        self, base_url: str, *, model: str | None = None, api_key: str | None = None, concurrency: int = 8
    ):
        from openai import OpenAI

        self.client = OpenAI(
            base_url=base_url.rstrip("/"), api_key=api_key or "none", max_retries=2, timeout=600
        )
        try:
            models = [m.id for m in self.client.models.list().data]
        except Exception as error:  # noqa: BLE001 - unreachable server, bad key: say which, before any evaluation starts
            raise UserError(f"endpoint {base_url}: cannot list models ({error})") from None
        if model is None:
            if not models:
                raise UserError(f"endpoint {base_url} serves no model")
            model = models[0]
        elif models and model not in models:
            raise UserError(f"endpoint {base_url} has no model {model!r}; it serves {', '.join(models)}")
        self.model, self.concurrency, self.name = model, concurrency, f"{base_url} ({model})"

    def _one(self, messages: list[dict], settings: Settings, seed: int) -> Sample:
        sent = time.perf_counter()
        stream = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_new_tokens,
            seed=seed,
        )
        splitter, deltas, token_times, num_tokens, finish = ReasoningStream(), [], [], 0, "stop"
        separate_reasoning = False
        for chunk in stream:
            if chunk.usage:
                num_tokens = chunk.usage.completion_tokens
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            reasoning = getattr(choice.delta, "reasoning_content", None)
            if reasoning or choice.delta.content:
                token_times.append(time.perf_counter())
            if reasoning:
                separate_reasoning = True
                deltas.append((REASONING, reasoning))
            if choice.delta.content:
                deltas.extend(
                    [(CONTENT, choice.delta.content)]
                    if separate_reasoning
                    else splitter.feed(choice.delta.content)
                )
        if not separate_reasoning:
            deltas.extend(splitter.finish())
        sample = sample_from_deltas(
            deltas,
            separate_reasoning or splitter.saw_think,
            token_times,
            sent,
            num_tokens or len(token_times),
            finish,
        )
        sample.answer = sample.answer.strip()
        return sample

    def complete(self, chats: list[list[dict]], settings: Settings, seeds: list[int]) -> list[Sample]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda pair: self._one(pair[0], settings, pair[1]), zip(chats, seeds)))

    def close(self) -> None:
        self.client.close()
