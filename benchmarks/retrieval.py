"""How often retrieval hands the agent a memory of the right procedure: type precision@k of a memory bank.

For each task of a split, retrieve the top-k memories (its own game excluded, as in evaluation) and count how many
are of the task's type, with the paper's ``similarity`` retrieval and with ``same_type``.

Usage: python benchmarks/retrieval.py BANK [BANK ...] [--split valid_unseen] [--k 1 2 4] [--name NAME]
Writes results/retrieval-<name>.json and .md (default name: the split).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from duomem.envs.alfworld_data import load_tasks
from duomem.envs.base import TASK_TYPES
from duomem.memory.bank import RETRIEVALS, MemoryBank

HERE = Path(__file__).resolve().parent


def type_precision(bank: MemoryBank, split: str, k: int, retrieval: str) -> dict:
    retriever = bank.retriever(k, retrieval)  # type: ignore[arg-type]
    hits: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_id = {e.id: e for e in bank.entries}
    for task in load_tasks(split):
        ids = [mid for mid, _ in retriever.retrieve_for(task)]
        total[task.task_type] += len(ids)
        hits[task.task_type] += sum(by_id[i].task_type == task.task_type for i in ids)
    return {"precision": sum(hits.values()) / max(1, sum(total.values())),
            "per_type": {t: hits[t] / total[t] for t in TASK_TYPES if total[t]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("banks", nargs="+", type=Path)
    ap.add_argument("--split", default="valid_unseen")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    rows = []
    for path in args.banks:
        bank = MemoryBank.load(path)
        for k in args.k:
            for retrieval in RETRIEVALS:
                r = type_precision(bank, args.split, k, retrieval)
                rows.append({"bank": str(path), "writers": bank.manifest.get("writers"), "n_entries": len(bank.entries),
                             "embedder": bank.manifest.get("embedder"), "split": args.split, "k": k,
                             "retrieval": retrieval, **r})
    name = args.name or args.split
    out = HERE / "results" / f"retrieval-{name}"
    out.with_suffix(".json").write_text(json.dumps({"command": "python benchmarks/retrieval.py " + " ".join(
        str(b) for b in args.banks) + f" --split {args.split}", "rows": rows}, indent=2))
    lines = ["| bank (writer, entries) | k | retrieval | type precision | " + " | ".join(TASK_TYPES) + " |",
             "|---|---|---|---|" + "---|" * len(TASK_TYPES)]
    for r in rows:
        per = " | ".join(f"{100 * r['per_type'][t]:.0f}%" if t in r["per_type"] else "-" for t in TASK_TYPES)
        lines.append(f"| {', '.join(r['writers'] or ['-'])}, {r['n_entries']} | {r['k']} | {r['retrieval']} | "
                     f"{100 * r['precision']:.1f}% | {per} |")
    out.with_suffix(".md").write_text(f"Type precision@k of retrieval on {args.split} "
                                      f"({len(load_tasks(args.split))} tasks).\n\n" + "\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
