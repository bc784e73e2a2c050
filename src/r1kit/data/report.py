"""The data stage's report: `report.json` for machines, `report.md` for people."""

from __future__ import annotations

import json
from pathlib import Path

from r1kit.config import DataConfig


def write_report(
    out_dir: Path,
    counts: dict,
    *,
    files: list[str],
    cfg: DataConfig,
    warnings: list[str],
    timings: dict[str, float],
    seconds: float,
) -> dict:
    assert counts["input_records"] == counts["kept"] + sum(counts["rejected"].values())
    report = {
        "input_files": files,
        **counts,
        "warnings": warnings,
        "seconds": round(seconds, 3),
        "records_per_second": round(counts["input_records"] / seconds, 1) if seconds > 0 else None,
        "stage_seconds": timings,
        "config": cfg.model_dump(mode="json"),
    }
    (out_dir / "report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text(_markdown(report), encoding="utf-8")
    return report


def _markdown(report: dict) -> str:
    total = report["input_records"] or 1
    lines = [
        "# Data cleaning report",
        "",
        f"- input records: **{report['input_records']}** from {len(report['input_files'])} file(s)",
        f"- kept: **{report['kept']}** ({100 * report['kept'] / total:.1f}%): "
        f"train {report['splits']['train']}, validation {report['splits']['validation']}",
        f"- rejected: **{sum(report['rejected'].values())}**",
        f"- time: {report['seconds']} s ({report['records_per_second']} records/s)",
        "",
        "## Rejected, by reason",
        "",
        "| reason | records | share | examples |",
        "|---|---:|---:|---|",
    ]
    for reason, count in report["rejected"].items():
        examples = "; ".join(f"`{e['source']}` {e['detail']}" for e in report["examples"].get(reason, [])[:2])
        examples = examples.replace("|", "\\|")  # a pipe would end the table cell
        lines.append(f"| {reason} | {count} | {100 * count / total:.1f}% | {examples} |")
    lines += ["", "## Rejected, by stage", "", "| stage | records |", "|---|---:|"]
    lines += [f"| {stage} | {count} |" for stage, count in report["rejected_by_stage"].items()]
    if report.get("modified"):
        lines += ["", "## Modified, by stage (records whose text a stage rewrote)", ""]
        lines += ["| stage | records | examples |", "|---|---:|---|"]
        for stage, count in report["modified"].items():
            shown = "; ".join(
                f"`{e['source']}` {e['detail']}" for e in report["modified_examples"][stage][:2]
            )
            lines.append(f"| {stage} | {count} | {shown.replace('|', chr(92) + '|')} |")
    if report["quality_levels"]:
        lines += ["", "## Quality levels of kept records", "", "| level | records |", "|---|---:|"]
        lines += [f"| {level} | {count} |" for level, count in report["quality_levels"].items()]
    if report.get("toxicity_scored"):
        lines += [
            "",
            f"{report['toxicity_scored']} kept record(s) hold blocklisted terms below the rejection threshold; "
            "their score is in the `toxicity` column.",
        ]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += [
        "",
        "Every rejected record is in `rejected.jsonl` with its source, stage, reason and detail.",
        "",
    ]
    return "\n".join(lines)
