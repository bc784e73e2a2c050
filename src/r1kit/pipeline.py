"""`r1kit pipeline`: the recipe's stages in order, each in its own folder of the run, each taking the model and
data the stages before it produced: the R1 recipe is `[data, sft, grpo, sample, sft, grpo, eval, export]`, and
`r1kit demo` runs `[synth, data, tokenizer, sft, experiment, eval, export]` (recipes/demo.yaml).

- synth: `synth.problems` problems of `synth.task` written as JSONL (the next stages' raw input);
- data: the raw input (`data.inputs`, or what `synth` wrote) cleaned into `<stage>/data` (the next stages'
  dataset);
- tokenizer: a tokenizer trained per `tokenizer` on the raw input, for the models built from `model.preset`;
- sft / grpo: trained from the current model (or `model.preset` for the first) on the current dataset; the
  final model becomes current (LoRA runs save the merged model, so the next stage starts from it);
- sample: rejection sampling from the current model on the current dataset's problems; its cleaned samples
  become the current dataset;
- eval: the recipe's suites on the current model, report in the stage folder;
- experiment: `r1kit experiment` from the current model (GRPO against continued SFT and controls); the model
  of the arm `experiment.next_model` (GRPO's by default) becomes current;
- export: the current model merged and quantised per `export`; the exported folder becomes current.

A finished stage leaves `stage.json` with a fingerprint of its resolved recipe and its inputs, what it made
current, its wall time and a summary of its result. Re-running the pipeline skips a stage whose fingerprint
matches, refuses one whose recipe changed (its folder holds work that a silent re-run would overwrite), and
resumes an unfinished training stage from its newest checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from r1kit.config import PipelineStage, Recipe, build_recipe
from r1kit.dist import print0
from r1kit.errors import UserError


@dataclass
class Current:
    """What the stages so far produced: the model, the cleaned dataset, the raw input files, the tokenizer."""

    model: str | None
    dataset: str | None
    inputs: list[str] | None = None
    tokenizer: str | None = None


@dataclass
class StageRecord:
    """One stage of a pipeline run, as its `stage.json` holds it."""

    stage: str
    dir: str
    fingerprint: str
    current: Current
    seconds: float
    """Wall time of the run that finished the stage (a skipped stage keeps the one it had)."""
    summary: dict
    """What the stage measured: counts, steps, accuracies, sizes (see `run_stage`)."""
    skipped: bool = False

    def to_dict(self) -> dict:
        return {**asdict(self), "skipped": self.skipped}

    @classmethod
    def from_dict(cls, data: dict) -> StageRecord:
        return cls(**{**data, "current": Current(**data["current"])})


def stage_recipe(recipe: Recipe, stage: PipelineStage, current: Current, stage_dir: Path) -> Recipe:
    """The recipe a stage runs with: the pipeline's, the current model and data, then the stage's overrides."""
    chained = [f"output_dir={stage_dir}"]
    if current.model is not None:
        chained += [f"model.path={current.model}", "model.preset=null", "model.tokenizer=null"]
    elif current.tokenizer is not None:
        chained.append(f"model.tokenizer={current.tokenizer}")
    if current.inputs is not None:
        chained += [
            f"data.inputs={json.dumps(current.inputs)}",
            f"tokenizer.inputs={json.dumps(current.inputs)}",
        ]
    if current.dataset is not None:
        chained += [
            f"train.dataset={current.dataset}",
            f"sample.dataset={current.dataset}",
            f"eval.dataset={current.dataset}",
        ]
    if stage.stage in ("sft", "grpo") and recipe.train.method != "full":
        chained.append("train.save_merged=true")
    raw = recipe.model_dump(mode="json")
    raw["pipeline"] = {"stages": []}
    return build_recipe(raw, f"pipeline stage {stage.stage}", [*chained, *stage.set])


def fingerprint(recipe: Recipe, stage: PipelineStage) -> str:
    return hashlib.sha256(f"{stage.stage}\n{recipe.to_yaml()}".encode()).hexdigest()[:16]


def run_stage(stage: str, recipe: Recipe, stage_dir: Path, current: Current) -> tuple[Current, dict]:
    """Run one stage into `stage_dir`; returns what is current after it, and a summary of what it measured."""
    if stage == "synth":
        from r1kit.data.synth import synthesize

        s = recipe.synth
        path = synthesize(
            s.task,
            s.problems,
            stage_dir / "problems.jsonl",
            difficulty=s.difficulty,
            seed=recipe.seed,
            reasoning_share=s.reasoning_share,
        )
        return replace(current, inputs=[str(path)]), {"task": s.task, "problems": s.problems}
    if stage == "data":
        from r1kit.data.clean import clean

        if not recipe.data.inputs:
            raise UserError("pipeline stage data needs data.inputs (or a synth stage before it)")
        report = clean(recipe.data.inputs, stage_dir / "data", recipe.data, seed=recipe.seed).report
        counts = ("input_records", "kept", "splits", "rejected")
        return replace(current, dataset=str(stage_dir / "data")), {k: report[k] for k in counts}
    if stage == "tokenizer":
        from r1kit.models.tokenizer import train_from_config

        if not recipe.tokenizer.inputs:
            raise UserError("pipeline stage tokenizer needs tokenizer.inputs (or a synth stage before it)")
        result = train_from_config(recipe.tokenizer, stage_dir / "tokenizer")
        summary = {"vocab_size": result.vocab_size, "texts": result.num_texts}
        return replace(current, tokenizer=str(result.out_dir)), summary
    if stage in ("sft", "grpo"):
        from r1kit.train import checkpoint

        resume = "auto" if checkpoint.complete_checkpoints(stage_dir) else None
        if stage == "sft":
            from r1kit.train.sft import train_sft

            result = train_sft(recipe, stage_dir, resume=resume)
        else:
            from r1kit.train.grpo import train_grpo

            result = train_grpo(recipe, stage_dir, resume=resume)
        model = result.final("run the pipeline again to resume")
        return replace(current, model=str(model)), {"steps": result.global_step, "run_dir": str(stage_dir)}
    if current.model is None:
        raise UserError(
            f"pipeline stage {stage} needs a model: put a training stage before it, or set model.path"
        )
    if stage == "sample":
        from r1kit.train.sample import rejection_sample

        shutil.rmtree(stage_dir / "samples", ignore_errors=True)
        report = rejection_sample(recipe, current.model, stage_dir / "samples")
        if not report.kept:
            raise UserError(f"stage {stage_dir.name}: no correct sample to train on ({report.samples} drawn)")
        summary = {"samples": report.samples, "correct": report.correct_samples, "kept": report.kept}
        return replace(current, dataset=str(stage_dir / "samples" / "data")), summary
    if stage == "experiment":
        from r1kit.experiment import run_experiment

        report = run_experiment(recipe, stage_dir)
        summary = {
            "verdict": report["verdict"],
            **{a: f["greedy"]["mean"] for a, f in report["arms"].items()},
        }
        x = recipe.experiment
        arm = x.next_model or ("grpo" if "grpo" in x.arms else "sft")
        if arm != "sft":  # the first seed's run of that arm
            current = replace(current, model=next(r["model_dir"] for r in report["runs"] if r["arm"] == arm))
        return current, summary
    if stage == "eval":
        from r1kit.eval.report import headline
        from r1kit.eval.runner import run_eval

        return current, headline(run_eval(recipe, stage_dir / "eval", model_dir=current.model))
    from r1kit.export import export

    shutil.rmtree(stage_dir / "model", ignore_errors=True)
    result = export(
        current.model,
        stage_dir / "model",
        merge_lora=recipe.export.merge_lora,
        quantize=recipe.export.gguf_quant if recipe.export.format == "gguf" else recipe.export.quantize,
        format=recipe.export.format,
        speed_tokens=recipe.export.speed_tokens,
    )
    summary = {
        "quantize": result.quantize,
        "before": asdict(result.before),
        "after": asdict(result.after),
        "measured": {method: asdict(m) for method, m in result.measured.items()},
    }
    if result.quantize != "none":
        summary["accuracy"] = accuracy_kept(recipe, stage_dir, current.model, result.out_dir)
    return replace(current, model=str(result.out_dir)), summary


def accuracy_kept(recipe: Recipe, stage_dir: Path, source, exported: Path) -> dict:
    """{suite: {"before", "after", "problems"}}: the quantised export's accuracy on each generation suite an eval
    stage of this run measured on the model it came from, with the same settings; empty when none did."""
    from r1kit.eval.runner import run_eval

    before = None
    for path in sorted(stage_dir.parent.glob("*-eval/eval/report.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        if report["model"] == str(Path(source)):
            before = report["suites"]
    suites = [name for name, suite in (before or {}).items() if "accuracy" in suite]
    if not suites:
        return {}
    settings = recipe.eval.model_copy(update={"suites": suites})
    after = run_eval(recipe.model_copy(update={"eval": settings}), stage_dir / "eval", model_dir=exported)
    return {
        name: {
            "before": before[name]["accuracy"],
            "after": after["suites"][name]["accuracy"],
            "problems": after["suites"][name]["problems"],
        }
        for name in suites
    }


BeforeStage = Callable[[Path, Recipe, Current], None]
"""Called before each stage that runs (not the skipped ones) with its folder, the recipe it runs with and what is
current."""


def run_pipeline(
    recipe: Recipe, run_dir: str | Path | None = None, *, before_stage: BeforeStage | None = None
) -> list[StageRecord]:
    """Run the recipe's pipeline; returns one record per stage."""
    import time

    stages = recipe.pipeline.stages
    if not stages:
        raise UserError("pipeline.stages is empty: list the stages to run, e.g. [data, sft, grpo, eval]")
    run_dir = Path(run_dir) if run_dir else recipe.run_dir
    for stage in stages:  # refused now rather than after the stages before it have run
        if stage.stage == "grpo":
            from r1kit.train.grpo import check_validation_metric

            check_validation_metric(stage_recipe(recipe, stage, Current(None, None), run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe.save(run_dir)
    current = Current(recipe.model.path, recipe.train.dataset)
    records = []
    for index, stage in enumerate(stages, start=1):
        stage_dir = run_dir / f"{index:02d}-{stage.stage}"
        resolved = stage_recipe(recipe, stage, current, stage_dir)
        key = fingerprint(resolved, stage)
        marker = stage_dir / "stage.json"
        if marker.is_file():
            done = StageRecord.from_dict(json.loads(marker.read_text()))
            if done.fingerprint != key:
                raise UserError(
                    f"{stage_dir} finished with a different recipe or inputs; move it away to re-run "
                    "this stage (and the ones after it)"
                )
            print0(f"[dim]{stage_dir.name}: finished earlier with the same recipe, skipped[/dim]")
            current = done.current
            records.append(replace(done, skipped=True))
            continue
        if before_stage is not None:
            before_stage(stage_dir, resolved, current)
        print0(f"[bold]{stage_dir.name}[/bold]")
        stage_dir.mkdir(parents=True, exist_ok=True)
        resolved.save(stage_dir)
        start = time.perf_counter()
        current, summary = run_stage(stage.stage, resolved, stage_dir, current)
        record = StageRecord(
            stage.stage, str(stage_dir), key, current, round(time.perf_counter() - start, 3), summary
        )
        marker.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
        records.append(record)
    return records
