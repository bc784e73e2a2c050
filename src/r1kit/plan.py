"""`r1kit plan`: will a run fit, what will it take, and what will it cost, before it starts.

The model's size and shape come from `models/architecture.py`: parameters counted exactly on PyTorch's meta
device (for MoE, the total and the active per token), without loading any weights.

Per-device memory, in the terms the engines allocate it:
- weights: the loaded dtype (bf16 2 bytes per parameter, fp32 4); QLoRA's 4-bit NF4 linear weights take
  0.5 bytes plus their block scales (fp32 per 64 weights, or 8-bit per 64 plus fp32 per 256 with double
  quantisation), embeddings and the output head stay in bf16;
- gradients and AdamW states of the trainable parameters. Under DDP the Hugging Face Trainer keeps them in the
  weights' dtype (fp32 weights: 4 + 4 + 8 = 16 bytes; bf16 weights: 2 + 2 + 4 = 8, pure-bf16 training).
  DeepSpeed and FSDP train in mixed precision: bf16 weights and gradients plus fp32 master weights, momentum
  and variance, the textbook 2 + 2 + 12 = 16 bytes. LoRA adapters are fp32 (PEFT upcasts them);
- sharding: ZeRO-1 divides optimizer states by the data-parallel size, ZeRO-2 also gradients, ZeRO-3 and FSDP
  full-shard also weights (hybrid shard divides within a node); ZeRO-3 and FSDP gather one layer at a time;
  offload moves optimizer states (and with ZeRO-3 parameters) to host memory;
- activations of one micro-batch: per token and layer about 18h + 6kv + 8i bytes in bf16 (h hidden size, kv
  key/value width, i MLP width; attention runs in fused kernels that keep no s x s scores). With gradient
  checkpointing only each layer's input (2h bytes) is kept, plus one layer recomputed at a time. On CPUs (and
  with `eager` attention) the masked attention of packed rows also keeps each layer's fp32 softmax (heads x s x
  s); LoRA keeps each adapted layer's dropped-out input and its rank-r projection;
- fp32 weights under bf16 autocast (CPU runs) also hold bf16 copies of the weights while computing;
- the output head: TRL scores tokens in tiles, so only one tile of logits is alive; on CPUs, r1kit's head
  (train/lm_head.py) holds one chunk of logits and keeps up to 256 MiB of probabilities for the backward;
- GRPO: the reference model when the KL coefficient is not 0, and the rollouts' KV cache (transformers
  generation), or vLLM's reserved share of the GPU when it is colocated;
- a fixed overhead: CUDA context, NCCL buffers and allocator slack on GPUs (`plan.overhead_gb`); on a CPU,
  the memory of a Python process with the training stack imported, measured here, plus what the runtime adds
  (`CPU_RUNTIME_GB`, measured).

Time is tokens x FLOPs per token / (devices x peak x MFU): 6 x active parameters per trained token (4 for
adapters, whose frozen weights need no weight gradients), 2 more with gradient checkpointing, plus causal
attention; GRPO adds 2 x active parameters per generated token at `plan.rollout_mfu` (decoding is
memory-bound) and a reference forward when the KL coefficient is not 0. Cost is GPU-hours x the recipe's prices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from r1kit.config import GrpoConfig, Recipe, TrainConfig
from r1kit.errors import UserError
from r1kit.hardware import ACCELERATORS, cpu_has_native_bf16
from r1kit.models.architecture import Architecture, describe_model

GB = 1e9


# ------------------------------------------------------------------------------------------------ setup


@dataclass(frozen=True)
class Setup:
    """The knobs of a run that decide its memory, as the planner varies them."""

    method: str
    strategy: str
    weight_bytes: int
    precision: str
    micro_batch: int
    seq_length: int
    gradient_checkpointing: bool
    offload_optimizer: bool
    offload_parameters: bool
    gpus_per_node: int
    nodes: int
    double_quant: bool = True

    @property
    def devices(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def shards(self) -> int:
        if self.strategy in ("zero1", "zero2", "zero3", "fsdp"):
            return self.devices
        if self.strategy == "fsdp_hybrid":
            return self.gpus_per_node
        return 1


@dataclass
class Plan:
    model: Architecture
    setup: Setup
    device: str
    capacity_gb: float
    memory_gb: dict[str, float]
    """Per-device memory by part."""
    host_gb: float
    """Host memory per node for offloaded states."""
    notes: list[str] = field(default_factory=list)
    fix: str | None = None
    """The smallest change that makes a run that does not fit fit."""
    fixed_total_gb: float | None = None
    tokens: int | None = None
    hours: float | None = None
    costs: dict[str, float] = field(default_factory=dict)

    @property
    def total_gb(self) -> float:
        return sum(self.memory_gb.values())

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.capacity_gb

    def to_dict(self) -> dict:
        return {
            "model": self.model.__dict__,
            "setup": self.setup.__dict__,
            "device": self.device,
            "capacity_gb": self.capacity_gb,
            "memory_gb": self.memory_gb,
            "total_gb": self.total_gb,
            "fits": self.fits,
            "host_gb": self.host_gb,
            "fix": self.fix,
            "fixed_total_gb": self.fixed_total_gb,
            "tokens": self.tokens,
            "hours": self.hours,
            "costs": self.costs,
            "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------------ memory


def _dtype_bytes(recipe: Recipe, config_dtype: str | None) -> int:
    """Bytes per weight as loaded: `auto` takes the config's dtype (fp32 when it records none, and for presets,
    which are built new)."""
    dtype: str = recipe.model.dtype
    if dtype == "auto":
        dtype = "float32" if recipe.model.preset is not None else (config_dtype or "float32")
    return {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(dtype).removeprefix("torch."), 2)


def activation_bytes_per_token_layer(arch: Architecture) -> int:
    """Saved activations of one decoder layer per token in bf16: the norms' inputs (kept in fp32 by RMSNorm),
    the attention projections' inputs and outputs, the attention output, and the MLP's four intermediates."""
    return 2 * (7 * arch.hidden + 2 * arch.attn_width + 3 * arch.kv_width + 4 * arch.mlp_width)


def memory_breakdown(
    arch: Architecture,
    s: Setup,
    *,
    grpo: tuple[GrpoConfig, TrainConfig] | None = None,
    on_cpu: bool,
    overhead_gb: float,
    capacity_gb: float,
    eager_attention: bool = False,
    lora_dropout: float = 0.0,
) -> tuple[dict[str, float], float, list[str]]:
    """(per-device memory by part in GB, host memory per node in GB, notes)."""
    notes: list[str] = []
    n, mixed = s.shards, s.strategy in ("zero1", "zero2", "zero3", "fsdp", "fsdp_hybrid")
    shard_weights = s.strategy in ("zero3", "fsdp", "fsdp_hybrid")
    layer_params = (arch.total_params - arch.embedding_params) / max(arch.layers, 1)
    weights: float
    if s.method == "full":
        trainable, weights = arch.total_params, arch.total_params * s.weight_bytes
        if mixed:
            weights, grads, optim = arch.total_params * 2, trainable * 2, trainable * 12
        else:
            grads, optim = trainable * s.weight_bytes, trainable * 2 * s.weight_bytes
            if s.weight_bytes == 2:
                notes.append(
                    "DDP with bf16 weights trains in pure bf16 (AdamW states in bf16, 8 bytes/param); "
                    "set model.dtype: float32 or a ZeRO strategy for fp32 master weights (16 bytes/param)"
                )
    else:
        trainable = arch.lora_params
        frozen = arch.total_params
        if s.method == "qlora":
            linear = frozen - arch.embedding_params
            scale = (1 / 64 + 4 / (64 * 256)) if s.double_quant else 4 / 64
            weights = linear * (0.5 + scale) + (frozen - linear) * 2 + trainable * 4
        else:
            weights = frozen * s.weight_bytes + trainable * 4
        grads, optim = trainable * 4, trainable * 8
    parts = {
        "weights": weights / (n if shard_weights else 1),
        "gradients": grads / (n if s.strategy in ("zero2", "zero3", "fsdp", "fsdp_hybrid") else 1),
        "optimizer states": optim / (n if mixed else 1),
    }
    host = 0.0
    if s.offload_optimizer:
        host += parts["optimizer states"] * s.gpus_per_node
        parts["optimizer states"] = 0.0
    if s.offload_parameters:
        host += parts["weights"] * s.gpus_per_node
        parts["weights"] = 0.0
    if shard_weights:
        parts["gathered layer"] = 2 * layer_params * 2  # the layer in use and the prefetched next one, bf16
    tokens = s.micro_batch * s.seq_length
    element = 4 if s.precision == "fp32" else 2  # bytes per activation
    per_layer = activation_bytes_per_token_layer(arch) * element // 2
    # Packed rows attend within each example through a mask. The fused kernels of GPUs keep no scores; PyTorch's
    # CPU kernel for masked attention (and `eager` everywhere) keeps each layer's fp32 softmax, heads x s x s.
    scores = s.micro_batch * arch.heads * s.seq_length**2 * 4 if (on_cpu or eager_attention) else 0
    if s.gradient_checkpointing:
        acts = tokens * arch.layers * 2 * arch.hidden + tokens * per_layer + scores
    else:
        acts = (tokens * per_layer + scores) * arch.layers
    if s.method != "full":
        # each adapted layer keeps its (dropped-out) input and the rank-r projection for the adapter's backward
        # (fp32 on CPUs, where PEFT's fp32 adapters run outside autocast)
        adapter = arch.lora_input_width * (2 if lora_dropout > 0 else 0) + arch.lora_rank * arch.lora_modules
        acts += (
            tokens * adapter * (4 if on_cpu else element) * (1 if s.gradient_checkpointing else arch.layers)
        )
    parts["activations"] = acts
    if on_cpu:
        # r1kit's CPU head: one chunk's fp32 logits and two temporaries, and the probabilities it keeps
        from r1kit.train.lm_head import CHUNK_ELEMENTS, KEEP_ELEMENTS

        logits = tokens * arch.vocab
        parts["output head"] = (3 * min(logits, CHUNK_ELEMENTS) + min(logits, KEEP_ELEMENTS)) * 4
    else:
        parts["output head tile"] = min(tokens, 4096) * min(arch.vocab, 32768) * 4 * 2
    if s.weight_bytes == 4 and s.precision in ("bf16", "fp16") and s.method == "full" and not mixed:
        parts["autocast weight copies"] = arch.total_params * 2
    if grpo is not None:
        recipe_grpo, train = grpo
        if recipe_grpo.beta > 0:
            parts["reference model"] = arch.total_params * 2 / (n if shard_weights else 1)
        if recipe_grpo.rollout_engine == "vllm_colocate":
            share = float(recipe_grpo.extra.get("vllm_gpu_memory_utilization", 0.3))
            parts["rollout engine (vLLM)"] = share * capacity_gb * GB
        elif recipe_grpo.rollout_engine in ("r1kit", "transformers"):
            batch = train.per_device_batch_size * train.gradient_accumulation_steps
            parts["rollout KV cache"] = batch * s.seq_length * arch.layers * 2 * arch.kv_width * 2
        else:
            notes.append("rollouts run on a separate vLLM server: its GPUs are not counted here")
    parts["overhead"] = overhead_gb * GB
    return {k: v / GB for k, v in parts.items()}, host / GB, notes


# ---------------------------------------------------------------------------------------------- planning


CPU_RUNTIME_GB = 0.2
"""Memory a CPU training process adds to its imported libraries besides the model (oneDNN kernels and caches,
thread pools, the tokenizer, dataset buffers): measured on our 2-core machines with a 0.1M-parameter model."""


def _process_baseline_gb() -> float:
    """Resident memory of a process with the training stack imported (what a training process holds before its
    model; this process imports the same modules), plus the runtime's own."""
    import resource

    from trl import SFTTrainer  # noqa: F401

    import r1kit.train.sft  # noqa: F401

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB + CPU_RUNTIME_GB


