"""The CPU speed-ups of training keep its numbers: r1kit's CPU LM head gives the log-probabilities, entropy and
gradients of a plain log-softmax, and TRL's head with it those of TRL's own; the heap trim runs through the
trainer's callback hooks."""

import pytest
import torch

from r1kit.train import lm_head
from r1kit.train.callbacks import ReleaseFreedMemory


def reference(hidden, weight, bias, targets, temperature=1.0, softcap=None, logit_scale=1.0):
    """TRL's head, the plain way: the whole logits matrix, transformed as TRL does, then a log-softmax."""
    z = (hidden @ weight.T + (0 if bias is None else bias)) * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    log_p = torch.log_softmax(z / temperature, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    is_top1 = log_p.argmax(-1) == targets
    return log_p.gather(1, targets[:, None]).squeeze(1), entropy, is_top1, (z / temperature).mean(-1)


@pytest.mark.parametrize(
    "kept, entropy_grad, softcap, temperature, logit_scale",
    [
        (True, False, None, 1.0, 1.0),  # SFT on a small vocabulary: probabilities kept for the backward
        (False, False, None, 0.7, 1.0),  # past the budget: recomputed in the backward
        (True, True, None, 1.0, 0.5),  # an entropy term in the loss: recomputed
        (True, False, 30.0, 1.3, 1.0),  # soft-capped logits: recomputed
    ],
)
def test_the_cpu_head_gives_the_plain_log_softmax(
    monkeypatch, kept, entropy_grad, softcap, temperature, logit_scale
):
    if not kept:
        monkeypatch.setattr(lm_head, "KEEP_ELEMENTS", 0)
    torch.manual_seed(0)
    tokens, hidden_size, vocab = 600, 32, 9000  # chunks of 466 tokens: a ragged last chunk
    hidden = torch.randn(tokens, hidden_size, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, requires_grad=True)
    bias = torch.randn(vocab, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,))
    scale = torch.rand(tokens)  # a per-token weight on each loss term, as a masked mean gives

    def run(head):
        log_probs, entropy, is_top1, mean_logits = head()
        loss = (scale * log_probs).sum() + (entropy.sum() if entropy_grad else 0)
        loss.backward()
        grads = [t.grad.clone() for t in (hidden, weight, bias)]
        hidden.grad = weight.grad = bias.grad = None
        return [log_probs.detach(), entropy.detach(), is_top1, mean_logits.detach(), *grads]

    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    ours = run(
        lambda: [
            lm_head.CpuLogProbs.apply(
                hidden, weight, bias, targets, temperature, 4096, softcap, logit_scale, outputs
            )[i]
            for i in (0, 1, 4, 3)
        ]
    )
    plain = run(lambda: reference(hidden, weight, bias, targets, temperature, softcap, logit_scale))
    for got, expected in zip(ours, plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_cpu_head_under_bf16_autocast_multiplies_in_bf16_and_sums_gradients_in_fp32():
    """As TRL does on CPUs: the logits from bf16 matrix products, the gradients summed in fp32; so the values
    are those of a log-softmax over bf16 logits, and the gradients those of fp32 up to bf16's rounding."""
    torch.manual_seed(0)
    hidden = torch.randn(300, 64, requires_grad=True)
    weight = (torch.randn(5000, 64) * 0.1).requires_grad_()
    targets = torch.randint(0, 5000, (300,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs = lm_head.CpuLogProbs.apply(hidden, weight, None, targets, 1.0, 4096, None, 1.0, ())[0]
    log_probs.sum().backward()
    bf16_logits = (hidden.bfloat16() @ weight.bfloat16().T).float()
    expected = torch.log_softmax(bf16_logits, -1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(log_probs.detach(), expected.detach(), rtol=1e-5, atol=1e-4)
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference(hidden, weight, None, targets)[0].sum().backward()
    torch.testing.assert_close(grads[0], hidden.grad, rtol=0.02, atol=0.02)
    torch.testing.assert_close(grads[1], weight.grad, rtol=0.02, atol=0.02)


def test_trl_scores_only_the_labelled_positions_with_the_cpu_head(monkeypatch):
    """Through TRL's own fused head: the loss and gradients of a model with r1kit's CPU head, scoring only the
    labelled positions, are those of TRL's head."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl.kernels import ChunkedLogProbFunction
    from trl.kernels.chunked_logprob import _use_triton
    from trl.trainer import utils

    config = Qwen2Config(
        vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    torch.manual_seed(0)
    ids = torch.randint(0, 500, (2, 40))
    labels = ids.clone()
    labels[:, :15] = -100  # the prompts: no loss there

    def loss_and_grads():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
        utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.loss.detach(), [p.grad for p in model.parameters()]

    # TRL's own head, whatever an earlier training run in this process set; restored after the test
    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", ChunkedLogProbFunction)
    monkeypatch.setattr(utils, "_use_triton", _use_triton)
    trl_loss, trl_grads = loss_and_grads()
    calls = []
    assert lm_head.use_for_cpu()
    counted = utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(
        utils._ChunkedLogProbFunction, "apply", lambda *a: calls.append(a[0].shape[0]) or counted(*a)
    )
    loss, grads = loss_and_grads()
    assert calls == [2 * (40 - 15)]  # the labelled positions only (the label of token t is at t + 1)
    torch.testing.assert_close(loss, trl_loss)
    for got, expected in zip(grads, trl_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_bf16_cpu_runs_trim_the_heap_after_each_step_and_fp32_runs_do_not(recipe_for, tmp_path):
    from r1kit.train.run import build_callbacks

    if not ReleaseFreedMemory.available():
        pytest.skip("glibc only")

    def trims(precision):
        callbacks = build_callbacks(
            recipe_for(), tmp_path, greater_is_better=False, has_eval=False, model=None, precision=precision
        )[0]
        return [c for c in callbacks if isinstance(c, ReleaseFreedMemory)]

    assert trims("fp32") == []
    bf16 = trims("bf16")
    assert len(bf16) == 1
    bf16[0].on_substep_end(None, None, None)  # the real libc call
    bf16[0].on_step_end(None, None, None)
    assert not ReleaseFreedMemory.wanted("bf16", cuda=True)
