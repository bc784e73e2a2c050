"""The CPU speed-ups of training keep its numbers: TRL's LM head in r1kit's tile sizes gives the log-probabilities
and gradients of a plain log-softmax, and the heap trim runs through the trainer's callback hooks."""

import pytest
import torch

from r1kit.train import lm_head
from r1kit.train.callbacks import ReleaseFreedMemory


def head_logprobs(hidden, weight, targets, vocab_tile):
    from trl.kernels import ChunkedLogProbFunction

    log_probs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, vocab_tile)[0]
    log_probs.sum().backward()
    return log_probs.detach()


@pytest.fixture
def restore_tiles():
    from trl.kernels import chunked_logprob
    from trl.trainer import utils

    saved = chunked_logprob.TOKEN_CHUNK_SIZE, utils._CHUNKED_LOGPROB_CHUNK_SIZE
    yield
    chunked_logprob.TOKEN_CHUNK_SIZE, utils._CHUNKED_LOGPROB_CHUNK_SIZE = saved


def test_cpu_tiles_give_the_plain_log_softmax(restore_tiles):
    from trl.kernels import chunked_logprob
    from trl.trainer import utils

    assert lm_head.size_tiles_for_cpu()
    assert (chunked_logprob.TOKEN_CHUNK_SIZE, utils._CHUNKED_LOGPROB_CHUNK_SIZE) == (
        lm_head.CPU_TOKEN_TILE,
        lm_head.CPU_VOCAB_TILE,
    )
    torch.manual_seed(0)
    tokens, hidden_size, vocab = 600, 32, 9000  # more than one tile each way, ragged last tiles
    hidden = torch.randn(tokens, hidden_size, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, dtype=torch.float32, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,))

    tiled = head_logprobs(hidden, weight, targets, utils._CHUNKED_LOGPROB_CHUNK_SIZE)
    tiled_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference = torch.log_softmax(hidden @ weight.T, dim=-1).gather(1, targets[:, None]).squeeze(1)
    reference.sum().backward()

    torch.testing.assert_close(tiled, reference.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(tiled_grads[0], hidden.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(tiled_grads[1], weight.grad, rtol=1e-5, atol=1e-4)


def test_bf16_cpu_runs_trim_the_heap_after_each_step_and_fp32_runs_do_not(recipe_for, tmp_path):
    from r1kit.train.sft import build_callbacks

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