def _host_memory_gb() -> float:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB


def _changes(s: Setup) -> Iterator[tuple[str, Setup]]:
    """Candidate changes, least disruptive first: (description, changed setup)."""
    if not s.gradient_checkpointing:
        yield "train.gradient_checkpointing: true", replace(s, gradient_checkpointing=True)
    batch = s.micro_batch
    while batch > 1:
        batch //= 2
        yield f"train.per_device_batch_size: {batch}", replace(s, micro_batch=batch)
    order = ["ddp", "zero1", "zero2", "zero3"]
    if s.devices > 1 and s.method == "full" and s.strategy in order:
        for stage in order[order.index(s.strategy) + 1 :]:
            if stage != "zero1":
                yield f"train.strategy: {stage}", replace(s, strategy=stage)
    if s.strategy in ("zero2", "zero3") and not s.offload_optimizer:
        yield "train.offload_optimizer: true", replace(s, offload_optimizer=True)
    if s.strategy == "zero3" and not s.offload_parameters:
        yield "train.offload_parameters: true", replace(s, offload_parameters=True)
    if s.method == "full":
        yield (
            "train.method: lora",
            replace(s, method="lora", strategy="ddp", offload_optimizer=False, offload_parameters=False),
        )
    if s.method != "qlora":
        yield (
            "train.method: qlora",
            replace(s, method="qlora", strategy="ddp", offload_optimizer=False, offload_parameters=False),
        )


