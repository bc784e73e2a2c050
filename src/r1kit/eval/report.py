"""Evaluation reports people can look at: `report.json` (everything), `report.md` (the tables, the plots, a few
answers) and PNG plots (accuracy by subject/level, latency histograms, a run's training curves); and the
side-by-side comparison of two reports (`r1kit eval compare`)."""

from __future__ import annotations

import json
from pathlib import Path

from r1kit.errors import UserError


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def headline(report: dict) -> dict[str, float | None]:
    """The comparable figures of a report, one per row of `compare`."""
    rows: dict[str, float | None] = {}
    for name, suite in report["suites"].items():
        if "accuracy" in suite:
            rows[f"{name} accuracy"] = suite["accuracy"]
            for k, value in suite["pass_at_k"].items():
                if k != "1":
                    rows[f"{name} pass@{k}"] = value
            for key in ("bleu4", "rouge_l"):
                if key in suite:
                    rows[f"{name} {key}"] = suite[key]
        if "perplexity" in suite:
            rows[f"{name}"] = suite["perplexity"]
        speed = suite.get("speed", suite if name == "speed" else None)
        if speed:
            rows[f"{name} tokens/s"] = speed["tokens_per_second"]
            rows[f"{name} TTFT p50 s"] = speed["ttft_p50"]
    return rows


