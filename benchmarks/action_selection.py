"""Action selection (issue 13): {free, grammar, score} x {no adapter, plain LoRA} for the packaged 135M student.

Usage:
  python benchmarks/action_selection.py run --split valid_seen --student lora --modes free,score,score-mean,grammar
  python benchmarks/action_selection.py run --split valid_unseen --student lora --modes grammar,score-chosen
  python benchmarks/action_selection.py run --split valid_unseen --student base --modes free,grammar,score-chosen
  python benchmarks/action_selection.py report          # results/action-selection.{json,md}

Each row is one `duomem eval` (llama.cpp, greedy, 50 steps, 2 workers of one thread) whose records go to
runs/action-selection/<split>/<student>-<mode>/; rerunning resumes. ``score`` sums the command's token
log-probabilities, ``score-mean`` averages them; ``score-chosen`` is whichever of the two won more valid_seen
games with the LoRA student, on the games both played (a tie keeps ``sum``, the earlier default): the norm is never
chosen on valid_unseen.
Rows that the table shares with other benchmarks are read from there (``SHARED``) instead of being played twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from duomem.eval.runner import load_records
from duomem.eval.stats import compare
from duomem.eval.summary import pct, pct_ci, summarize
from duomem.jsonl import atomic_write_json, atomic_write_text, jsonl_exists, read_jsonl
from duomem.pipeline.report import summary_from_records

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs" / "action-selection"
RESULTS = HERE / "results"
TYPES = ("pick", "clean", "heat", "cool", "examine", "pick_two")
STUDENTS = {
    "base": ["--model", "smollm2-135m"],
    "lora": ["--model", "smollm2-135m", "--adapter", "adapters/smollm2-135m-lora/adapter.gguf"],
}
"""``lora``: the shipped plain-LoRA student (the full-scale pipeline's ``lora`` row, whose 134 valid_unseen records
it reproduces exactly; benchmarks/README section 10)."""
MODES = {
    "free": ["--actions", "free"],
    "grammar": ["--actions", "grammar"],
    "score": ["--actions", "score", "--score-norm", "sum"],
    "score-mean": ["--actions", "score", "--score-norm", "mean"],
}
SHARED = {
    ("valid_unseen", "lora-free"): HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_lora-1eb8f8a04d1f",
}
"""Rows played elsewhere with the same settings: the full-scale pipeline's plain-LoRA row (free actions)."""
PAIRS = [("lora-score", "lora-free"), ("lora-grammar", "lora-free"), ("lora-score", "lora-grammar"),
         ("base-score", "base-free"), ("base-grammar", "base-free"), ("lora-free", "base-free")]
"""Paired comparisons the issue asks about (each one with a ``score`` row is also made with its ``score-mean`` row)."""


def folder(split: str, row: str) -> Path:
    return SHARED.get((split, row), RUNS / split / row)


def _summary(split: str, row: str) -> dict | None:
    """The row's summary; a row stopped before its end (no summary.json) is summarised from the records it has,
    marked incomplete."""
    path = folder(split, row)
    if (path / "summary.json").is_file():
        return summary_from_records(path)
    if not jsonl_exists(path / "episodes.jsonl"):
        return None
    records = load_records(path)
    if not records:
        return None
    spec = json.loads((path / "run.json").read_text())["spec"]
    summary = summarize(records, row, spec["policy"], spec["model"], split)
    day = time.strftime("%Y-%m-%d", time.gmtime(max(r.ended_at for r in records)))
    return {**summary, "complete": False, "action_selection": spec["action_selection"],
            "score_norm": spec["score_norm"], "date": day}


def chosen_norm() -> str:
    """``score`` or ``score-mean``: the one that won more of the valid_seen games both played with the LoRA student
    (paired; a tie keeps sum). The sum row must be complete; a partial mean row is compared on the games it played
    (until 2026-12-02 it had 52 of 140, which chose sum for the valid_unseen rows; finished, it chooses mean)."""
    s, m = _summary("valid_seen", "lora-score"), _summary("valid_seen", "lora-score-mean")
    if s is None or m is None or not s.get("complete", True):
        raise SystemExit("error: the norm is chosen on valid_seen: run --split valid_seen --student lora "
                         "--modes score,score-mean first")
    both = compare(m["outcomes"], s["outcomes"])
    return "score-mean" if both["a_only"] > both["b_only"] else "score"


