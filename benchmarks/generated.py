"""Are generated tasks as solvable and as hard as ALFWorld's? Collects the figures into results/generated-expert.json.

Inputs (the commands are in benchmarks/README.md, section 5):
  GEN          the task set from `duomem data generate` (its generation.json: counts and rejections)
  EXPERT_RUN   `duomem eval --policy expert --tasks GEN --split train` run folder
  STUDENT_RUN  optional: the student's run on GEN's test split (compared with results/<official student>.json)
  --compare LABEL RUN OFFICIAL  more pairs: a run on GEN's test split beside the same agent's official summary
               (a summary.json or a run folder), e.g. the LoRA student, which is off the floor where the
               no-memory student is not

Usage: python benchmarks/generated.py GEN EXPERT_RUN [STUDENT_RUN] [--official results/smollm2-135m-nomem-valid_unseen.json]
       [--compare LABEL RUN OFFICIAL ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEP = ("name", "policy", "model", "split", "n_episodes", "n_planned", "complete", "success_rate", "per_type",
        "mean_steps", "invalid_action_rate", "wall_s_per_episode", "peak_rss_mb", "game_source", "date")


def _summary(run: Path) -> dict:
    path = run if run.suffix == ".json" else run / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{run} has no summary.json; finish (or rerun) its `duomem eval` command first")
    data = json.loads(path.read_text())
    return {k: data[k] for k in KEEP if k in data}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gen", type=Path)
    ap.add_argument("expert_run", type=Path)
    ap.add_argument("student_run", type=Path, nargs="?")
    ap.add_argument("--official", type=Path, default=HERE / "results" / "smollm2-135m-nomem-valid_unseen.json")
    ap.add_argument("--compare", nargs=3, action="append", default=[], metavar=("LABEL", "RUN", "OFFICIAL"))
    args = ap.parse_args()
    generation = json.loads((args.gen / "generation.json").read_text())
    out: dict = {
        "generation": {k: generation[k] for k in ("generator", "seed", "verify", "splits", "rejected", "rejections",
                                                   "rejection_examples") if k in generation},
        "expert_on_generated_train": _summary(args.expert_run),
    }
    if args.student_run:
        out["student_on_generated_test"] = _summary(args.student_run)
        out["student_on_official_valid_unseen"] = _summary(args.official)
    if args.compare:
        out["comparisons"] = {label: {"generated_test": _summary(Path(run)), "official": _summary(Path(official))}
                              for label, run, official in args.compare}
    dest = HERE / "results" / "generated-expert.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    e = out["expert_on_generated_train"]
    print(f"expert on generated {e['split']}: {100 * e['success_rate']:.1f}% of {e['n_episodes']} "
          + " ".join(f"{t} {100 * v['success_rate']:.0f}%" for t, v in e["per_type"].items()))
    pairs = {label: (pair["generated_test"], pair["official"]) for label, pair in out.get("comparisons", {}).items()}
    if "student_on_generated_test" in out:
        pairs = {"student": (out["student_on_generated_test"], out["student_on_official_valid_unseen"]), **pairs}
    for label, (g, o) in pairs.items():
        print(f"{label}: generated test {100 * g['success_rate']:.1f}% ({g['n_episodes']} games) vs official "
              f"{o['split']} {100 * o['success_rate']:.1f}% ({o['n_episodes']} games)")
    print(f"-> {dest}")


if __name__ == "__main__":
    main()
