"""`r1kit eval`: run the recipe's suites against a local model folder or an OpenAI-compatible endpoint and
write `report.json`, `report.md` and plots into the output folder.

Reproducibility: every sampling setting, the seeds (one per problem and sample, derived from the recipe's
seed) and the versions of the libraries go into the report; a local model decodes each request with its own
seeded generator, so the same recipe gives the same samples whatever else is in the batch.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from r1kit.config import EvalConfig, Recipe
from r1kit.engine.chats import sample_seed
from r1kit.errors import UserError
from r1kit.eval import metrics, suites
from r1kit.eval.backends import EndpointBackend, LocalBackend, Sample, Settings
from r1kit.r1format import extract_answer
from r1kit.tasks import GoldProblems, Problem, check


def latency_summary(samples: list[Sample], seconds: float) -> dict:
    ttfts = [s.ttft for s in samples if s.ttft is not None]
    itls = [s.itl for s in samples if s.itl is not None]
    tokens = sum(s.num_tokens for s in samples)
    return {
        "requests": len(samples),
        "generated_tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "ttft_p50": statistics.median(ttfts) if ttfts else None,
        "ttft_p95": sorted(ttfts)[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))] if ttfts else None,
        "itl_mean": statistics.fmean(itls) if itls else None,
        "ttft_all": ttfts,
        "itl_all": itls,
    }


def score_problems(problems: list[Problem], samples: list[Sample], cfg: EvalConfig) -> dict:
    """Accuracy (pass@1 averaged over samples, with standard error), pass@k, exact match, BLEU-4/ROUGE-L,
    accuracy by tag, and a few examples. `samples` holds cfg.num_samples per problem, problem by problem."""
    n, gold_problems = cfg.num_samples, GoldProblems()
    per_problem, exact, by_tag, examples = [], [], {}, []
    for i, problem in enumerate(problems):
        group = samples[i * n : (i + 1) * n]
        correct = [check(s.answer, problem, gold_problems) for s in group]
        per_problem.append(correct)
        exact += [extract_answer(s.answer) == problem.gold.strip() for s in group]  # the answer, verbatim
        for key, value in problem.tags.items():
            by_tag.setdefault(key, {}).setdefault(value, []).append(sum(correct) / n)
        if len(examples) < 3:
            examples.append(
                {
                    "id": problem.id,
                    "prompt": problem.messages[-1]["content"],
                    "gold": problem.gold,
                    "reasoning": group[0].reasoning,
                    "answer": group[0].answer,
                    "correct": correct[0],
                }
            )
    accuracy = metrics.mean_with_error([sum(c) / n for c in per_problem])
    result = {
        "problems": len(problems),
        "samples_per_problem": n,
        "accuracy": accuracy.mean,
        "accuracy_stderr": accuracy.stderr,
        "pass_at_k": {
            str(k): statistics.fmean(metrics.pass_at_k(n, sum(c), k) for c in per_problem) for k in cfg.pass_k
        },
        "exact_match": sum(exact) / len(exact) if exact else 0.0,
        "unparseable_golds": gold_problems.count,
        "unparseable_gold_examples": gold_problems.examples,
        "by_tag": {
            key: {value: statistics.fmean(accs) for value, accs in sorted(groups.items())}
            for key, groups in by_tag.items()
        },
        "truncated": sum(s.finish_reason == "length" for s in samples) / len(samples) if samples else 0.0,
        "examples": examples,
    }
    references = [(samples[i * n].answer, p.reference) for i, p in enumerate(problems) if p.reference]
    if references:
        hypotheses, refs = [h for h, _ in references], [r for _, r in references]
        result["bleu4"], result["bleu_signature"] = metrics.bleu4(hypotheses, refs)
        result["rouge_l"] = metrics.rouge_l(hypotheses, refs)
    return result


def run_generation_suite(name: str, problems: list[Problem], backend, cfg: EvalConfig, seed: int) -> dict:
    settings = Settings(cfg.temperature, cfg.top_p, cfg.max_new_tokens, seed)
    chats = [p.messages for p in problems for _ in range(cfg.num_samples)]
    seeds = [sample_seed(seed, i, j) for i in range(len(problems)) for j in range(cfg.num_samples)]
    start = time.perf_counter()
    samples = backend.complete(chats, settings, seeds)
    result = score_problems(problems, samples, cfg)
    result["speed"] = latency_summary(samples, time.perf_counter() - start)
    return result


def run_speed_suite(backend, cfg: EvalConfig, seed: int) -> dict:
    """One request at a time, so the latencies are the model's, not the queue's."""
    problems = suites.gsm8k(cfg.instruction, cfg.speed_requests)
    settings = Settings(cfg.temperature, cfg.top_p, cfg.max_new_tokens, seed)
    samples, start = [], time.perf_counter()
    for i, problem in enumerate(problems):
        samples += backend.complete([problem.messages], settings, [sample_seed(seed, i, 0)])
    return latency_summary(samples, time.perf_counter() - start)


def versions() -> dict:
    from r1kit import __version__
    from r1kit.hardware import package_version

    return {
        "r1kit": __version__,
        **{
            name: package_version(name)
            for name in ("torch", "transformers", "math-verify", "sacrebleu", "rouge-score")
        },
    }


def run_eval(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    model_dir: str | Path | None = None,
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    api_key: str | None = None,
    curves_from: str | Path | None = None,
) -> dict:
    """Evaluate and write the report; returns the report as a dict. The report plots the training curves of
    `curves_from`, by default the run a `<run>/final` model folder belongs to."""
    from r1kit.eval.report import write_report

    if curves_from is None and model_dir is not None and (Path(model_dir).parent / "metrics.jsonl").is_file():
        curves_from = Path(model_dir).parent

    cfg = recipe.eval
    if (model_dir is None) == (endpoint is None):
        raise UserError("give exactly one of --model DIR or --endpoint URL")
    if endpoint is not None and "perplexity" in cfg.suites:
        raise UserError("the perplexity suite needs the model's log-probabilities: evaluate a local --model")
    data_dir = cfg.dataset or recipe.train.dataset
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = (
        LocalBackend(
            model_dir, max_batch_size=cfg.concurrency, trust_remote_code=recipe.model.trust_remote_code
        )
        if model_dir is not None
        else EndpointBackend(endpoint, model=endpoint_model, api_key=api_key, concurrency=cfg.concurrency)
    )
    report = {
        "model": backend.name,
        "settings": {**cfg.model_dump(), "seed": recipe.seed, "dataset": data_dir},
        "versions": versions(),
        "suites": {},
    }
    try:
        for name in cfg.suites:
            start = time.perf_counter()
            if name == "perplexity":
                if getattr(backend, "model", None) is None:
                    raise UserError("the perplexity suite needs a Hugging Face model folder, not a GGUF file")
                texts, source = suites.perplexity_texts(data_dir, backend.tokenizer, cfg.limit)
                result = {
                    "perplexity": metrics.perplexity(backend.model, backend.tokenizer, texts),
                    "texts": len(texts),
                    "source": source,
                }
            elif name == "speed":
                result = run_speed_suite(backend, cfg, recipe.seed)
            else:
                problems = {
                    "gsm8k": lambda: suites.gsm8k(cfg.instruction, cfg.limit),
                    "math500": lambda: suites.math500(cfg.instruction, cfg.limit),
                    "heldout": lambda: suites.heldout(data_dir, cfg.limit),
                }[name]()
                result = run_generation_suite(name, problems, backend, cfg, recipe.seed)
            result["wall_seconds"] = time.perf_counter() - start
            report["suites"][name] = result
    finally:
        backend.close()
    write_report(report, out_dir, curves_from=curves_from)
    return report
