"""The `r1kit` command: parse arguments, load the recipe, call one stage function, print its result.

Run settings live in the recipe; flags are for paths, a few per-command conveniences that map onto recipe
fields, and `--set section.field=value` overrides. A mistake the user can fix exits with status 2 and one
clear message on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from r1kit.errors import UserError
from r1kit.quiet import quiet_imports

app = typer.Typer(
    help="r1kit: from raw data to a served DeepSeek-R1-style reasoning model, driven by one YAML recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Create and inspect models.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train tokenizers.", no_args_is_help=True)
recipe_app = typer.Typer(help="Check recipes and read what their fields mean.", no_args_is_help=True)
data_app = typer.Typer(help="Ingest, clean, inspect and synthesise data.", no_args_is_help=True)
train_app = typer.Typer(help="Train models: SFT, LoRA/QLoRA, pretraining, GRPO.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(recipe_app, name="recipe")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")

out = Console()
err = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field, e.g. --set train.learning_rate=3e-5 (repeatable)."),
]
STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def load_recipe_for(recipe: Path | None, overrides: list[str] | None, extra: list[str] = ()):
    """The recipe (or the defaults) with the command's --set overrides, then `extra` derived from its flags."""
    from r1kit.config import load_recipe

    return load_recipe(recipe, [*(overrides or []), *extra])


# ----------------------------------------------------------------------------------------------- doctor


@app.command()
def doctor(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of {name, status, detail, fix}.")
    ] = False,
    path: Annotated[
        Path, typer.Option(help="Where data and checkpoints will go (for the disk check).")
    ] = Path("."),
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help=(
                "Also check NCCL, network interfaces and all-reduce latency/bandwidth (across the processes of "
                "`r1kit launch ... -- r1kit doctor --distributed`, else across 2 local processes)."
            ),
        ),
    ] = False,
) -> None:
    """Check this machine for training: pass/warn/fail with a one-line fix each. Exits 1 when a check fails."""
    from r1kit.dist import is_main_process
    from r1kit.doctor import FAIL, run_checks, run_distributed_checks

    if not path.is_dir():
        raise UserError(f"--path {path}: no such directory")
    checks = run_checks(path) + (run_distributed_checks() if distributed else [])
    if not is_main_process():  # under r1kit launch: every process took part in the probe; rank 0 reports
        return
    if as_json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        table = Table("check", "status", "detail", "fix", show_lines=False)
        for c in checks:
            table.add_row(c.name, f"[{STATUS_STYLE[c.status]}]{c.status}[/]", escape(c.detail), escape(c.fix))
        out.print(table)
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------------------- recipe


@recipe_app.command("show")
def recipe_show(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML; omitted: the defaults.")] = None,
    overrides: SetOption = None,
) -> None:
    """Validate a recipe (with overrides) and print it fully resolved, defaults included."""
    print(load_recipe_for(recipe, overrides).to_yaml(), end="")


@recipe_app.command("fields")
def recipe_fields(
    section: Annotated[str | None, typer.Argument(help="One section, e.g. train; omitted: all.")] = None,
) -> None:
    """List the recipe's fields with their type, default and meaning."""
    from r1kit.config import Recipe, describe_fields

    rows = describe_fields(Recipe)
    if section is not None:
        rows = [r for r in rows if r[0].split(".")[0] == section]
        if not rows:
            raise UserError(f"no recipe section {section!r}; sections: {', '.join(Recipe.model_fields)}")
    table = Table("field", "type", "default", "meaning")
    for row in rows:
        table.add_row(*map(escape, row))
    out.print(table)


# ------------------------------------------------------------------------------------------------ model


@model_app.command("list")
def model_list() -> None:
    """List the presets `r1kit model init` can build."""
    from r1kit.models.presets import PRESETS

    table = Table("preset", "architecture", "summary")
    for preset in PRESETS.values():
        table.add_row(preset.name, preset.model_type, preset.summary)
    out.print(table)


@model_app.command("init")
def model_init(
    preset: Annotated[str, typer.Argument(help="Preset name (see `r1kit model list`).")],
    tokenizer: Annotated[Path, typer.Option(help="Tokenizer folder (from `r1kit tokenizer train`).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the new model into.")],
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 42,
) -> None:
    """Write a randomly initialised Hugging Face model folder for PRESET."""
    from r1kit.models.create import init_model
    from r1kit.models.presets import PRESETS

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    result = init_model(preset, tokenizer, out_dir, seed=seed)
    out.print(f"wrote {result.out_dir}: {result.preset}, {result.num_parameters / 1e6:.2f}M parameters")


