"""GRPO's rollouts through r1kit's engine (train/rollouts.py) give TRL what its own generation gives: the same
prompt ids, and from them the same padded tensors and masks, the same greedy tokens (with the end-of-sequence
token that ended a completion), log-probabilities equal to the ones TRL computes for the loss; sampled rollouts
repeat with the run's seed; settings the engine does not sample with are refused."""

import pytest
import torch

from r1kit.errors import UserError
from r1kit.train.rollouts import EngineRollouts, check_supported

QUESTIONS = [
    "What is 2+2?",
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast.",
    "hi",
    "Tell me about the weather today, in a long sentence please.",
    "A robe takes 2 bolts of blue fiber and half that much white fiber.",
    "Count to ten.",
]
LENGTH = 24


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tokenizer_dir):
    """TRL's GRPOTrainer over a tiny Qwen2 whose head ends some completions early (the end-of-sequence row is
    scaled up), so that rows of one batch end at different steps."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from r1kit.models.create import init_model
    from r1kit.models.load import load_model, load_tokenizer

    model_dir = tmp_path_factory.mktemp("tiny-qwen2")
    init_model("tiny-qwen2", tokenizer_dir, model_dir, seed=1)
    model, tokenizer = load_model(model_dir, dtype="float32"), load_tokenizer(model_dir)
    model.config.tie_word_embeddings = False
    torch.manual_seed(1)
    head = torch.randn_like(model.lm_head.weight) * 0.5
    head[tokenizer.eos_token_id] *= 1.6
    model.lm_head.weight = torch.nn.Parameter(head)
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo")),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=len(QUESTIONS),
        num_generations=2,
        max_completion_length=LENGTH,
        temperature=1.0,
        report_to=[],
    )
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    return GRPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
        reward_funcs=[lambda completions, **kwargs: [0.0] * len(completions)],
    )


def chats():
    return [[{"role": "user", "content": q}] for q in QUESTIONS]


def scored(trainer, rollout_func):
    """TRL's tensors for one batch of rollouts (padded ids and masks), with `rollout_func` or TRL's generation."""
    trainer.rollout_func = rollout_func
    try:
        return trainer._generate_and_score_completions([{"prompt": chat} for chat in chats()])
    finally:
        trainer.rollout_func = None


def test_greedy_rollouts_equal_trls_generation_in_tokens_shapes_and_masks(trainer):
    trainer.model.train()  # as in training
    trainer.generation_config.do_sample = False  # TRL's generation decodes greedily for the comparison
    try:
        theirs = scored(trainer, None)
    finally:
        trainer.generation_config.do_sample = True
    ours = scored(trainer, EngineRollouts(0, temperature=0.0))
    assert trainer.model.training, "the engine decodes in eval mode: training mode comes back"
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), key
    lengths = theirs["completion_mask"].sum(1).tolist()
    eos = trainer.processing_class.eos_token_id
    ended = [row[n - 1] == eos for row, n in zip(theirs["completion_ids"].tolist(), lengths)]
    assert any(ended) and not all(ended), "some rows end early with the end-of-sequence token, some run on"
    assert min(lengths) < LENGTH == max(lengths)


def test_log_probabilities_are_the_ones_trl_computes_for_the_loss(trainer):
    rollouts, reported = EngineRollouts(0, logprobs=True), []

    def keep(prompts, trainer):
        output = rollouts(prompts, trainer)
        reported.extend(output["logprobs"])
        return output

    batch = scored(trainer, keep)
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(  # at the trainer's temperature, as for the loss
            trainer.model,
            torch.cat([batch["prompt_ids"], completion_ids], dim=1),
            torch.cat([batch["prompt_mask"], completion_mask], dim=1),
            completion_ids.size(1),
        )[0]
    assert len(reported) == len(QUESTIONS)
    for row, values in enumerate(reported):
        assert len(values) == int(completion_mask[row].sum())
        assert torch.allclose(torch.tensor(values), logps[row, : len(values)], atol=1e-4)


def test_sampled_rollouts_repeat_with_the_seed_and_differ_between_steps(trainer):
    first = EngineRollouts(7)(chats(), trainer)["completion_ids"]
    again = EngineRollouts(7)(chats(), trainer)["completion_ids"]
    other = EngineRollouts(8)(chats(), trainer)["completion_ids"]
    assert first == again
    assert first != other
    rollouts = EngineRollouts(7)
    trainer.state.global_step = 1
    try:
        later = rollouts(chats(), trainer)["completion_ids"]
    finally:
        trainer.state.global_step = 0
    assert later != first


def test_settings_the_engine_does_not_sample_with_are_refused(trainer):
    check_supported(trainer.args)
    for name, value in [("top_k", 50), ("min_p", 0.1), ("repetition_penalty", 1.1)]:
        original = getattr(trainer.args, name)
        setattr(trainer.args, name, value)
        try:
            with pytest.raises(UserError, match=name):
                check_supported(trainer.args)
        finally:
            setattr(trainer.args, name, original)
