"""Math accuracy at every validation of a training run, so that checkpoints are kept and runs stopped by
whether the model answers correctly rather than by its loss.

It wraps the trainer's `evaluation_loop` (as `NonFiniteGuard` wraps `training_step`): the accuracy joins the
validation metrics before the trainer logs them, so `metrics.jsonl`, TensorBoard, the best-checkpoint choice
and early stopping all see `eval_accuracy` like any other metric. In GRPO it replaces the loop: TRL's would
sample a group for every validation problem to score a loss that ranks nothing.

With samples per problem it also measures what GRPO will see from this checkpoint: the sampled accuracy and
the share of problems whose samples are neither all right nor all wrong (`eval_mixed_groups`), the groups
that give RL a learning signal. Completions are decoded by r1kit's engine, each sample with its own seeded
generator, so a validation leaves the training run's random state, and with it exact resume, as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from r1kit.tasks import GoldProblems, Problem, check

if TYPE_CHECKING:
    from r1kit.config import Recipe
    from r1kit.engine.chats import Sample


@dataclass(frozen=True)
class Sampling:
    samples: int
    """Completions per problem (at least 2)."""
    temperature: float
    top_p: float
    seed: int
    """Seeds a private random generator: sampling never moves the training run's own random state."""


def answers(
    model,
    tokenizer,
    problems: list[Problem],
    max_new_tokens: int,
    batch_size: int = 16,
    sampling: Sampling | None = None,
) -> list[list[Sample]]:
    """Each problem's completions: one greedy completion, or `sampling.samples` sampled ones, decoded by r1kit's
    engine in batches of up to `batch_size` rows. Each sampled completion has its own seed, derived from
    `sampling.seed`, so the training run's random state is left as it was."""
    from r1kit.engine.chats import Settings, decode_chats, sample_seed

    n = sampling.samples if sampling else 1
    settings = (
        Settings(sampling.temperature, sampling.top_p, max_new_tokens, sampling.seed)
        if sampling
        else Settings(0.0, 1.0, max_new_tokens, 0)
    )
    chats = [p.messages for p in problems for _ in range(n)]
    seeds = [sample_seed(settings.seed, i, j) for i in range(len(problems)) for j in range(n)]
    samples = decode_chats(model, tokenizer, chats, settings, seeds, max_batch_size=batch_size)
    return [samples[i : i + n] for i in range(0, len(samples), n)]


class AccuracyAtValidation:
    def __init__(
        self,
        trainer,
        tokenizer,
        problems: list[Problem],
        max_new_tokens: int,
        batch_size: int,
        sampling: Sampling | None = None,
        *,
        replace_loop: bool = False,
    ):
        """`sampling`: also sample each problem (its seed is the first validation's; each later one adds its
        step). `replace_loop`: log only this evaluation's metrics, without running the trainer's own loop."""
        self._trainer, self._tokenizer = trainer, tokenizer
        self._problems, self._max_new_tokens, self._batch_size = problems, max_new_tokens, batch_size
        self._sampling = sampling
        self._evaluation_loop = None if replace_loop else trainer.evaluation_loop
        trainer.evaluation_loop = self

    @classmethod
    def from_recipe(
        cls, trainer, tokenizer, recipe: Recipe, problems: list[Problem], *, replace_loop: bool = False
    ) -> AccuracyAtValidation:
        """As `eval.during_training` asks: greedy answers, plus samples at the GRPO temperature and top-p with
        `eval.during_training_samples`."""
        e = recipe.eval
        sampling = (
            Sampling(e.during_training_samples, recipe.grpo.temperature, recipe.grpo.top_p, recipe.seed)
            if e.during_training_samples
            else None
        )
        return cls(
            trainer, tokenizer, problems, e.max_new_tokens, e.concurrency, sampling, replace_loop=replace_loop
        )

    def _verdicts(self, model, sampling: Sampling | None = None) -> list[list[bool]]:
        completions = answers(
            model, self._tokenizer, self._problems, self._max_new_tokens, self._batch_size, sampling
        )
        gold_problems = GoldProblems()
        return [
            [check(sample.answer, p, gold_problems) for sample in samples]
            for samples, p in zip(completions, self._problems)
        ]

    def __call__(self, *args, **kwargs):
        model = self._trainer.model
        if self._evaluation_loop is None:
            from transformers.trainer_utils import EvalLoopOutput

            output = EvalLoopOutput(
                predictions=None, label_ids=None, metrics={}, num_samples=len(self._problems)
            )
            # left in eval mode, as the trainer's own loop leaves it: GRPO logs the metrics of the mode it finds
            was_training = False
        else:
            output = self._evaluation_loop(*args, **kwargs)
            was_training = model.training
        prefix = kwargs.get("metric_key_prefix", "eval")
        model.eval()
        try:
            greedy = self._verdicts(model)
            output.metrics[f"{prefix}_accuracy"] = sum(v[0] for v in greedy) / len(greedy)
            if self._sampling:
                # the same draws at a given step, so a resumed run logs what the uninterrupted one did
                step = self._trainer.state.global_step
                sampled = self._verdicts(model, replace(self._sampling, seed=self._sampling.seed + step))
                output.metrics[f"{prefix}_sampled_accuracy"] = sum(map(sum, sampled)) / (
                    len(sampled) * self._sampling.samples
                )
                output.metrics[f"{prefix}_mixed_groups"] = sum(0 < sum(v) < len(v) for v in sampled) / len(
                    sampled
                )
        finally:
            model.train(was_training)
        return output
