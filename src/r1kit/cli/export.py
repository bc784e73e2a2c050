"""`r1kit export`: merge, quantise and write a model folder to serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from r1kit.cli.common import app, out


@app.command("export")
def export_cmd(
    model: Annotated[Path, typer.Option(help="Model folder, checkpoint folder or LoRA adapter folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="New folder for the exported model.")],
    merge_lora: Annotated[bool, typer.Option(help="Merge a LoRA adapter into its base weights.")] = True,
    quantize: Annotated[
        str,
        typer.Option(
            help="none, auto (the fastest measured here, GGUF included where llama.cpp is installed), "
            "int8-dynamic (CPU), int8 or int4 (torchao), nf4 (GPU)."
        ),
    ] = "none",
    format: Annotated[
        str,
        typer.Option("--format", help="hf (a Hugging Face folder) or gguf (llama.cpp, Ollama, LM Studio)."),
    ] = "hf",
    quant: Annotated[
        str | None, typer.Option(help="With --format gguf: f16, q8_0 (default) or q4_k_m.")
    ] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped in the model folder.")] = False,
) -> None:
    """Merge, quantise and write a model folder to serve, with its size and speed before and after."""
    from r1kit.errors import UserError
    from r1kit.export import export

    if format == "gguf":
        if quantize != "none":
            raise UserError("--quantize is for --format hf; GGUF takes --quant f16 | q8_0 | q4_k_m")
        quantize = quant or "q8_0"
    elif quant is not None:
        raise UserError("--quant is for --format gguf; a Hugging Face folder takes --quantize")
    result = export(
        model,
        out_dir,
        merge_lora=merge_lora,
        quantize=quantize,
        format=format,
        trust_remote_code=trust_remote_code,
    )
    b, a = result.before, result.after
    out.print(f"size   {b.size_mib:8.1f} MiB -> {a.size_mib:8.1f} MiB ({a.size_mib / b.size_mib:.2f}x)")
    out.print(
        f"speed  {b.tokens_per_second:8.1f} tok/s -> {a.tokens_per_second:8.1f} tok/s "
        f"({a.tokens_per_second / b.tokens_per_second:.2f}x, greedy, one prompt)"
    )
    for method, measured in result.measured.items():
        out.print(f"  tried {method:13} {measured.size_mib:8.1f} MiB {measured.tokens_per_second:8.1f} tok/s")
    if result.slower:
        out.print(
            f"[yellow]{result.quantize} generates more slowly than the original on this machine "
            f"({a.tokens_per_second:.0f} against {b.tokens_per_second:.0f} tok/s): it saves memory, not time. "
            "--quantize auto keeps whichever measures fastest here.[/yellow]"
        )
    if result.faster:
        out.print(
            f"faster here: llama.cpp's q8_0 GGUF file, {result.faster['tokens_per_second']:.0f} tok/s "
            f"({result.faster['size_mib']:.1f} MiB): {escape(result.faster['command'])}",
            soft_wrap=True,
        )
    for pattern, why in result.not_quantized.items():
        out.print(f"[yellow]not quantised[/yellow] {escape(pattern)}: {why}", soft_wrap=True)
    if result.gguf:
        out.print(f"serve with r1kit: {escape(result.gguf['r1kit'])}", soft_wrap=True)
        out.print(f"or with llama.cpp: {escape(result.gguf['llama.cpp'])}", soft_wrap=True)
    else:
        for problem in result.vllm["problems"]:
            out.print(f"[yellow]for vLLM:[/yellow] {escape(problem)}", soft_wrap=True)
        out.print(f"serve on GPUs with vLLM: {escape(result.vllm['command'])}", soft_wrap=True)
    out.print(f"wrote {escape(str(result.out_dir))} ({result.quantize}; report: export.json)")
