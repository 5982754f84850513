"""Where memories help or hurt: a memory row against its no-memory twin, game by game, split by what retrieval
handed the agent (memories of the task's own type only, or at least one of another type).

Usage: python benchmarks/memory_effect.py MEMORY_RUN PLAIN_RUN --bank BANK [--name NAME]
Writes results/memory-effect-<name>.{json,md}. MEMORY_RUN's records name the memories each episode read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duomem.eval.stats import compare
from duomem.jsonl import atomic_write_json, atomic_write_text, read_jsonl

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("memory_run", type=Path)
    parser.add_argument("plain_run", type=Path)
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--name", default="valid_unseen")
    args = parser.parse_args()
    types = {e["id"]: e["task_type"] for e in read_jsonl(args.bank / "memories.jsonl")}
    memory = {r["game_id"]: r for r in read_jsonl(args.memory_run / "episodes.jsonl")}
    plain = {r["game_id"]: r["won"] for r in read_jsonl(args.plain_run / "episodes.jsonl")}
    groups: dict[str, list[str]] = {"every memory of the task's type": [], "a memory of another type": []}
    for game, r in memory.items():
        wrong = any(types[m] != r["task_type"] for m in r["memory_ids"])
        groups["a memory of another type" if wrong else "every memory of the task's type"].append(game)
    rows = []
    for label, games in groups.items():
        cmp = compare({g: memory[g]["won"] for g in games}, {g: plain[g] for g in games})
        rows.append({"retrieved": label, **cmp})
    result = {"memory_run": str(args.memory_run), "plain_run": str(args.plain_run), "bank": str(args.bank),
              "rows": rows, "command": "python benchmarks/memory_effect.py " + " ".join(
                  [str(args.memory_run), str(args.plain_run), "--bank", str(args.bank), "--name", args.name])}
    atomic_write_json(HERE / "results" / f"memory-effect-{args.name}.json", result)
    lines = [f"# Memory row against its no-memory twin, by what retrieval returned ({args.name})", "",
             "| retrieved | games | memory row won | no-memory row won | won with memory only | won without only | "
             "p (McNemar) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['retrieved']} | {r['n_games']} | {r['won_a']} | {r['won_b']} | {r['a_only']} | "
                     f"{r['b_only']} | {r['p_value']:.3f} |")
    lines += ["", f"Command: `{result['command']}`"]
    atomic_write_text(HERE / "results" / f"memory-effect-{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
