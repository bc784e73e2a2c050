"""A Prometheus endpoint while training: the latest step's metrics at http://<host>:<port>/metrics.

Gauges (all prefixed `r1kit_train_`): step, loss, learning_rate, grad_norm, tokens_per_second,
samples_per_second, eval_loss, eval_perplexity, mfu (model FLOPs utilisation against the peak measured when
training starts: train/utilisation.py), and on CUDA gpu_memory_bytes and gpu_utilization. The server
binds localhost unless told otherwise, runs in a daemon thread of the main process, and stops with the run.
"""

from __future__ import annotations

import time
from typing import ClassVar

from transformers import TrainerCallback

from r1kit.dist import is_main_process, print0


class PrometheusExporter(TrainerCallback):
    GAUGES: ClassVar[dict[str, str]] = {
        "step": "optimizer steps done",
        "loss": "training loss of the last logged step",
        "learning_rate": "learning rate",
        "grad_norm": "global gradient norm before clipping",
        "tokens_per_second": "non-padding tokens per second since the previous log",
        "samples_per_second": "training rows per second since the previous log",
        "eval_loss": "validation loss",
        "eval_perplexity": "validation perplexity",
        "mfu": "estimated model FLOPs utilisation (0-1)",
        "gpu_memory_bytes": "GPU memory allocated by this process",
        "gpu_utilization": "GPU utilisation percent",
    }

    def __init__(self, host: str, port: int, rows_per_step: int):
        from prometheus_client import CollectorRegistry, Gauge

        self.host, self.requested_port = host, port
        self.rows_per_step = rows_per_step
        self.registry = CollectorRegistry()
        self.gauges = {
            name: Gauge(f"r1kit_train_{name}", doc, registry=self.registry)
            for name, doc in self.GAUGES.items()
        }
        self.server = None
        self.port: int | None = None
        self._last = (time.perf_counter(), 0)

    def start(self) -> int:
        """Start serving (main process only); returns the bound port."""
        from prometheus_client import start_http_server

        if is_main_process() and self.server is None:
            self.server, _ = start_http_server(self.requested_port, addr=self.host, registry=self.registry)
            self.port = self.server.server_port
            print0(f"Prometheus metrics at http://{self.host}:{self.port}/metrics")
        return self.port

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        self.gauges["step"].set(state.global_step)
        for name in (
            "loss",
            "learning_rate",
            "grad_norm",
            "tokens_per_second",
            "mfu",
            "eval_loss",
            "eval_perplexity",
        ):
            if isinstance(logs.get(name), (int, float)):
                self.gauges[name].set(logs[name])
        if "loss" in logs and "train_loss" not in logs:
            now, step = time.perf_counter(), state.global_step
            last_time, last_step = self._last
            if now > last_time and step > last_step:
                self.gauges["samples_per_second"].set(
                    (step - last_step) * self.rows_per_step / (now - last_time)
                )
            self._last = (now, step)
        self._gpu()

    def _gpu(self) -> None:
        import torch

        if torch.cuda.is_available():
            self.gauges["gpu_memory_bytes"].set(torch.cuda.memory_allocated())
            try:
                self.gauges["gpu_utilization"].set(torch.cuda.utilization())
            except (RuntimeError, ModuleNotFoundError):  # needs pynvml; memory is still reported
                pass

    def on_train_end(self, args, state, control, **kwargs):
        self.stop()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
