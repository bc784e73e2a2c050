"""Math accuracy at every validation of a training run, so that checkpoints are kept and runs stopped by
whether the model answers correctly rather than by its loss.

It wraps the trainer's `evaluation_loop` (as `NonFiniteGuard` wraps `training_step`): the accuracy joins the
validation metrics before the trainer logs them, so `metrics.jsonl`, TensorBoard, the best-checkpoint choice
and early stopping all see `eval_accuracy` like any other metric.
"""

from __future__ import annotations

from r1kit.eval.answers import GoldProblems, is_correct
from r1kit.eval.suites import Problem


def greedy_answers(
    model, tokenizer, problems: list[Problem], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy completions (special tokens removed) of each problem's chat, left-padded in batches."""
    import torch

    from r1kit.models.tokenizer import render_chat

    prompts = [render_chat(tokenizer, p.messages)[0] for p in problems]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    texts = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        length = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (length - len(ids)) + ids for ids in batch], device=device)
        mask = torch.tensor([[0] * (length - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                use_cache=True,
            )
        texts += tokenizer.batch_decode(output[:, length:], skip_special_tokens=True)
    return texts


class AccuracyAtValidation:
    def __init__(self, trainer, tokenizer, problems: list[Problem], max_new_tokens: int, batch_size: int):
        self._trainer, self._tokenizer = trainer, tokenizer
        self._problems, self._max_new_tokens, self._batch_size = problems, max_new_tokens, batch_size
        self._evaluation_loop = trainer.evaluation_loop
        trainer.evaluation_loop = self

    def __call__(self, *args, **kwargs):
        output = self._evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        model = self._trainer.model
        was_training = model.training
        model.eval()
        try:
            texts = greedy_answers(
                model, self._tokenizer, self._problems, self._max_new_tokens, self._batch_size
            )
        finally:
            model.train(was_training)
        gold_problems = GoldProblems()
        correct = [is_correct(text, p.gold, gold_problems) for text, p in zip(texts, self._problems)]
        output.metrics[f"{prefix}_accuracy"] = sum(correct) / len(correct)
        return output
