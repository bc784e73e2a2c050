"""Model FLOPs utilisation (MFU): the model FLOPs a run does per second, over the matrix-multiply peak of its
devices measured in the same process when training starts (or `train.peak_tflops`).

Model FLOPs per token, as PaLM counts them (Chowdhery et al. 2022, appendix B): each forward pass costs 2N + 4LWT,
with N the parameters that multiply (the active ones for a mixture of experts; not the input embedding, a
lookup; the output head counted once, tied or not), L layers, W the attention width (heads x head size) and T
the mean sequence length. A token's training costs `passes` forward passes' worth:
- full training: 3 (forward, then a backward of twice its cost); LoRA and QLoRA: 2 (the frozen weights get no
  gradient of their own);
- GRPO adds 1 for the rollout that wrote it (prefill and decoding), 1 when a reference model scores it
  (`grpo.beta > 0`) and 1 when old log-probabilities are recomputed (`grpo.num_iterations > 1`).
Recomputation (gradient checkpointing) and padding are not model FLOPs: they lower MFU, as they should.

The peak is the best rate of square matrix products of the training precision (bf16, fp16 or fp32) on the
training device, measured for a fraction of a second at the start, every process at once (processes that
share a CPU share its cores): MFU = FLOPs per token x tokens/s (all processes) / (peak x processes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

PEAK_SIZES = {"cpu": (1024, 2048), "cuda": (4096, 8192)}
"""Square matrix sizes timed for the peak (the best of them counts): large enough to keep the matrix units
busy, small enough to measure in well under a second."""


def matmul_peak_flops(dtype: str, device: str = "cpu", seconds: float = 0.3) -> float:
    """The best FLOP/s of square matrix products of `dtype` (bf16, fp16, fp32) on `device`, measured now."""
    import torch

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    kind = torch.device(device).type
    sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)
    best = 0.0
    draw = torch.Generator(device=device).manual_seed(
        0
    )  # not the run's random state: its sampling stays as it was
    for size in PEAK_SIZES.get(kind, PEAK_SIZES["cpu"]):
        a = torch.randn(size, size, device=device, generator=draw).to(torch_dtype)
        b = torch.randn(size, size, device=device, generator=draw).to(torch_dtype)
        torch.mm(a, b)  # the first product picks and builds the kernel
        sync()
        deadline, runs = time.perf_counter() + seconds / 2, 0
        while runs < 2 or time.perf_counter() < deadline:
            start = time.perf_counter()
            torch.mm(a, b)
            sync()
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
            runs += 1
    return best


def matmul_params(model) -> int:
    """Parameters that multiply per token (see the module docstring)."""
    from r1kit.models.architecture import parameter_counts

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    counts = parameter_counts(base, base.config)
    embedding = base.get_input_embeddings().weight
    head = base.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    return counts["active"] - (0 if tied else embedding.numel())


def passes_per_token(method: str, grpo=None) -> int:
    """Forward passes' worth of FLOPs per token trained (see the module docstring); `grpo`: the recipe's
    `grpo` section for a GRPO run."""
    passes = 3 if method == "full" else 2
    if grpo is not None:
        passes += 1 + (grpo.beta > 0) + (grpo.num_iterations > 1)
    return passes


@dataclass
class Utilisation:
    """What MFU needs besides tokens/s; `peak` is measured by `measure` when training starts."""

    matmul_params: int
    layers: int
    attention_width: int
    passes: int
    sequence_length: float
    """Mean tokens per sequence (T)."""
    precision: str = "fp32"
    """The training precision, whose matrix products set the peak."""
    peak_tflops: float | None = None
    """The recipe's peak per device (`train.peak_tflops`); None measures it."""
    completion_key: str | None = None
    """A log entry to add to T at each log (GRPO's mean completion length; T is then the prompts' mean)."""
    peak: float | None = None
    """FLOP/s of all processes together."""

    @classmethod
    def of(cls, model, passes: int, sequence_length: float, **kwargs) -> Utilisation:
        config = model.config.get_text_config()
        heads = config.num_attention_heads
        head_dim = getattr(config, "v_head_dim", None) or getattr(config, "head_dim", None)
        return cls(
            matmul_params(model),
            config.num_hidden_layers,
            heads * (head_dim or config.hidden_size // heads),
            passes,
            sequence_length,
            **kwargs,
        )

    def measure(self, device: str, processes: int) -> None:
        """Set the peak: `peak_tflops` per device if given, else measured now on `device` (by every process at
        once: call it from all)."""
        if self.peak is None:
            dtype = self.precision if self.precision in ("bf16", "fp16") else "fp32"
            per_device = self.peak_tflops * 1e12 if self.peak_tflops else matmul_peak_flops(dtype, device)
            self.peak = per_device * processes

    def flops_per_token(self, logs: dict | None = None) -> float:
        length = self.sequence_length
        if self.completion_key and logs and isinstance(logs.get(self.completion_key), (int, float)):
            length += logs[self.completion_key]
        forward = 2 * self.matmul_params + 4 * self.layers * self.attention_width * length
        return self.passes * forward

    def mfu(self, tokens_per_second: float, logs: dict | None = None) -> float | None:
        if not self.peak:
            return None
        return self.flops_per_token(logs) * tokens_per_second / self.peak
