"""`r1kit pipeline`: the recipe's stages in order, each in its own folder of the run, each taking the model and
data the stages before it produced: the R1 recipe is `[data, sft, grpo, sample, sft, grpo, eval, export]`.

- data: `data.inputs` cleaned into `<stage>/data` (the next stages' dataset);
- sft / grpo: trained from the current model (or `model.preset` for the first) on the current dataset; the
  final model becomes current (LoRA runs save the merged model, so the next stage starts from it);
- sample: rejection sampling from the current model on the current dataset's problems; its cleaned samples
  become the current dataset;
- eval: the recipe's suites on the current model, report in the stage folder;
- export: the current model merged and quantised per `export`; the exported folder becomes current.

A finished stage leaves `stage.json` with a fingerprint of its resolved recipe and its inputs. Re-running the
pipeline skips a stage whose fingerprint matches, refuses one whose recipe changed (its folder holds work that
a silent re-run would overwrite), and resumes an unfinished training stage from its newest checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from r1kit.config import PipelineStage, Recipe, build_recipe
from r1kit.dist import print0
from r1kit.errors import UserError


@dataclass
class Current:
    model: str | None
    dataset: str | None


def stage_recipe(recipe: Recipe, stage: PipelineStage, current: Current, stage_dir: Path) -> Recipe:
    """The recipe a stage runs with: the pipeline's, the current model and data, then the stage's overrides."""
    chained = [f"output_dir={stage_dir}"]
    if current.model is not None:
        chained += [f"model.path={current.model}", "model.preset=null", "model.tokenizer=null"]
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


def run_stage(stage: str, recipe: Recipe, stage_dir: Path, current: Current) -> Current:
    """Run one stage into `stage_dir`; returns what is current after it."""
    if stage == "data":
        from r1kit.data.clean import clean

        if not recipe.data.inputs:
            raise UserError("pipeline stage data needs data.inputs")
        clean(recipe.data.inputs, stage_dir / "data", recipe.data, seed=recipe.seed)
        return Current(current.model, str(stage_dir / "data"))
    if stage in ("sft", "grpo"):
        from r1kit.train import checkpoint

        resume = "auto" if checkpoint.complete_checkpoints(stage_dir) else None
        if stage == "sft":
            from r1kit.train.sft import train_sft

            result = train_sft(recipe, stage_dir, resume=resume)
        else:
            from r1kit.train.grpo import train_grpo

            result = train_grpo(recipe, stage_dir, resume=resume)
        return Current(str(result.final("run the pipeline again to resume")), current.dataset)
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
        return Current(current.model, str(stage_dir / "samples" / "data"))
    if stage == "eval":
        from r1kit.eval.runner import run_eval

        run_eval(recipe, stage_dir / "eval", model_dir=current.model)
        return current
    from r1kit.export import export

    shutil.rmtree(stage_dir / "model", ignore_errors=True)
    result = export(
        current.model,
        stage_dir / "model",
        merge_lora=recipe.export.merge_lora,
        quantize=recipe.export.quantize,
    )
    return Current(str(result.out_dir), current.dataset)


def run_pipeline(recipe: Recipe, run_dir: str | Path | None = None) -> list[dict]:
    """Run the recipe's pipeline; returns one record per stage (name, folder, skipped, model, dataset)."""
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
            done = json.loads(marker.read_text())
            if done["fingerprint"] != key:
                raise UserError(
                    f"{stage_dir} finished with a different recipe or inputs; move it away to re-run "
                    "this stage (and the ones after it)"
                )
            print0(f"[dim]{stage_dir.name}: finished earlier with the same recipe, skipped[/dim]")
            current = Current(done["model"], done["dataset"])
            records.append({**done, "skipped": True})
            continue
        print0(f"[bold]{stage_dir.name}[/bold]")
        stage_dir.mkdir(parents=True, exist_ok=True)
        resolved.save(stage_dir)
        current = run_stage(stage.stage, resolved, stage_dir, current)
        done = {
            "stage": stage.stage,
            "dir": str(stage_dir),
            "fingerprint": key,
            "model": current.model,
            "dataset": current.dataset,
        }
        marker.write_text(json.dumps(done, indent=2) + "\n")
        records.append({**done, "skipped": False})
    return records