# -------------------------------------------------------------------------------------------- tokenizer


@tokenizer_app.command("train")
def tokenizer_train(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the tokenizer into.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--input", help="Text, JSONL, JSON, CSV or Parquet file (repeatable)."),
    ] = None,
    more_inputs: Annotated[
        list[Path] | None, typer.Argument(help="More input files.", show_default=False)
    ] = None,
    vocab_size: Annotated[
        int | None, typer.Option(help="Vocabulary size (recipe: tokenizer.vocab_size).")
    ] = None,
    type: Annotated[str | None, typer.Option(help="bpe or unigram (recipe: tokenizer.type).")] = None,
    character_coverage: Annotated[float | None, typer.Option(help="Unigram character coverage.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose `tokenizer` section to use.")] = None,
    overrides: SetOption = None,
) -> None:
    """Train a byte-level BPE (or unigram) tokenizer with the DeepSeek-R1 tokens and chat template."""
    from r1kit.models.tokenizer import train_from_config

    flags = {"vocab_size": vocab_size, "type": type, "character_coverage": character_coverage}
    files = [str(p) for p in (inputs or []) + (more_inputs or [])]
    assignments = [f"tokenizer.{k}={v}" for k, v in flags.items() if v is not None]
    config = load_recipe_for(recipe, overrides, assignments)
    if files:
        config.tokenizer.inputs = files
    tok = config.tokenizer
    if not tok.inputs:
        raise UserError("no input files: pass --input FILE (or tokenizer.inputs in the recipe)")
    result = train_from_config(tok, out_dir)
    config.save(out_dir)
    out.print(
        f"wrote {result.out_dir}: {tok.type} vocabulary of {result.vocab_size} tokens, "
        f"trained on {result.num_texts} texts ({result.num_chars / 1e6:.2f}M characters)"
    )


# ------------------------------------------------------------------------------------------------- data


@data_app.command("clean")
def data_clean(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (train/, validation/, reports).")],
    inputs: Annotated[
        list[Path] | None, typer.Option("--input", help="Input file or folder (repeatable).")
    ] = None,
    more_inputs: Annotated[list[Path] | None, typer.Argument(help="More inputs.", show_default=False)] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe whose `data` section configures the stages.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first malformed input.")] = False,
    overrides: SetOption = None,
) -> None:
    """Clean data files into sharded Parquet with an auditable report (every input record accounted for)."""
    from r1kit.data.clean import clean

    config = load_recipe_for(recipe, overrides, ["data.strict=true"] if strict else [])
    files = [str(p) for p in (inputs or []) + (more_inputs or [])] or config.data.inputs
    result = clean(files, out_dir, config.data, seed=config.seed)
    config.save(out_dir)
    report = result.report
    table = Table("", "records")
    table.add_row("input", str(report["input_records"]))
    table.add_row(
        "[green]kept[/green]",
        f"{report['kept']} (train {report['splits']['train']}, validation {report['splits']['validation']})",
    )
    for reason, count in report["rejected"].items():
        table.add_row(f"[yellow]rejected: {escape(reason)}[/yellow]", str(count))
    out.print(table)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    out.print(f"{report['records_per_second']} records/s; report: {escape(str(out_dir / 'report.md'))}")


@data_app.command("synth")
def data_synth(
    task: Annotated[
        str, typer.Option(help="arithmetic, addition, addition-labelled, addition-running or countdown.")
    ],
    n: Annotated[int, typer.Option("--n", help="Number of problems.")],
    out_path: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
    difficulty: Annotated[str, typer.Option(help="easy, medium or hard.")] = "medium",
    seed: Annotated[int, typer.Option(help="Generation seed.")] = 42,
    reasoning_share: Annotated[
        float,
        typer.Option(
            help="Share of solutions with the worked reasoning; the rest answer after an empty think block."
        ),
    ] = 1.0,
) -> None:
    """Generate verifiable problems with gold answers and worked <think> solutions."""
    from r1kit.data.synth import synthesize

    path = synthesize(task, n, out_path, difficulty=difficulty, seed=seed, reasoning_share=reasoning_share)
    out.print(f"wrote {n} {difficulty} {task} problems to {escape(str(path))}")


