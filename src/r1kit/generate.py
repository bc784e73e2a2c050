"""`r1kit generate`: chat with a local model folder from the command line, reasoning shown apart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from r1kit.errors import UserError
from r1kit.models.load import load_model, load_tokenizer, resolve_model_dir
from r1kit.r1format import split_reasoning


@dataclass
class Completion:
    prompt: str
    text: str
    """The decoded completion, special tokens removed, `<think>` tags kept."""
    reasoning: str | None
    answer: str
    num_prompt_tokens: int
    num_completion_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.num_completion_tokens / self.seconds if self.seconds > 0 else 0.0


def generate(
    model_dir: str | Path,
    prompts: list[str],
    *,
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.6,
    top_p: float = 0.95,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> list[Completion]:
    """Answer each prompt as a single-turn chat; temperature 0 decodes greedily."""
    import torch

    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not 0.0 <= temperature <= 2.0:
        raise UserError(f"temperature must be within [0, 2], got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be within (0, 1], got {top_p}")
    resolve_model_dir(model_dir)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    if tokenizer.chat_template is None:
        raise UserError(f"{model_dir}: the tokenizer has no chat template")
    model = load_model(model_dir, trust_remote_code=trust_remote_code).eval()
    sampling = (
        dict(do_sample=True, temperature=temperature, top_p=top_p)
        if temperature > 0
        else dict(do_sample=False)
    )
    completions = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}
        ]
        input_ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        seconds = time.perf_counter() - start
        new_ids = output[0, input_ids.shape[1] :]
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        reasoning, answer = split_reasoning(text)
        completions.append(
            Completion(prompt, text, reasoning, answer, input_ids.shape[1], len(new_ids), seconds)
        )
    return completions
