"""`r1kit generate`: chat with a local model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r1kit.cli.common import app, out, print_answer


def _print_completion(completion) -> None:
    print_answer(completion.prompt, completion.reasoning, completion.answer)
    out.print(
        f"[dim]{completion.num_completion_tokens} tokens in {completion.seconds:.2f} s "
        f"({completion.tokens_per_second:.1f} tokens/s)[/dim]"
    )


@app.command("generate")
def generate_cmd(
    model: Annotated[Path, typer.Option(help="Local Hugging Face model folder.")],
    prompt: Annotated[list[str], typer.Option(help="User message (repeatable).")],
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 decodes greedily.")] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped in the model folder.")] = False,
) -> None:
    """Chat with a local model: the reasoning inside <think> is shown apart from the answer."""
    from r1kit.generate import generate

    for completion in generate(
        model,
        prompt,
        system_prompt=system,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        trust_remote_code=trust_remote_code,
    ):
        _print_completion(completion)