@data_app.command("stats")
def data_stats_cmd(
    data_dir: Annotated[Path, typer.Argument(help="A `data clean` output folder.")],
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer folder; default: the recipe's model.")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe (train.max_seq_length, the model's tokenizer).")
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Token-length histograms of a cleaned data folder, truncation at max_seq_length, and packing fill."""
    from r1kit.data.stats import data_stats
    from r1kit.models.load import load_tokenizer

    config = load_recipe_for(recipe, overrides)
    tokenizer_dir = tokenizer or config.model.tokenizer or config.model.path
    if tokenizer_dir is None:
        raise UserError(
            "no tokenizer: pass --tokenizer DIR (or set model.tokenizer / model.path in the recipe)"
        )
    seq_length = config.train.max_seq_length
    report = data_stats(
        data_dir,
        load_tokenizer(tokenizer_dir, trust_remote_code=config.model.trust_remote_code),
        max_seq_length=seq_length,
        assistant_only_loss=config.train.assistant_only_loss,
    )
    if not report:
        raise UserError(
            f"{data_dir} holds no train/ or validation/ Parquet shards: run `r1kit data clean` first"
        )
    for split, stats in report.items():
        largest = max(count for _, count in stats["histogram"]) or 1
        table = Table(
            "tokens",
            "examples",
            "",
            title=f"{split}: {stats['examples']} examples, {stats['tokens']} tokens",
            title_justify="left",
        )
        for label, count in stats["histogram"]:
            table.add_row(label, str(count), "█" * round(30 * count / largest))
        out.print(table)
        cut = stats["at_max_seq_length"]
        percentiles = ", ".join(f"{k} {v}" for k, v in stats["percentiles"].items())
        out.print(
            f"  {percentiles}; at max_seq_length {seq_length}: {cut['num_truncated']} truncated, "
            f"{cut['num_dropped_no_trainable_tokens']} left without trainable tokens; packed into "
            f"{stats['packed_rows']} rows, {100 * stats['packing_fill']:.0f}% full"
        )


# ----------------------------------------------------------------------------------------------- launch


@app.command("launch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch_cmd(
    ctx: typer.Context,
    nproc_per_node: Annotated[
        int | None,
        typer.Option("--nproc-per-node", help="Processes per node (default: the GPUs of this node, else 1)."),
    ] = None,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Nodes taking part.")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This node's rank (0 .. nnodes-1).")] = 0,
    master_addr: Annotated[
        str | None, typer.Option("--master-addr", help="Address of the rank-0 node.")
    ] = None,
    master_port: Annotated[int, typer.Option("--master-port", help="Port of the rank-0 node.")] = 29500,
    nccl_debug: Annotated[
        str | None, typer.Option("--nccl-debug", help="NCCL_DEBUG level (INFO, WARN).")
    ] = None,
    socket_ifname: Annotated[
        str | None,
        typer.Option(
            "--nccl-socket-ifname", help="Network interface(s) for NCCL and gloo (NCCL_SOCKET_IFNAME)."
        ),
    ] = None,
    ib_disable: Annotated[bool, typer.Option("--nccl-ib-disable", help="Do not use InfiniBand.")] = False,
    slurm: Annotated[
        bool, typer.Option("--slurm", help="Print a SLURM batch script instead of running.")
    ] = False,
    job_name: Annotated[str, typer.Option("--job-name", help="SLURM job name.")] = "r1kit",
    time_limit: Annotated[str | None, typer.Option("--time", help="SLURM time limit, e.g. 24:00:00.")] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="SLURM partition.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the torchrun command and exit.")] = False,
) -> None:
    """Run an r1kit command as several processes through torchrun: r1kit launch --nproc-per-node 8 -- r1kit train
    sft recipe.yaml. Multi-node: the same command on every node with --nnodes, --node-rank and --master-addr."""
    import shlex

    from r1kit.train.launch import (
        LaunchSpec,
        default_processes,
        r1kit_command,
        run,
        slurm_script,
        torchrun_command,
    )

    spec = LaunchSpec(
        r1kit_command(list(ctx.args)),
        nproc_per_node or default_processes(),
        nnodes,
        node_rank,
        master_addr,
        master_port,
        nccl_debug,
        socket_ifname,
        ib_disable,
    )
    if slurm:
        print(slurm_script(spec, job_name=job_name, time_limit=time_limit, partition=partition), end="")
        return
    if dry_run:
        print(" ".join(shlex.quote(arg) for arg in torchrun_command(spec)))
        return
    code = run(spec)
    if code:
        raise typer.Exit(code)


# ------------------------------------------------------------------------------------------------- plan


@app.command("plan")
def plan_cmd(
    recipe: Annotated[
        Path | None, typer.Argument(help="Recipe YAML (default: the defaults with --set).")
    ] = None,
    stage: Annotated[
        str, typer.Option(help="What to plan: `sft` (also LoRA/QLoRA, pretraining) or `grpo`.")
    ] = "sft",
    device: Annotated[
        str | None, typer.Option(help="plan.device: H100, A100, RTX 4090, ..., or cpu.")
    ] = None,
    gpus_per_node: Annotated[int | None, typer.Option(help="plan.gpus_per_node.")] = None,
    nodes: Annotated[int | None, typer.Option(help="plan.nodes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    overrides: SetOption = None,
) -> None:
    """Per-device memory, whether the run fits (and the smallest change that makes it fit), time and cost."""
    from r1kit.plan import ceil_gb, describe_hours, human_count, make_plan

    if stage not in ("sft", "grpo"):
        raise UserError(f"--stage must be sft or grpo, not {stage!r}")
    extra = [
        f"plan.{name}={value}"
        for name, value in (("device", device), ("gpus_per_node", gpus_per_node), ("nodes", nodes))
        if value is not None
    ]
    resolved = load_recipe_for(recipe, overrides, extra)
    plan = make_plan(resolved, stage)
    if as_json:
        out.print_json(json.dumps(plan.to_dict()))
        return
    m, s = plan.model, plan.setup
    moe = (
        f", {human_count(m.active_params)} active per token ({m.experts_per_token} of {m.experts} experts)"
        if m.experts
        else ""
    )
    out.print(f"model     {escape(m.name)}: {human_count(m.total_params)} parameters{moe}", highlight=False)
    method = s.method + (
        f" (rank {resolved.train.lora.r}, {human_count(m.lora_params)} trainable)"
        if s.method != "full"
        else ""
    )
    where = f"{s.gpus_per_node} x {plan.device}" + (f" x {s.nodes} nodes" if s.nodes > 1 else "")
    out.print(
        f"run       {stage} {method}, {s.strategy}, {s.precision}, micro-batch {s.micro_batch} x "
        f"{s.seq_length} tokens, gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}, "
        f"on {where}",
        highlight=False,
    )
    table = Table(title="memory per device (GB)", title_justify="left")
    table.add_column("part")
    table.add_column("GB", justify="right")
    for part, gb in plan.memory_gb.items():
        table.add_row(part, ceil_gb(gb))
    capacity = f"{plan.capacity_gb:.3g}"
    table.add_row("[bold]total[/bold]", f"[bold]{ceil_gb(plan.total_gb)}[/bold] of {capacity}")
    out.print(table)
    if plan.fits:
        out.print(f"[green]fits[/green]: {ceil_gb(plan.total_gb)} of {capacity} GB per device")
    else:
        out.print(f"[bold red]does not fit[/bold red]: {ceil_gb(plan.total_gb)} of {capacity} GB per device")
        out.print(
            f"smallest change that fits: {escape(plan.fix)} ({ceil_gb(plan.fixed_total_gb)} GB)"
            if plan.fix
            else "no change r1kit tries makes it fit: use more devices or a smaller model",
            highlight=False,
        )
    if plan.hours is not None:
        out.print(
            f"time      {describe_hours(plan.hours)} for {human_count(plan.tokens)} tokens at "
            f"{100 * resolved.plan.mfu:.0f}% MFU",
            highlight=False,
        )
        for kind, cost in plan.costs.items():
            out.print(f"cost      {kind}: ${cost:,.0f}", highlight=False)
    elif plan.tokens is None:
        out.print("time      set plan.dataset_tokens or train.max_steps to estimate time and cost")
    for note in plan.notes:
        out.print(f"[yellow]note[/yellow]      {escape(note)}", highlight=False)


# ------------------------------------------------------------------------------------------------ train

RecipeArgument = Annotated[Path, typer.Argument(help="Recipe YAML.")]
OutOption = Annotated[Path | None, typer.Option("--out", help="Run folder (default: runs/<recipe name>).")]
ResumeOption = Annotated[
    str | None,
    typer.Option(help="`auto`: continue from the newest complete checkpoint; or a checkpoint folder."),
]


def _train(recipe: Path, out_dir: Path | None, resume: str | None, overrides, mode: str) -> None:
    if mode == "grpo":
        from r1kit.train.grpo import train_grpo

        result = train_grpo(load_recipe_for(recipe, overrides), out_dir, resume=resume)
    else:
        from r1kit.train.sft import train_sft

        result = train_sft(load_recipe_for(recipe, overrides), out_dir, resume=resume, mode=mode)
    if result.skipped_nonfinite_steps:
        err.print(f"[yellow]{result.skipped_nonfinite_steps} steps skipped for a non-finite loss[/yellow]")
    if result.stopped_by:
        out.print(
            f"stopped by {result.stopped_by} at step {result.global_step}; checkpoint saved. "
            f"Continue with: r1kit train {mode} {escape(str(recipe))} --resume auto"
            + (f" --out {escape(str(out_dir))}" if out_dir else "")
        )
        import signal

        raise typer.Exit(128 + signal.Signals[result.stopped_by].value)
    from r1kit.dist import is_main_process

    if not is_main_process():  # one report per run, not one per process
        return
    out.print(
        f"trained {result.global_step} steps; final model: {escape(str(result.final_dir))}; "
        f"metrics: {escape(str(result.run_dir / 'metrics.jsonl'))}"
    )


@train_app.command("sft")
def train_sft_cmd(
    recipe: RecipeArgument,
    out_dir: OutOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
) -> None:
    """Supervised fine-tuning (full, LoRA or QLoRA) on chat/problem data, loss on assistant tokens."""
    _train(recipe, out_dir, resume, overrides, "sft")


@train_app.command("pretrain")
def train_pretrain_cmd(
    recipe: RecipeArgument,
    out_dir: OutOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
) -> None:
    """Causal-LM training on every token (plain text from `r1kit data clean`)."""
    _train(recipe, out_dir, resume, overrides, "pretrain")


@train_app.command("grpo")
def train_grpo_cmd(
    recipe: RecipeArgument,
    out_dir: OutOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
) -> None:
    """GRPO reinforcement learning with verifiable rewards on problems with gold answers (the R1 recipe)."""
    _train(recipe, out_dir, resume, overrides, "grpo")


# --------------------------------------------------------------------------------------------- generate


def _print_answer(prompt: str, reasoning: str | None, answer: str) -> None:
    out.print(f"[bold]prompt[/bold]    {escape(prompt)}", highlight=False)
    if reasoning is not None:
        out.print(f"[dim]reasoning[/dim] {escape(reasoning)}", highlight=False)
    out.print(f"[bold]answer[/bold]    {escape(answer)}", highlight=False)


def _print_completion(completion) -> None:
    _print_answer(completion.prompt, completion.reasoning, completion.answer)
    out.print(
        f"[dim]{completion.num_completion_tokens} tokens in {completion.seconds:.2f} s "
        f"({completion.tokens_per_second:.1f} tokens/s)[/dim]"
    )


@app.command("generate")
def generate_cmd(
    model: Annotated[Path, typer.Option(help="Local Hugging Face model folder.")],
    prompt: Annotated[list[str], typer.Option(help="User message (repeatable).")],
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 decodes greedily.")] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped in the model folder.")] = False,
) -> None:
    """Chat with a local model: the reasoning inside <think> is shown apart from the answer."""
    from r1kit.generate import generate

    for completion in generate(
        model,
        prompt,
        system_prompt=system,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        trust_remote_code=trust_remote_code,
    ):
        _print_completion(completion)


@app.command("sample")
def sample_cmd(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML (its `sample` section).")] = None,
    model: Annotated[Path, typer.Option(help="Model folder to sample from.")] = ...,
    out_dir: Annotated[
        Path, typer.Option("--out", help="New folder for samples.jsonl, data/ and report.json.")
    ] = ...,
    overrides: SetOption = None,
) -> None:
    """Rejection sampling: keep verified-correct completions as a new SFT dataset (recipe section `sample`)."""
    from r1kit.train.sample import rejection_sample

    report = rejection_sample(load_recipe_for(recipe, overrides), model, out_dir)
    out.print(
        f"{report.problems} problems x {report.samples // max(1, report.problems)} samples: "
        f"{report.correct_samples} correct, {report.solved_problems} problems solved, {report.truncated} cut "
        f"at the length limit; kept {report.kept} ({report.keep})"
    )
    if report.kept:
        out.print(f"SFT data: {escape(str(out_dir / 'data'))} (train.dataset)")
    else:
        err.print("[yellow]no correct sample: nothing to train on[/yellow]")


@app.command("pipeline")
def pipeline_cmd(recipe: RecipeArgument, out_dir: OutOption = None, overrides: SetOption = None) -> None:
    """Run the recipe's stages in order (pipeline.stages), skipping finished ones and resuming unfinished ones."""
    from r1kit.pipeline import run_pipeline

    for record in run_pipeline(load_recipe_for(recipe, overrides), out_dir):
        state = "skipped (finished earlier)" if record["skipped"] else "done"
        out.print(
            f"{escape(Path(record['dir']).name):12} {state}; model {escape(str(record['model']))}",
            soft_wrap=True,
        )


