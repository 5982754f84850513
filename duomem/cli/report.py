"""``duomem report``: rebuild a DuoMem report from published episode records; and the report in the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from duomem.envs.base import TASK_TYPES
from duomem.eval.summary import interval, pct

console = Console()

SHORT = {"own_memory": "own memory", "teacher_memory": "teacher memory", "lora_own_memory": "LoRA + own memory",
         "duomem": "DuoMem"}
"""Row names short enough for a terminal; the Markdown report has the long ones."""


def _short(name: str) -> str:
    from duomem.pipeline.report import label

    return SHORT.get(name, label(name))


def _ci(entry: dict) -> str:
    low, high = interval(entry)
    return f"{pct(low)}-{pct(high)}"


def _cell(entry: dict | None) -> str:
    """A success rate over its 95% interval (whole points), on two lines so that the columns stay narrow."""
    if entry is None:
        return "-"
    low, high = interval(entry)
    return f"{pct(entry['success_rate'])}\n[dim]{100 * low:.0f}-{100 * high:.0f}[/dim]"


def success_table(report: dict) -> Table:
    """Overall success with its 95% interval, the paper's figure and each row's time per episode."""
    from duomem.pipeline.report import paper_rate

    table = Table(title=f"success on {report['eval']['n_games']} games of {report['eval']['split']}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for head in ("configuration", "n", "success %", "95% CI", "paper %", "s/episode"):
        table.add_column(head, justify="left" if head == "configuration" else "right",
                         style="bold" if head == "success %" else None,
                         no_wrap=head in ("configuration", "95% CI"))
    for name, s in report["configs"].items():
        table.add_row(_short(name) + ("" if s.get("complete", True) else "*"), str(s["n_episodes"]),
                      pct(s["success_rate"]), _ci(s), pct(paper_rate(name)), f"{s['wall_s_per_episode']:.1f}")
    return table


def type_table(report: dict) -> Table:
    """Success per task type, each over its 95% interval."""
    configs: dict[str, dict] = report["configs"]
    types = [t for t in TASK_TYPES if any(t in s["per_type"] for s in configs.values())]
    table = Table(title="success % per task type (95% Wilson interval below)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    table.add_column("configuration", no_wrap=True)
    for t in types:
        table.add_column(t, justify="right", overflow="fold")
    for name, s in configs.items():
        table.add_row(_short(name), *[_cell(s["per_type"].get(t)) for t in types])
    return table


def paired_table(report: dict) -> Table:
    from duomem.pipeline.report import p_value

    table = Table(title="A against B on the same games: games won by A only, by B only; difference in points; "
                        "exact McNemar p", title_justify="left", box=box.SIMPLE_HEAD)
    for head in ("A", "B", "A only", "B only", "A - B", "95% CI", "p"):
        table.add_column(head, justify="left" if head in ("A", "B") else "right")
    for p in report.get("paired") or []:
        ci = p["difference_ci95"]
        table.add_row(_short(p["a"]), _short(p["b"]), str(p["a_only"]), str(p["b_only"]),
                      f"{100 * p['difference']:+.1f}", f"{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}" if ci else "-",
                      p_value(p["p_value"]))
    return table


def print_report(out: Console, markdown: Path) -> None:
    """The report's tables as rich tables (they fit the terminal), its gap line, and where the full report is."""
    from duomem.pipeline.report import gap_text

    report = json.loads((Path(markdown).parent / "report.json").read_text())
    if report["configs"]:
        out.print(success_table(report))
        out.print(type_table(report))
        if report.get("paired"):
            out.print(paired_table(report))
        if gap := gap_text(report):
            out.print(gap, highlight=False)
    out.print(f"[bold]report:[/bold] {markdown} (costs, artefacts, k sweep and plots beside it)", highlight=False)


def report_command(
    records: Annotated[Path, typer.Argument(help="A published records folder: report_inputs.json and one "
                                                 "eval_<row>-<key>/ folder per row (e.g. "
                                                 "benchmarks/runs/duomem-valid_unseen).")],
    out: Annotated[Path | None, typer.Option(help="Where report.json, report.md and the plots go (default: the "
                                                  "records folder).")] = None,
) -> None:
    """Rebuild a DuoMem report (intervals, paired comparisons, plots) from published episode records. A
    pipeline's own output folder is reported by `duomem run CONFIG --report-only`."""
    from duomem.pipeline.report import report_from_records, write_report_files

    print_report(console, write_report_files(report_from_records(records), out or records))
