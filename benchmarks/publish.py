"""Copy each finished run's summary (and a pipeline run's report) into benchmarks/results/.

Usage: python benchmarks/publish.py [RUN_DIR ...]   (default: every folder in benchmarks/runs/)
A run's summary.json becomes results/<run name>.json and its summary.md results/<run name>.md; a pipeline
output folder (with report.json) is copied as results/<run name>/{report.json,report.md,*.png}.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def publish(run: Path) -> None:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    if (run / "report.json").is_file():
        dest = results / run.name
        dest.mkdir(exist_ok=True)
        for f in ["report.json", "report.md", *[p.name for p in run.glob("*.png")]]:
            shutil.copy2(run / f, dest / f)
        print(f"{run} -> {dest}")
        return
    summary = run / "summary.json"
    if not summary.is_file():
        print(f"skip {run}: no summary.json")
        return
    data = json.loads(summary.read_text())
    if not data.get("complete", True):
        print(f"note {run}: partial ({data['n_episodes']}/{data.get('n_planned')} episodes)")
    shutil.copy2(summary, results / f"{run.name}.json")
    shutil.copy2(run / "summary.md", results / f"{run.name}.md")
    print(f"{run} -> {results / run.name}.json")


if __name__ == "__main__":
    runs = [Path(a) for a in sys.argv[1:]] or sorted(p for p in (HERE / "runs").iterdir() if p.is_dir())
    for r in runs:
        publish(r)
