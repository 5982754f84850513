"""The shipped students' LoRAs stored at q8_0 (issue 26): is their valid_unseen row unchanged?

Usage:
  python benchmarks/adapter_q8.py export                          # runs/q8/<student>/adapter.gguf from the shipped f16
  python benchmarks/adapter_q8.py eval --students smollm2-135m-lora [--workers 2]
  python benchmarks/adapter_q8.py report                          # results/adapter-q8.{json,md}

Each shipped GGUF LoRA is read back into a peft folder (``duomem.llm.lora_gguf``; written again at f16 it is the
same file, byte for byte) and written with ``duomem distill export --dtype q8_0`` (``lora_a`` at q8_0, ``lora_b``
f16). Each row is played with the settings of the student's committed valid_unseen row (llama.cpp, greedy, free
play, 50 steps, two few-shot examples; the DuoMem student with its shipped bank, top-2) and paired with that row.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / "runs" / "q8"
RUNS = HERE / "runs" / "adapter-q8" / "valid_unseen"
RESULTS = HERE / "results"
STUDENTS = {
    "smollm2-135m-lora": HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_lora-1eb8f8a04d1f",
    "smollm2-135m-duomem": HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_duomem-df6778a503fa",
}
"""Shipped student -> its committed f16 row on valid_unseen (the same adapter, exported before it was shipped)."""


def q8_adapter(student: str) -> Path:
    return WORK / student / "adapter.gguf"


def export() -> None:
    from duomem.distill.export import export_gguf_lora
    from duomem.eval.students import get_student
    from duomem.llm.lora_gguf import peft_folder_for

    for student in STUDENTS:
        shipped = get_student(student)
        peft = peft_folder_for(Path(shipped.adapter_path), shipped.base_model)
        info = export_gguf_lora(peft, q8_adapter(student), base_model=shipped.base_model, dtype="q8_0")
        print(f"{student}: {Path(shipped.adapter_path).stat().st_size} bytes at f16 -> {info['bytes']} at q8_0")


def evaluate(students: list[str], workers: int) -> None:
    from duomem.eval.students import get_student

    for student in students:
        shipped = get_student(student)
        cmd = ["duomem", "eval", "--model", shipped.base_model, "--backend", "llamacpp",
               "--adapter", str(q8_adapter(student).relative_to(ROOT)), "--split", "valid_unseen",
               "--workers", str(workers), "--out", str((RUNS / student).relative_to(ROOT)), "--name",
               f"{student}-q8_0", "--no-progress"]
        if shipped.bank_path:
            cmd += ["--memory", str(Path(shipped.bank_path).relative_to(ROOT)), "--top-k", "2"]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def report() -> Path:
    from duomem.eval.runner import load_records
    from duomem.eval.stats import compare
    from duomem.eval.summary import pct_ci, summarize
    from duomem.jsonl import atomic_write_json, atomic_write_text

    rows = []
    for student, f16_path in STUDENTS.items():
        q8 = load_records(RUNS / student) if (RUNS / student).is_dir() else []
        if not q8:
            continue
        played = {r.game_id for r in q8}
        f16 = [r for r in load_records(f16_path) if r.game_id in played]  # the same games
        a, b = summarize(q8, f"{student}-q8_0", "llm", "smollm2-135m", "valid_unseen"), \
            summarize(f16, student, "llm", "smollm2-135m", "valid_unseen")
        rows.append({"student": student, "q8_0": {k: v for k, v in a.items() if k != "outcomes"},
                     "f16": {k: v for k, v in b.items() if k != "outcomes"}, "complete": len(q8) >= 134,
                     "records": str((RUNS / student).relative_to(ROOT)), "f16_records": str(f16_path.relative_to(ROOT)),
                     "adapter_bytes": {"q8_0": q8_adapter(student).stat().st_size if q8_adapter(student).is_file()
                                       else None},
                     "paired": compare(a["outcomes"], b["outcomes"])})
    atomic_write_json(RESULTS / "adapter-q8.json", {
        "benchmark": "shipped LoRAs at q8_0 (issue 26)", "split": "valid_unseen",
        "command": "python benchmarks/adapter_q8.py export && python benchmarks/adapter_q8.py eval && "
                   "python benchmarks/adapter_q8.py report", "rows": rows})
    lines = ["# Shipped LoRAs at q8_0", "", "valid_unseen, llama.cpp on 2 CPU cores, the committed f16 row's settings. "
             "Both rows on the same games (the f16 row's records, of the games the q8_0 row has played). Paired: "
             "games won by the q8_0 row only / by the f16 row only, exact McNemar p.", "",
             "| student | games | q8_0 % [95% CI] | f16 % [95% CI] | q8_0 only / f16 only | p |", "|---|---|---|---|---|---|"]
    for r in rows:
        c = r["paired"]
        n = f"{c['n_games']}" + ("" if r["complete"] else " (partial)")
        lines.append(f"| {r['student']} | {n} | {pct_ci(r['q8_0'])} | {pct_ci(r['f16'])} | {c['a_only']} / "
                     f"{c['b_only']} | {c['p_value']:.3f} |")
    atomic_write_text(RESULTS / "adapter-q8.md", "\n".join(lines) + "\n")
    return RESULTS / "adapter-q8.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("export")
    p = sub.add_parser("eval")
    p.add_argument("--students", default=",".join(STUDENTS))
    p.add_argument("--workers", type=int, default=2)
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "export":
        export()
    elif args.command == "eval":
        evaluate(args.students.split(","), args.workers)
    else:
        print(report())


if __name__ == "__main__":
    main()
