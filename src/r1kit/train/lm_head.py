"""TRL's fused LM head (per-token log-probabilities without the full logits), done for CPUs.

TRL scores tokens through the LM head in tiles of the vocabulary and folds each tile into running
log-sum-exp statistics, a Triton kernel on GPUs. Without Triton it folds each tile with a dozen plain torch
ops, each a pass over the tile in memory, and it scores every position of the batch, the prompt and padding
positions that carry no loss included (on GPUs it scores only the positions with a label). On a CPU that made
the head about a third of an SFT step.

`CpuLogProbs` gives the same values and gradients on CPUs: a chunk of tokens against the whole vocabulary in
one matrix product, torch's own log-sum-exp, and a backward that turns the recomputed logits into their
gradient in place, from the probabilities the forward kept (up to KEEP_ELEMENTS; past it, recomputed).
`use_for_cpu()` makes TRL's head use it, and score only the positions with a label. On our 2-core machines
(1,024 tokens, hidden 512, vocabulary 16,384, fp32, 77% of the positions labelled) the head's forward and
backward took 0.53-0.60 s against 0.88-1.30 s for TRL's torch path in 256 x 4,096 tiles (medians of 5, two
runs), and the SFT benchmark's peak memory rose by ~80 MiB (the kept probabilities).
"""

from __future__ import annotations

import warnings

import torch

CHUNK_ELEMENTS = 1 << 22
"""Logits held at once (16 MiB in fp32): 256 tokens of a 16k vocabulary, 32 of a 129k one."""
KEEP_ELEMENTS = 1 << 26
"""Probabilities the forward keeps for the backward (256 MiB in fp32; 16k tokens of a 16k vocabulary, 512 of
a 129k one): chunks past it are recomputed in the backward, one matrix product more each."""


