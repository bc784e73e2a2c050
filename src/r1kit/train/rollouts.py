"""GRPO's rollouts through r1kit's batching engine (engine/batching.py): TRL's `rollout_func` hook, used when
`grpo.rollout_engine: r1kit` (the default; `vllm_colocate` and `vllm_server` decode on CUDA GPUs with vLLM,
`transformers` keeps TRL's own `generate`).

Why: transformers' padded `generate` runs every row of the batch until the longest completion ends and pays
its per-step overhead (logits processors, stopping criteria) for each; the engine decodes the same batch with
rows leaving as they end, samples all rows' distributions in one softmax, and does not detokenize. The
measured gain is in benchmarks/grpo_throughput.py.

What TRL gets is what its own generation gives: the prompts rendered by the chat template as TRL renders them,
sampled at the recipe's temperature and top-p up to `max_completion_length`, completions that end with the
end-of-sequence token that ended them (TRL's end-of-sequence ids), one completion per prompt it passes (TRL
already repeats each problem `num_generations` times). TRL's other sampling settings (top-k, min-p, repetition
penalty, generation kwargs) are refused, not ignored: `check_supported`.

A call's draws come from one generator seeded with the run's seed, the process, the step and the call, so a run
samples the same rollouts when repeated and a resumed run samples what the uninterrupted one would have.
"""

from __future__ import annotations

import random
from contextlib import nullcontext

from r1kit.errors import UserError


def check_supported(args) -> None:
    """Refuse sampling settings the engine does not implement (it samples temperature and top-p only)."""
    unsupported = {
        "top_k": args.top_k not in (None, 0),
        "min_p": args.min_p not in (None, 0.0),
        "repetition_penalty": args.repetition_penalty != 1.0,
        "generation_kwargs": bool(args.generation_kwargs),
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise UserError(
            f"grpo.extra sets {', '.join(named)}, which grpo.rollout_engine: r1kit does not sample with: "
            f"remove it, or set grpo.rollout_engine: transformers"
        )


class EngineRollouts:
    """TRL's `rollout_func(prompts, trainer)`: one completion per prompt, decoded by the engine in the calling
    process. `logprobs=True` also returns each token's log-probability under the temperature-scaled policy (TRL
    uses sampling log-probs only to correct vLLM's numerics, so GRPO does not ask for them)."""

    def __init__(self, seed: int, *, temperature: float | None = None, logprobs: bool = False):
        self.seed, self.temperature, self.logprobs = seed, temperature, logprobs
        self._step, self._calls = -1, 0

    def seed_of(self, process: int, step: int) -> int:
        """The seed of this call's draws: the run's, the process's, the step's and the call's within the step."""
        if step != self._step:
            self._step, self._calls = step, 0
        self._calls += 1
        return random.Random(f"rollouts/{self.seed}/{process}/{step}/{self._calls}").getrandbits(63)

    def __call__(self, prompts: list, trainer) -> dict:
        import torch
        from trl.models.utils import unwrap_model_for_generation

        from r1kit.engine.batching import Failure, Finish, GenerationRequest, TransformersEngine
        from r1kit.r1format import render_chat

        tokenizer, args = trainer.processing_class, trainer.args
        temperature = trainer.temperature if self.temperature is None else self.temperature
        prompt_ids = [render_chat(tokenizer, prompt)[0] for prompt in prompts]
        generator = torch.Generator(device=trainer.accelerator.device).manual_seed(
            self.seed_of(trainer.accelerator.process_index, trainer.state.global_step)
        )
        finished: list[Finish | Failure | None] = [None] * len(prompts)

        def sink(i):
            def record(event):
                if isinstance(event, (Finish, Failure)):
                    finished[i] = event

            return record

        requests = [
            GenerationRequest(
                ids,
                trainer.max_completion_length,
                temperature=temperature,
                top_p=trainer.top_p,
                generator=generator,
                sink=sink(i),
                detokenize=False,
                logprobs=self.logprobs,
            )
            for i, ids in enumerate(prompt_ids)
        ]
        gather = getattr(trainer, "_dist", None)  # FSDP: full parameters while generating, as TRL's generate
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as model,
            torch.no_grad(),
            gather.summon_full_params(trainer.model_wrapped, recurse=False) if gather else nullcontext(),
        ):
            training = model.training
            try:
                engine = TransformersEngine(
                    model,
                    tokenizer,
                    max_batch_size=len(requests),
                    eos_ids=trainer.eos_token_ids,
                    start=False,
                )
                with trainer.accelerator.autocast():  # one context: each weight is cast once per rollout
                    engine.run(requests)
            finally:
                model.train(training)  # the engine decodes in eval mode
        failures = [
            event.message if event else "no result" for event in finished if not isinstance(event, Finish)
        ]
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(prompts)} rollouts failed: {failures[0]}")
        done = [event for event in finished if isinstance(event, Finish)]
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [event.token_ids for event in done],
            "logprobs": [event.logprobs for event in done] if self.logprobs else None,
        }
