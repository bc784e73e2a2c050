"""`r1kit serve`: the OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r1kit.cli.common import SetOption, app, load_recipe_for


@app.command("serve")
def serve_cmd(
    model: Annotated[
        Path, typer.Option(help="Local Hugging Face model folder, or a GGUF export (folder or .gguf file).")
    ],
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose `serve` section to use.")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000; 0 picks a free one).")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="R1KIT_API_KEY",
            help="Require `Authorization: Bearer KEY` (env R1KIT_API_KEY; prefer it or a file: a key on the "
            "command line shows in the process list).",
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(envvar="R1KIT_API_KEY_FILE", help="Read the API key from this file (a mounted secret)."),
    ] = None,
    insecure_no_key: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host without an API key (a trusted network only).")
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="transformers (default), vllm (CUDA GPUs) or llama.cpp (GGUF; the default for one)."
        ),
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Most requests decoded together.")] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Name clients ask for (default: the folder's).")
    ] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped in the model folder.")] = False,
    overrides: SetOption = None,
) -> None:
    """Serve a model: OpenAI-compatible API with reasoning_content, /generate, WebSocket, /metrics, chat page."""
    from r1kit.models.load import gguf_export_file
    from r1kit.serve.server import serve

    if engine is None and gguf_export_file(model) is not None:
        engine = "llama.cpp"
    flags = {"host": host, "port": port, "engine": engine, "max_batch_size": max_batch_size}
    config = load_recipe_for(
        recipe, overrides, [f"serve.{k}={v}" for k, v in flags.items() if v is not None]
    ).serve
    if api_key_file:
        api_key = read_key_file(api_key_file)
    if api_key:
        config = config.model_copy(update={"api_key": api_key})
    if insecure_no_key:
        config = config.model_copy(update={"insecure_no_key": True})
    serve(model, config, model_name=model_name, trust_remote_code=trust_remote_code)


def read_key_file(path: Path) -> str:
    from r1kit.errors import UserError

    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the API key file {path}: {error}") from None
    if not key:
        raise UserError(f"the API key file {path} is empty")
    return key