# ------------------------------------------------------------------------------------------------- eval


@app.command("eval")
def eval_cmd(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[RECIPE | compare RUN_A RUN_B]",
            help="A recipe (its `eval` section), or `compare` and two eval output folders.",
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Local model folder to evaluate.")] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
    ] = None,
    endpoint_model: Annotated[
        str | None, typer.Option(help="Model name at the endpoint (default: its first).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="R1KIT_EVAL_API_KEY", help="Endpoint API key (env R1KIT_EVAL_API_KEY)."),
    ] = None,
    suite: Annotated[
        list[str] | None,
        typer.Option(help="Suite to run (repeatable): gsm8k, math500, heldout, perplexity, speed."),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default <run>/eval).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems of each suite.")] = None,
    num_samples: Annotated[int | None, typer.Option(help="Samples per problem.")] = None,
    curves_from: Annotated[
        Path | None,
        typer.Option(help="Training run folder to plot curves from (default: the model's run, if any)."),
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Evaluate a model folder or an endpoint: math accuracy, pass@k, BLEU/ROUGE, perplexity, speed."""
    args = args or []
    if args[:1] == ["compare"]:
        from r1kit.eval.report import compare

        if len(args) != 3:
            raise UserError("usage: r1kit eval compare RUN_A RUN_B (two eval output folders)")
        out.print(compare(args[1], args[2]), highlight=False, soft_wrap=True)
        return
    if len(args) > 1:
        raise UserError(f"expected at most one recipe, got {' '.join(args)}")
    from r1kit.eval.runner import run_eval

    flags = {"suites": f"[{','.join(suite)}]" if suite else None, "limit": limit, "num_samples": num_samples}
    recipe = load_recipe_for(
        Path(args[0]) if args else None,
        overrides,
        [f"eval.{k}={v}" for k, v in flags.items() if v is not None],
    )
    if curves_from is None and model is not None and (model.parent / "metrics.jsonl").is_file():
        curves_from = model.parent  # <run>/final: the run's own curves
    out_dir = out_dir or recipe.run_dir / "eval"
    report = run_eval(
        recipe,
        out_dir,
        model_dir=model,
        endpoint=endpoint,
        endpoint_model=endpoint_model,
        api_key=api_key,
        curves_from=curves_from,
    )
    from r1kit.eval.report import headline

    for key, value in headline(report).items():
        shown = (
            "–"
            if value is None
            else (f"{100 * value:.1f}%" if "accuracy" in key or "pass@" in key else f"{value:.3f}")
        )
        out.print(f"{key:32} {shown}", highlight=False)
    out.print(f"report: {escape(str(out_dir / 'report.md'))}")


# ----------------------------------------------------------------------------------------------- export


@app.command("export")
def export_cmd(
    model: Annotated[Path, typer.Option(help="Model folder, checkpoint folder or LoRA adapter folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="New folder for the exported model.")],
    merge_lora: Annotated[bool, typer.Option(help="Merge a LoRA adapter into its base weights.")] = True,
    quantize: Annotated[
        str, typer.Option(help="none, int8-dynamic (CPU), int8 or int4 (torchao), nf4 (GPU).")
    ] = "none",
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped in the model folder.")] = False,
) -> None:
    """Merge, quantise and write a model folder to serve, with its size and speed before and after."""
    from r1kit.export import export

    result = export(
        model, out_dir, merge_lora=merge_lora, quantize=quantize, trust_remote_code=trust_remote_code
    )
    b, a = result.before, result.after
    out.print(f"size   {b.size_mib:8.1f} MiB -> {a.size_mib:8.1f} MiB ({a.size_mib / b.size_mib:.2f}x)")
    out.print(
        f"speed  {b.tokens_per_second:8.1f} tok/s -> {a.tokens_per_second:8.1f} tok/s "
        f"({a.tokens_per_second / b.tokens_per_second:.2f}x, greedy, one prompt)"
    )
    for pattern, why in result.not_quantized.items():
        out.print(f"[yellow]not quantised[/yellow] {escape(pattern)}: {why}", soft_wrap=True)
    out.print(f"wrote {escape(str(result.out_dir))} (report: export.json)")


# ------------------------------------------------------------------------------------------------ serve


@app.command("serve")
def serve_cmd(
    model: Annotated[Path, typer.Option(help="Local Hugging Face model folder.")],
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose `serve` section to use.")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000; 0 picks a free one).")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="R1KIT_API_KEY", help="Require `Authorization: Bearer KEY` (env R1KIT_API_KEY)."),
    ] = None,
    engine: Annotated[str | None, typer.Option(help="transformers (default) or vllm (CUDA GPUs).")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Most requests decoded together.")] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Name clients ask for (default: the folder's).")
    ] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped in the model folder.")] = False,
    overrides: SetOption = None,
) -> None:
    """Serve a model: OpenAI-compatible API with reasoning_content, /generate, WebSocket, /metrics, chat page."""
    from r1kit.serve.server import serve

    flags = {"host": host, "port": port, "engine": engine, "max_batch_size": max_batch_size}
    config = load_recipe_for(
        recipe, overrides, [f"serve.{k}={v}" for k, v in flags.items() if v is not None]
    ).serve
    if api_key:
        config = config.model_copy(update={"api_key": api_key})
    serve(model, config, model_name=model_name, trust_remote_code=trust_remote_code)


# ------------------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path(
        "runs/demo"
    ),
    overrides: SetOption = None,
) -> None:
    """The R1 recipe end to end on this machine: data, tokenizer, SFT, GRPO, eval, export, serve, report."""
    from r1kit.demo import run_demo

    result = run_demo(out_dir, overrides or [])
    counts = {s: sum(c.status == s for c in result.checks) for s in ("pass", "warn", "fail")}
    report = result.data.report
    out.print(f"doctor: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
    out.print(f"data: {report['input_records']} records in, {report['kept']} kept")
    out.print(f"SFT: {result.sft.global_step} steps; GRPO: {result.grpo.global_step} steps")
    for example in result.examples:  # the evaluation's own greedy answers to the first held-out problems
        _print_answer(example["prompt"], example["reasoning"], example["answer"])
        verdict = "[green]correct[/green]" if example["correct"] else "[yellow]not correct[/yellow]"
        out.print(f"gold      {escape(example['gold'])}: {verdict}")
    before, after = result.before["suites"]["heldout"], result.evaluation["suites"]["heldout"]
    out.print(
        f"held-out accuracy ({after['problems']} problems, greedy): {100 * before['accuracy']:.1f}% after SFT -> "
        f"{100 * after['accuracy']:.1f}% after GRPO ({100 * (after['accuracy'] - before['accuracy']):+.1f} points)"
    )
    b, a = result.export.before, result.export.after
    out.print(f"export {result.export.quantize}: {b.size_mib:.1f} -> {a.size_mib:.1f} MiB")
    served = result.served
    out.print(f"served at {served['url']}: asked {escape(served['question'])!r}", highlight=False)
    out.print(f"[dim]reasoning_content[/dim] {escape(str(served['reasoning']))}", highlight=False)
    out.print(f"[bold]content[/bold]           {escape(str(served['answer']))}", highlight=False)
    out.print(f"{sum(result.seconds.values()) / 60:.1f} min; report: {escape(str(result.report))}")


def main() -> None:
    quiet_imports()
    try:
        app()
    except UserError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