def chunk_tokens(vocab: int) -> int:
    """Tokens per chunk: as many as fit CHUNK_ELEMENTS logits, at least 16 (matrix products of fewer rows
    run far below the CPU's speed)."""
    return max(16, CHUNK_ELEMENTS // vocab)


class CpuLogProbs(torch.autograd.Function):
    """TRL's `ChunkedLogProbFunction` for CPUs: the same arguments and outputs (log-probabilities of the
    targets; entropy, log of the summed squared probabilities, mean logit and whether the target is the argmax
    when `outputs` names them, else None), the logits transformed as TRL does (`logit_scale`, soft-capping,
    temperature). `chunk_size` (TRL's vocabulary tile) is not used: every chunk spans the whole vocabulary."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # [N, H]
        weight: torch.Tensor,  # [V, H]
        bias: torch.Tensor | None,  # [V]
        targets: torch.Tensor,  # [N]
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1"),
    ):
        ctx.set_materialize_grads(False)
        compute_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        transform = (logit_scale, final_logit_softcapping, 1 / temperature)
        n, step = hidden.shape[0], chunk_tokens(weight.shape[0])
        log_z = hidden.new_empty(n, dtype=torch.float32)
        log_probs = hidden.new_empty(n, dtype=torch.float32)
        extra = {name: hidden.new_empty(n, dtype=torch.float32) for name in outputs if name != "log_probs"}
        if "is_top1" in extra:
            extra["is_top1"] = hidden.new_empty(n, dtype=torch.bool)
        w = weight.to(compute_dtype)
        keeping = any(ctx.needs_input_grad[:3]) and final_logit_softcapping is None  # else nothing is kept
        kept: list[torch.Tensor | None] = []  # each chunk's probabilities, while KEEP_ELEMENTS allows
        with torch.autocast("cpu", enabled=False):
            for start in range(0, n, step):
                rows = slice(start, start + step)
                z = logits(hidden[rows].to(compute_dtype), w, bias, *transform)[0]
                log_z[rows] = torch.logsumexp(z, dim=-1)
                log_probs[rows] = z.gather(1, targets[rows, None]).squeeze(1) - log_z[rows]
                if "mean_logits" in extra:
                    extra["mean_logits"][rows] = z.mean(dim=-1)
                # argmax gives the first maximum: a tie with an earlier token is not top-1
                if "is_top1" in extra:
                    extra["is_top1"][rows] = z.argmax(dim=-1) == targets[rows]
                keep = keeping and (start + step) * weight.shape[0] <= KEEP_ELEMENTS
                p = (
                    torch.exp(z - log_z[rows, None])
                    if keep or {"entropy", "log_sum_sq_probs"} & extra.keys()
                    else None
                )
                if "entropy" in extra:  # H = log Z - sum_j p_j z_j
                    extra["entropy"][rows] = log_z[rows] - torch.linalg.vecdot(p, z)
                if "log_sum_sq_probs" in extra:
                    extra["log_sum_sq_probs"][rows] = torch.log(torch.linalg.vecdot(p, p))
                kept.append(p if keep else None)
        entropy = extra.get("entropy")
        ctx.save_for_backward(hidden, weight, bias, targets, log_z, log_z if entropy is None else entropy)
        ctx.compute_dtype, ctx.transform, ctx.kept = compute_dtype, transform, kept
        marked = [extra[name] for name in ("log_sum_sq_probs", "mean_logits", "is_top1") if name in extra]
        ctx.mark_non_differentiable(*marked)
        return (
            log_probs,
            entropy,
            extra.get("log_sum_sq_probs"),
            extra.get("mean_logits"),
            extra.get("is_top1"),
        )

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):  # type: ignore[override]
        hidden, weight, bias, targets, log_z, entropy = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        logit_scale, _, inv_t = ctx.transform
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32) if need_bias else None
        n, step = hidden.shape[0], chunk_tokens(weight.shape[0])
        w, w32 = weight.to(ctx.compute_dtype), weight.float()  # gradients are summed in fp32, as TRL does
        with torch.autocast("cpu", enabled=False):
            for index, start in enumerate(range(0, n, step)):
                rows = slice(start, start + step)
                h = hidden[rows].to(ctx.compute_dtype)
                p, ctx.kept[index] = ctx.kept[index], None  # used up in place: a second backward recomputes
                capped = None
                if p is None or grad_entropy is not None:
                    z, capped = logits(h, w, bias, *ctx.transform)
                    log_p = z.sub_(log_z[rows, None])
                    p = log_p.exp()
                g = None if grad_log_probs is None else grad_log_probs[rows, None].float()
                # dz_j = g (1[j = t] - p_j) - g_H p_j (log p_j + H), from d log p_t and d H
                if grad_entropy is None:
                    grad = p.mul_(-g)
                else:
                    grad = log_p.add_(entropy[rows, None]).mul_(-grad_entropy[rows, None].float())
                    if g is not None:
                        grad.sub_(g)
                    grad.mul_(p)
                if g is not None:
                    grad.scatter_add_(1, targets[rows, None], g)
                if capped is not None:
                    grad.mul_(1 - capped * capped)
                grad.mul_(logit_scale * inv_t)
                if grad_hidden is not None:
                    torch.mm(grad, w32, out=grad_hidden[rows])
                if grad_weight is not None:
                    grad_weight.addmm_(grad.t(), h.float())
                if grad_bias is not None:
                    grad_bias += grad.sum(dim=0)
        return (
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            *(None,) * 6,
        )


def logits(hidden, weight, bias, logit_scale: float, softcap: float | None, inv_t: float):
    """fp32 logits of a chunk, transformed as TRL does (scale, soft-cap, temperature), and the soft-cap's tanh
    (None without one), which the backward needs."""
    z = (hidden @ weight.t()).float()
    if bias is not None:
        z += bias.float()
    if softcap is None:
        if logit_scale * inv_t != 1:
            z.mul_(logit_scale * inv_t)
        return z, None
    capped = z.mul_(logit_scale / softcap).tanh_()
    return capped * (softcap * inv_t), capped


def use_for_cpu() -> bool:
    """Make TRL's fused LM head use `CpuLogProbs` and score only the positions with a label, in a process that
    trains on CPU; True when it was set. TRL keeps both as module globals read at each call; if a TRL release
    renames them, training still runs, with TRL's own head."""
    from trl.trainer import utils

    if not (hasattr(utils, "_ChunkedLogProbFunction") and hasattr(utils, "_use_triton")):
        warnings.warn(
            "this TRL release's LM head is not the one r1kit knows; TRL's own is kept", stacklevel=2
        )
        return False
    utils._ChunkedLogProbFunction = CpuLogProbs
    utils._use_triton = lambda device: True  # `compact`: TRL scores every position off Triton devices
    return True