def smallest_fix(
    s: Setup, fits: Callable[[Setup], float | None], *, devices_allowed: bool = True
) -> tuple[str | None, float | None]:
    """The first single change that fits, else the first run of changes applied in turn, else more devices
    with ZeRO-3; (description, total GB) or (None, None)."""
    for text, changed in _changes(s):
        total = fits(changed)
        if total is not None:
            return text, total
    steps, current = [], s
    for _ in range(12):
        options = list(_changes(current))
        if not options:
            break
        text, current = options[0]
        steps.append(text)
        total = fits(current)
        if total is not None:
            return " and ".join(steps), total
    if devices_allowed and s.method == "full":
        for devices in (2**k for k in range(1, 13)):
            if devices <= s.devices:
                continue
            per_node = min(devices, 8)
            changed = replace(
                s,
                strategy="zero3",
                gradient_checkpointing=True,
                gpus_per_node=per_node,
                nodes=devices // per_node,
            )
            total = fits(changed)
            if total is not None:
                return (
                    f"train.strategy: zero3 with gradient checkpointing on {devices} devices "
                    f"({devices // per_node} node(s) x {per_node})"
                ), total
    return None, None


def train_flops_per_token(arch: Architecture, s: Setup) -> float:
    per = (6 if s.method == "full" else 4) * arch.active_params
    if s.gradient_checkpointing:
        per += 2 * arch.active_params
    # causal attention: QK^T and AV over half the context on average, forward and backward
    per += 6 * arch.layers * s.seq_length * arch.attn_width
    return per