def _plots(report: dict, out_dir: Path, curves_from: Path | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    written = []
    for name, suite in report["suites"].items():
        for key, groups in suite.get("by_tag", {}).items():
            fig, ax = plt.subplots(figsize=(7, 3.5))
            labels = list(groups)
            ax.barh(labels, [100 * groups[label] for label in labels], color="#4c72b0")
            ax.set_xlabel("accuracy (%)")
            ax.set_xlim(0, 100)
            ax.set_title(f"{name}: accuracy by {key}")
            fig.tight_layout()
            written.append(plots_dir / f"{name}_accuracy_by_{key}.png")
            fig.savefig(written[-1], dpi=100)
            plt.close(fig)
    ttfts = [t for s in report["suites"].values() for t in (s.get("speed") or s).get("ttft_all", [])]
    itls = [t for s in report["suites"].values() for t in (s.get("speed") or s).get("itl_all", [])]
    if ttfts:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        axes[0].hist([1000 * t for t in ttfts], bins=20, color="#55a868")
        axes[0].set_xlabel("time to first token (ms)")
        axes[1].hist([1000 * t for t in itls] or [0], bins=20, color="#c44e52")
        axes[1].set_xlabel("inter-token latency (ms)")
        for ax in axes:
            ax.set_ylabel("requests")
        fig.tight_layout()
        written.append(plots_dir / "latency.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    metrics_file = curves_from / "metrics.jsonl" if curves_from else None
    if metrics_file and metrics_file.is_file():
        events = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        series = {}
        for event in events:
            if event.get("split") in ("train", "eval") and "step" in event:
                for key in ("loss", "accuracy", "reward"):
                    if key in event:
                        series.setdefault(f"{event['split']} {key}", []).append((event["step"], event[key]))
        if series:
            fig, ax = plt.subplots(figsize=(7, 3.5))
            for label, points in series.items():
                ax.plot(*zip(*points), label=label, marker="." if label.startswith("eval") else None)
            ax.set_xlabel("step")
            ax.legend()
            ax.set_title(f"training curves: {curves_from}")
            fig.tight_layout()
            written.append(plots_dir / "training_curves.png")
            fig.savefig(written[-1], dpi=100)
            plt.close(fig)
    return written


def _markdown(report: dict, plots: list[Path], out_dir: Path) -> str:
    s = report["settings"]
    lines = [
        f"# Evaluation of {report['model']}",
        "",
        f"Sampling: temperature {s['temperature']}, top-p {s['top_p']}, at most {s['max_new_tokens']} new "
        f"tokens, {s['num_samples']} sample(s) per problem, seed {s['seed']}"
        + (f", first {s['limit']} problems" if s["limit"] else "")
        + ".",
        "",
        "| suite | problems | accuracy (± s.e.) | pass@k | exact match | BLEU-4 | ROUGE-L | truncated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, suite in report["suites"].items():
        if "accuracy" not in suite:
            continue
        pass_k = ", ".join(f"@{k} {pct(v)}" for k, v in suite["pass_at_k"].items())
        lines.append(
            f"| {name} | {suite['problems']} | {pct(suite['accuracy'])} ± {pct(suite['accuracy_stderr'])} "
            f"| {pass_k} | {pct(suite['exact_match'])} | {_num(suite.get('bleu4'), 1)} "
            f"| {_num(suite.get('rouge_l'))} | {pct(suite['truncated'])} |"
        )
        if suite["unparseable_golds"]:
            lines.append(
                f"\n{suite['unparseable_golds']} gold answers of {name} could not be parsed and "
                f"scored 0: {suite['unparseable_gold_examples']}\n"
            )
    for suite in report["suites"].values():
        if "perplexity" in suite:
            lines += [
                "",
                f"Perplexity: **{suite['perplexity']:.3f}** on {suite['texts']} texts from {suite['source']}.",
            ]
    speed_rows = [
        (name, suite.get("speed") or suite)
        for name, suite in report["suites"].items()
        if "speed" in suite or name == "speed"
    ]
    if speed_rows:
        lines += [
            "",
            "| suite | requests | tokens/s | TTFT p50 | TTFT p95 | inter-token |",
            "|---|---|---|---|---|---|",
        ]
        for name, speed in speed_rows:
            lines.append(
                f"| {name} | {speed['requests']} | {speed['tokens_per_second']:.1f} | "
                f"{_num(speed['ttft_p50'])} s | {_num(speed['ttft_p95'])} s | "
                f"{_num(None if speed['itl_mean'] is None else 1000 * speed['itl_mean'], 1)} ms |"
            )
    lines += [""] + [f"![{p.stem}]({p.relative_to(out_dir)})" for p in plots]
    for name, suite in report["suites"].items():
        for example in suite.get("examples", []):
            lines += [
                "",
                f"**{name} {example['id']}** ({'correct' if example['correct'] else 'wrong'}, "
                f"gold `{example['gold']}`)",
                "",
                f"> {example['prompt'][:300]}",
                "",
            ]
            if example["reasoning"]:
                lines += [
                    f"<details><summary>reasoning</summary>\n\n{example['reasoning'][:1500]}\n\n</details>",
                    "",
                ]
            lines.append(f"Answer: {example['answer'][:500]}")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path, *, curves_from: str | Path | None = None) -> None:
    plots = _plots(report, out_dir, Path(curves_from) if curves_from else None)
    report["plots"] = [str(p.relative_to(out_dir)) for p in plots]
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "report.md").write_text(_markdown(report, plots, out_dir), encoding="utf-8")


def load_report(path: str | Path) -> dict:
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no report.json (an `r1kit eval` output folder)")
    return json.loads(file.read_text())


def compare(path_a: str | Path, path_b: str | Path) -> str:
    """A Markdown table of two reports' headline figures, with the difference."""
    a, b = headline(load_report(path_a)), headline(load_report(path_b))
    lines = [f"| metric | {path_a} | {path_b} | B − A |", "|---|---|---|---|"]
    for key in list(a) + [k for k in b if k not in a]:
        va, vb = a.get(key), b.get(key)
        percent = "accuracy" in key or "pass@" in key
        show = (lambda v: pct(v)) if percent else (lambda v: _num(v, 3))
        diff = (
            "–"
            if va is None or vb is None
            else (f"{100 * (vb - va):+.1f} pts" if percent else f"{vb - va:+.3f}")
        )
        lines.append(f"| {key} | {show(va)} | {show(vb)} | {diff} |")
    return "\n".join(lines)