def run(split: str, student: str, modes: list[str], workers: int) -> None:
    for mode in modes:
        mode = chosen_norm() if mode == "score-chosen" else mode
        if mode not in MODES:
            raise SystemExit(f"error: unknown mode {mode!r}; choose from {', '.join(MODES)} or score-chosen")
        row = f"{student}-{mode}"
        if (split, row) in SHARED:
            print(f"{row} on {split}: shared with {SHARED[split, row]}, not played again")
            continue
        cmd = ["duomem", "eval", *STUDENTS[student], *MODES[mode], "--split", split, "--workers", str(workers),
               "--out", str(RUNS / split / row), "--name", f"{row}-{split}", "--no-progress"]
        print(" ".join(cmd), flush=True)
        done = subprocess.run(cmd)
        if done.returncode != 0:
            sys.exit(done.returncode)


def _row(split: str, row: str, summary: dict) -> dict:
    records = read_jsonl(folder(split, row) / "episodes.jsonl")
    steps = sum(r["steps"] for r in records)
    llm_s = sum(r["llm_s"] for r in records)
    speed_path = folder(split, row) / "speed.json"
    # a partial row's summary is made here, so only a finished row's names the machine that played it
    machine = (summary.get("host") or {}) if summary.get("complete", True) else {}
    predicted = None
    if speed_path.is_file():  # raw llama.cpp rates of the run's own machine: prefill for prompt and candidates
        speed = json.loads(speed_path.read_text())
        predicted = (sum(r["prompt_tokens"] - r["cached_prompt_tokens"] + r["scored_tokens"] for r in records)
                     / speed["prompt_tokens_per_s"]
                     + sum(r["completion_tokens"] for r in records) / speed["decode_tokens_per_s"])
    return {
        "row": row, "split": split, "student": row.split("-")[0],
        "action_selection": summary["action_selection"], "score_norm": summary.get("score_norm"),
        "n_episodes": summary["n_episodes"], "n_won": summary["n_won"], "complete": summary.get("complete", True),
        "success_rate": summary["success_rate"], "success_ci95": summary["success_ci95"],
        "per_type": summary["per_type"], "invalid_action_rate": summary["invalid_action_rate"],
        "invalid_actions": sum(r["invalid_actions"] for r in records),
        "mean_steps": summary["mean_steps"], "wall_s_per_episode": summary["wall_s_per_episode"],
        "model_s_per_step": llm_s / steps if steps else None,
        "model_time_vs_raw": llm_s / predicted if predicted else None,
        "evaluated_tokens_per_step": sum(r["prompt_tokens"] - r["cached_prompt_tokens"] + r["completion_tokens"]
                                         + r["scored_tokens"] for r in records) / steps if steps else None,
        "records": str(folder(split, row).relative_to(HERE.parent)),
        "command": _command(split, row),
        "date": summary.get("date"),
        "processor": machine.get("processor"),
        "cpus": machine.get("cpus"),
    }


def _command(split: str, row: str) -> str:
    if (split, row) in SHARED:
        return "duomem run configs/full-smollm2-135m.yaml (its lora row, benchmarks/README section 10)"
    student, mode = row.split("-", 1)
    return f"python benchmarks/action_selection.py run --split {split} --student {student} --modes {mode}"


def report() -> None:
    rows: list[dict] = []
    summaries: dict[tuple[str, str], dict] = {}
    for split in ("valid_seen", "valid_unseen"):
        names = sorted({p.name for p in (RUNS / split).iterdir() if p.is_dir()} if (RUNS / split).is_dir() else set())
        names += [row for (s, row) in SHARED if s == split]
        for row in sorted(set(names)):
            summary = _summary(split, row)
            if summary is not None:
                summaries[split, row] = summary
                rows.append(_row(split, row, summary))
    try:
        norm = chosen_norm()
    except SystemExit:
        norm = None
    by = {(r["split"], r["row"]): r for r in rows}
    paired = []
    for split in ("valid_seen", "valid_unseen"):
        # each comparison with a score row is made for both norms' rows, where they were played
        means = [tuple(x + "-mean" if x.endswith("score") else x for x in pair) for pair in PAIRS]
        for a, b in dict.fromkeys([*PAIRS, *means, ("lora-score-mean", "lora-score")]):
            if (split, a) in by and (split, b) in by:
                oa, ob = summaries[split, a]["outcomes"], summaries[split, b]["outcomes"]
                partial = not (by[split, a]["complete"] and by[split, b]["complete"])
                paired.append({"split": split, "a": a, "b": b, "partial": partial, **compare(oa, ob)})
    result = {"student": "smollm2-135m (Q4_1, llama.cpp)", "chosen_score_norm": norm and
              ("mean" if norm == "score-mean" else "sum"), "chosen_on": "valid_seen, lora student", "rows": rows,
              "paired": paired}
    atomic_write_json(RESULTS / "action-selection.json", result)
    atomic_write_text(RESULTS / "action-selection.md", markdown(result))
    print(f"{len(rows)} rows, {len(paired)} comparisons -> {RESULTS / 'action-selection.md'}")


