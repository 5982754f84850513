"""Copy each finished run's summary (and a pipeline run's records and report) into benchmarks/.

Usage: python benchmarks/publish.py [RUN_DIR ...] [--as NAME]   (default: every folder in benchmarks/runs/)
A run's summary, recomputed from its episodes.jsonl (95% intervals included, per-game outcomes left out), becomes
results/<run name>.json and results/<run name>.md. For a pipeline
output folder (with report.json), the records of the evaluation stages its report uses go to
runs/<NAME or run name>/<stage>/ with the report's settings and artefacts (report_inputs.json), so that a clone
has them, and the report is rebuilt from those published records into results/<NAME or run name>/ exactly as
`duomem report runs/<NAME> --out results/<NAME>` does. Published records are packed (``episodes.jsonl.xz``,
about 40x smaller; every reader takes the plain and packed forms, and resuming a packed run unpacks it first):
`python benchmarks/publish.py --pack-only` packs every plain JSONL file under benchmarks/runs/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from duomem.eval.summary import summary_markdown
from duomem.jsonl import atomic_write_json, atomic_write_text, pack_jsonl
from duomem.pipeline.report import (
    INPUTS,
    report_from_records,
    report_inputs,
    summary_from_records,
    write_report_files,
)

HERE = Path(__file__).resolve().parent
RECORDS = ("episodes.jsonl", "summary.json", "summary.md", "run.json", "inputs.json", "speed.json")
SAME = ("n_episodes", "success_rate", "wall_s_per_episode", "mean_steps")


def _same(a: object, b: object) -> bool:
    """Equal, floats up to the rounding of a different summation order."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _stage_of(run: Path, config: str, summary: dict) -> Path | None:
    """The evaluation stage folder whose summary is the report's row ``config``."""
    for stage in sorted((run / "stages").glob(f"eval_{config}-*")):
        path = stage / "summary.json"
        if path.is_file():
            data = json.loads(path.read_text())
            if all(_same(data.get(k), summary[k]) for k in SAME if k in summary):
                return stage
    return None


def publish_report(run: Path, name: str) -> None:
    records = HERE / "runs" / name
    report = json.loads((run / "report.json").read_text())
    rows = {**report.get("configs", {}), **{f"tune_teacher_memory_k{k}": s for k, s in report.get("k_sweep", {}).items()}}
    for config, summary in rows.items():
        stage = _stage_of(run, config, summary)
        if stage is None:
            print(f"note: no finished stage folder matches row {config}")
            continue
        out = records / stage.name
        out.mkdir(parents=True, exist_ok=True)
        for f in RECORDS:
            if (stage / f).is_file():
                shutil.copy2(stage / f, out / f)
        pack_jsonl(out / "episodes.jsonl")
        print(f"  {stage} -> {out}")
    atomic_write_json(records / INPUTS, report_inputs(report))
    dest = HERE / "results" / name
    print(f"{records} -> {write_report_files(report_from_records(records), dest)}")


def pack_all(root: Path = HERE / "runs") -> list[Path]:
    """Pack every plain JSONL file under ``root`` (records are committed packed)."""
    return [pack_jsonl(p) for p in sorted(root.rglob("*.jsonl"))]


def publish(run: Path, name: str | None = None) -> None:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    if (run / "report.json").is_file():
        publish_report(run, name or run.name)
        return
    if not (run / "summary.json").is_file():
        print(f"skip {run}: no summary.json")
        return
    data = summary_from_records(run)
    del data["outcomes"]  # the records are published beside it
    if not data.get("complete", True):
        print(f"note {run}: partial ({data['n_episodes']}/{data.get('n_planned')} episodes)")
    atomic_write_json(results / f"{run.name}.json", data)
    atomic_write_text(results / f"{run.name}.md", summary_markdown(data))
    print(f"{run} -> {results / run.name}.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--as", dest="name", help="results name for a single pipeline run")
    parser.add_argument("--pack-only", action="store_true", help="only pack the plain JSONL files under runs/")
    args = parser.parse_args()
    if args.pack_only:
        for path in pack_all():
            print(f"packed {path.relative_to(HERE)}")
        raise SystemExit(0)
    runs = args.runs or sorted(p for p in (HERE / "runs").iterdir() if p.is_dir() and (p / "summary.json").is_file())
    for r in runs:
        publish(r, args.name)
    pack_all()