def make_plan(recipe: Recipe, stage: str = "sft") -> Plan:
    p, t = recipe.plan, recipe.train
    arch = describe_model(recipe)
    on_cpu = p.device == "cpu"
    if on_cpu:
        capacity, peak = p.memory_gb or _host_memory_gb(), p.peak_tflops * 1e12 if p.peak_tflops else None
        overhead = p.overhead_gb if p.overhead_gb is not None else _process_baseline_gb()
    else:
        if p.device not in ACCELERATORS and (p.memory_gb is None or p.peak_tflops is None):
            raise UserError(
                f"plan.device: {p.device!r} is not in r1kit's table ({', '.join(ACCELERATORS)}, cpu); "
                "give plan.memory_gb and plan.peak_tflops for it"
            )
        capacity = p.memory_gb if p.memory_gb is not None else ACCELERATORS[p.device][0]
        peak = p.peak_tflops * 1e12 if p.peak_tflops is not None else ACCELERATORS[p.device][1]
        overhead = p.overhead_gb if p.overhead_gb is not None else 1.5
    grpo = stage == "grpo"
    seq = recipe.grpo.max_prompt_length + recipe.grpo.max_completion_length if grpo else t.max_seq_length
    precision = (
        t.precision if t.precision != "auto" else ("bf16" if not on_cpu or cpu_has_native_bf16() else "fp32")
    )
    strategy = t.strategy if t.strategy != "auto" else "ddp"
    setup = Setup(
        t.method,
        strategy,
        _dtype_bytes(recipe, arch.dtype),
        precision,
        t.per_device_batch_size,
        seq,
        t.gradient_checkpointing,
        t.offload_optimizer,
        t.offload_parameters,
        p.gpus_per_node,
        p.nodes,
        t.lora.double_quant,
    )
    if strategy == "fsdp" and t.fsdp_sharding == "hybrid":
        setup = replace(setup, strategy="fsdp_hybrid")

    def breakdown(s: Setup) -> tuple[dict[str, float], float, list[str]]:
        return memory_breakdown(
            arch,
            s,
            grpo=(recipe.grpo, t) if grpo else None,
            on_cpu=on_cpu,
            overhead_gb=overhead,
            capacity_gb=capacity,
            eager_attention=recipe.model.attn_implementation == "eager",
            lora_dropout=t.lora.dropout,
        )

    def total_if_fits(s: Setup) -> float | None:
        total = sum(breakdown(s)[0].values())
        return total if total <= capacity else None

    parts, host, notes = breakdown(setup)
    plan = Plan(arch, setup, "cpu" if on_cpu else p.device, capacity, parts, host, notes)
    if host and not on_cpu:
        plan.notes.append(f"offloaded states need {host:.0f} GB of host memory per node")
    if not plan.fits:
        plan.fix, plan.fixed_total_gb = smallest_fix(setup, total_if_fits, devices_allowed=not on_cpu)
    plan.tokens = _planned_tokens(recipe, setup, grpo)
    if plan.tokens and peak:
        flops = plan.tokens * train_flops_per_token(arch, setup)
        seconds = flops / (setup.devices * peak * p.mfu)
        if grpo:
            completions = plan.tokens / seq
            generated = completions * recipe.grpo.max_completion_length
            seconds = seconds * recipe.grpo.num_iterations + generated * 2 * arch.active_params / (
                setup.devices * peak * p.rollout_mfu
            )
            if recipe.grpo.beta > 0:
                seconds += plan.tokens * 2 * arch.active_params / (setup.devices * peak * p.mfu)
        plan.hours = seconds / 3600
        plan.costs = {kind: plan.hours * setup.devices * price for kind, price in p.prices.items()}
    elif plan.tokens and not peak:
        plan.notes.append("time: give plan.peak_tflops for this device")
    return plan


def _planned_tokens(recipe: Recipe, s: Setup, grpo: bool) -> int | None:
    """Tokens the run trains on: `plan.dataset_tokens` x epochs, else max_steps x rows per step x row length
    (packed rows are full)."""
    t = recipe.train
    if recipe.plan.dataset_tokens:
        return int(recipe.plan.dataset_tokens * (1 if grpo else t.num_epochs))
    if t.max_steps:
        return (
            t.max_steps * t.per_device_batch_size * t.gradient_accumulation_steps * s.devices * s.seq_length
        )
    return None


# ----------------------------------------------------------------------------------------------- printing


def human_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}" if n < 10 * size else f"{n / size:.1f}{unit}"
    return str(int(n))


def describe_hours(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def ceil_gb(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{math.ceil(value * 10) / 10:.1f}"
