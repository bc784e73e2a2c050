"""`r1kit serve`: load a model folder, start its engine, and serve the API with uvicorn until SIGTERM/SIGINT.

On a signal, uvicorn stops accepting connections and lets in-flight requests (streams included) finish, up to
`serve.shutdown_timeout`; then the engine's thread stops. The server binds 127.0.0.1 unless told otherwise, and
refuses any other address without an API key unless `serve.insecure_no_key` says the network is trusted.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
from pathlib import Path

from r1kit.config import ServeConfig
from r1kit.errors import UserError
from r1kit.hardware import cuda_available, require_cuda, require_module
from r1kit.models.load import load_model, load_tokenizer, resolve_model_dir


def build_engine(model_dir: Path, config: ServeConfig, *, trust_remote_code: bool = False):
    """(engine, tokenizer, context length) for `config.engine`; vLLM is refused where it cannot run."""
    if config.engine == "llama.cpp":
        return _llama_cpp_engine(model_dir, config)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    if config.engine == "vllm":
        require_cuda("serve.engine: vllm")
        require_module("vllm", "gpu", "serve.engine: vllm")
        from r1kit.engine.vllm_engine import VllmEngine

        engine = VllmEngine(
            model_dir,
            max_batch_size=config.max_batch_size,
            max_queue_size=config.max_queue_size,
            trust_remote_code=trust_remote_code,
        )
        return engine, tokenizer, engine.context_length
    from r1kit.engine.batching import TransformersEngine

    model = load_model(model_dir, trust_remote_code=trust_remote_code)
    if cuda_available():
        model = model.to("cuda")
    engine = TransformersEngine(
        model, tokenizer, max_batch_size=config.max_batch_size, max_queue_size=config.max_queue_size
    )
    return engine, tokenizer, engine.context_length


def _llama_cpp_engine(path: Path, config: ServeConfig):
    """llama.cpp on the GGUF file `path` names, with the Hugging Face tokenizer beside it (a GGUF export's folder
    holds both): the server renders and tokenizes prompts, llama.cpp runs the model."""
    require_module("llama_cpp", "llamacpp", "serve.engine: llama.cpp")
    from r1kit.engine.llamacpp_engine import LlamaCppEngine
    from r1kit.models.load import find_gguf

    gguf_path = find_gguf(path)
    if gguf_path is None:
        raise UserError(
            f"serve.engine llama.cpp serves GGUF files and {path} is not one nor holds one: make one with "
            f"r1kit export --model {path} --out DIR --format gguf"
        )
    if not (gguf_path.parent / "tokenizer.json").is_file():
        raise UserError(
            f"{gguf_path.parent} has no tokenizer.json beside {gguf_path.name}: r1kit renders prompts with the "
            "Hugging Face tokenizer an export writes next to the file (r1kit export --format gguf)"
        )
    tokenizer = load_tokenizer(gguf_path.parent)
    engine = LlamaCppEngine(
        gguf_path,
        tokenizer,
        max_queue_size=config.max_queue_size,
        context_length=config.context_length,
        threads=config.threads,
    )
    return engine, tokenizer, engine.context_length


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one), so the address printed is the one bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it resolves to whatever the network says
        return False


def check_exposure(config: ServeConfig) -> None:
    """A server reachable from other machines needs a key, or the operator's word that the network is trusted."""
    if not is_loopback(config.host) and not config.api_key and not config.insecure_no_key:
        raise UserError(
            f"serve.host {config.host} is reachable from other machines and no API key is set: set one "
            "(R1KIT_API_KEY, or a file with --api-key-file / R1KIT_API_KEY_FILE), or pass --insecure-no-key "
            "to serve anyone who can reach the port"
        )


def serve(
    model_dir: str | Path,
    config: ServeConfig,
    *,
    model_name: str | None = None,
    trust_remote_code: bool = False,
) -> None:
    import uvicorn
    from sse_starlette.sse import AppStatus

    from r1kit.serve.app import create_app

    check_exposure(config)
    if (Path(model_dir) / "adapter_config.json").is_file():
        raise UserError(
            f"{model_dir} is a LoRA adapter: merge it into its base first "
            f"(r1kit export --model {model_dir} --out DIR), then serve DIR"
        )
    model_dir = Path(model_dir) if config.engine == "llama.cpp" else resolve_model_dir(model_dir)
    engine, tokenizer, context_length = build_engine(model_dir, config, trust_remote_code=trust_remote_code)
    name = model_name or model_dir.resolve().name.removesuffix(".gguf")
    app = create_app(
        engine,
        tokenizer,
        model_name=name,
        max_tokens_limit=config.max_tokens_limit,
        context_length=context_length,
        api_key=config.api_key,
        strict=config.strict,
        public_metrics=config.public_metrics,
        allowed_origins=config.allowed_origins,
        max_request_bytes=config.max_request_bytes,
        max_concurrent_requests=config.max_concurrent_requests,
        request_timeout=config.request_timeout,
    )
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"r1kit serve: http://{shown}:{port} (model {name!r}, {engine.name} engine, "
        f"{'API key required' if config.api_key else 'no API key'})",
        flush=True,
    )
    if not is_loopback(config.host) and not config.api_key:
        print(
            "warning: serving anyone who can reach this port, without an API key (--insecure-no-key)",
            file=sys.stderr,
            flush=True,
        )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            timeout_graceful_shutdown=config.shutdown_timeout,
            ws="websockets-sansio",
            ws_max_size=config.max_request_bytes,
            # the guard answers 503 past max_concurrent_requests; this bounds connections beyond it (probes
            # keep their room between the two)
            limit_concurrency=config.max_concurrent_requests + 128,
        )
    )
    # sse-starlette ends every open stream as soon as uvicorn is told to exit; r1kit's streams end on their own
    # (max_tokens bounds them) and uvicorn's graceful timeout bounds the wait, so let them finish instead.
    AppStatus.disable_automatic_graceful_drain()
    # uvicorn handles SIGTERM/SIGINT (drain, then stop) and afterwards re-raises the signal to whatever handler
    # was there before it: with these no-op handlers a drained server exits 0 instead of dying by the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run(sockets=[sock])
    print("r1kit serve: stopped after finishing in-flight requests", flush=True)
