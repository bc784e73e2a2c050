"""`r1kit generate`: chat with a local model folder from the command line, reasoning shown apart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r1kit.errors import UserError
from r1kit.hardware import cuda_available
from r1kit.models.load import load_model, load_tokenizer, resolve_model_dir


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
    """Answer each prompt as a single-turn chat (all prompts batched by r1kit's engine; prompt i samples with
    seed + i); temperature 0 decodes greedily."""
    from r1kit.engine.chats import PromptTooLong, Settings, decode_chats

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
    model = load_model(model_dir, trust_remote_code=trust_remote_code)
    if cuda_available():
        model = model.to("cuda")
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    chats = [[*system, {"role": "user", "content": prompt}] for prompt in prompts]
    settings = Settings(temperature, top_p, max_new_tokens, seed)
    try:
        samples = decode_chats(model, tokenizer, chats, settings, [seed + i for i in range(len(chats))])
    except PromptTooLong as error:
        raise UserError(str(error)) from None
    return [
        Completion(prompt, s.text, s.reasoning, s.answer, s.num_prompt_tokens, s.num_tokens, s.seconds)
        for prompt, s in zip(prompts, samples)
    ]