def _played_on(row: dict) -> str:
    """The row's date, and its machine where its summary names one (``x86_64`` alone names none)."""
    cpu = row.get("processor")
    if not cpu or cpu == "x86_64":
        return row["date"]
    return f"{row['date']}, {cpu}" + (f" ({row['cpus']} CPUs)" if row.get("cpus") else "")


def markdown(result: dict) -> str:
    lines = ["# Action selection: smollm2-135m, llama.cpp, greedy, 50 steps", "",
             f"Score norm chosen on {result['chosen_on']}: **{result['chosen_score_norm'] or 'not yet'}**.", "",
             "| split | row | n | success % [95% CI] | " + " | ".join(TYPES)
             + " | invalid actions (rate) | steps | s/episode | model s/step | tokens evaluated/step "
             "| model time / raw llama.cpp | played on |", "|---" * (11 + len(TYPES)) + "|"]
    for r in result["rows"]:
        per = " | ".join(pct(r["per_type"][t]["success_rate"]) if t in r["per_type"] else "-" for t in TYPES)
        part = "" if r["complete"] else " (partial)"
        lines.append(f"| {r['split']} | {r['row']}{part} | {r['n_episodes']} | {pct_ci(r)} | {per} | "
                     f"{r['invalid_actions']} ({pct(r['invalid_action_rate'])}%) | {r['mean_steps']:.1f} | "
                     f"{r['wall_s_per_episode']:.1f} | {r['model_s_per_step']:.2f} | "
                     f"{r['evaluated_tokens_per_step']:.0f} | "
                     + (f"{r['model_time_vs_raw']:.2f}x" if r["model_time_vs_raw"] else "-") + f" | {_played_on(r)} |")
    lines += ["", "Paired on the same games (exact McNemar test on the games one row wins and the other loses):", "",
              "| split | A | B | games | won by A only | won by B only | A - B, points [95% CI] | p |",
              "|---" * 8 + "|"]
    for p in result["paired"]:
        ci = p["difference_ci95"]
        diff = f"{100 * p['difference']:+.1f}" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")
        games = f"{p['n_games']}" + (" (a partial row's)" if p["partial"] else "")
        lines.append(f"| {p['split']} | {p['a']} | {p['b']} | {games} | {p['a_only']} | {p['b_only']} | {diff} | "
                     f"{p['p_value']:.3f} |")
    lines += ["", "A partial row stopped before the end of its split (it resumes from its records); its games are the "
              "first of the split in the runner's order, not a sample of it, so its rate and comparisons are not "
              "the split's.", "",
              "Rows dated 2026-11-25 ran on the machine of benchmarks/README section 10; rows dated 2026-12-01 "
              "or later whose 'played on' names no processor ran on the slower Xeon of section 11 (2.5x slower "
              "decode); a row naming its processor ran there (its summary records it). Each had other work on "
              "the same two cores: compare seconds only between rows of one machine. The ratio to raw "
              "llama.cpp uses the run's own probe (prompt and candidate tokens at its prefill rate, completion "
              "tokens at its decode rate). Success rates do not depend on the machine (greedy decoding: the shipped LoRA student "
              "replays the 2026-11-25 row's 134 games identically).", "", "Commands:", ""]
    lines += sorted({f"- `{r['command']}`" for r in result["rows"]})
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="play rows (resumable)")
    p.add_argument("--split", required=True, choices=("valid_seen", "valid_unseen"))
    p.add_argument("--student", required=True, choices=tuple(STUDENTS))
    p.add_argument("--modes", required=True, help="comma-separated: free, grammar, score, score-mean, score-chosen")
    p.add_argument("--workers", type=int, default=2)
    sub.add_parser("report", help="write results/action-selection.{json,md} from the finished rows")
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.split, args.student, args.modes.split(","), args.workers)
    else:
        report()
