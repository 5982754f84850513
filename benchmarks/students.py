"""Student sizes (issue 29): the 0.5B and 1.5B students beside the 135M, on the full-scale teacher data.

Usage:
  python benchmarks/students.py sft --student qwen2.5-coder-0.5b                 # here: one SFT set per trained row
  python benchmarks/students.py train --student qwen2.5-coder-0.5b --device cuda  # on the GPU machine
  python benchmarks/students.py eval --student qwen2.5-coder-0.5b --rows nomem,teacher_memory [--workers 2]
  python benchmarks/students.py report                                            # results/students.{json,md}

Rows, as the 135M's committed rows (``results/smollm2-135m-valid_unseen``): ``nomem`` (the packaged model, two
few-shot examples), ``teacher_memory`` (the same with the shipped teacher bank: 600 memories by the ``plan`` writer,
top-2 by similarity), ``lora`` (a LoRA trained on the expert's 3,356 won train demonstrations), ``duomem`` (a LoRA
trained with the teacher memories in its prompts, played with them). The teacher's demonstrations and the SFT
recipe are those of ``benchmarks/search_context.py`` (rank 16, alpha 32, lr 2e-4, 8 x 2 examples a step); what
differs per student is in :data:`STUDENTS` (a larger student trains without few-shot examples in its prompts, a
third of the tokens, to fit the lent GPU's time). Play: llama.cpp, greedy, 50 steps, worker processes of one
thread; records in ``benchmarks/runs/<student>-<split>/<row>-<actions>/`` (a rerun resumes). No choice is made on
valid_unseen.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from search_context import BANK, demonstrations

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / "runs" / "students"
RESULTS = HERE / "results"
ROWS: dict[str, dict[str, bool]] = {
    "nomem": {"memory": False, "lora": False},
    "teacher_memory": {"memory": True, "lora": False},
    "lora": {"memory": False, "lora": True},
    "duomem": {"memory": True, "lora": True},
}
STUDENTS: dict[str, dict] = {
    "qwen2.5-coder-0.5b": {"lora_shots": 0, "epochs": 1},
    "qwen2.5-coder-1.5b": {"lora_shots": 0, "epochs": 1},
}
"""Per student: few-shot examples in the trained rows' prompts (SFT and play alike) and training epochs. Not tuned:
set by the lent GPU's time (30 minutes a session, the model's transfer included); the report says so."""
TRAIN = ["--rank", "16", "--alpha", "32", "--lr", "2e-4", "--max-length", "8192", "--batch-size", "8",
         "--grad-accum", "2", "--save-steps", "50"]
N_PLANNED = {"valid_seen": 140, "valid_unseen": 134}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def sft_dir(student: str, row: str) -> Path:
    return WORK / student / "sft" / row


def lora_dir(student: str, row: str) -> Path:
    return WORK / student / "lora" / row


def sft(student: str, rows: list[str]) -> None:
    from duomem.distill.dataset import build_dataset

    demos = demonstrations()
    for row in rows:
        out = sft_dir(student, row)
        if not ROWS[row]["lora"] or (out / "dataset.json").is_file():
            continue
        meta = build_dataset(demos, out, shots=STUDENTS[student]["lora_shots"],
                             memory=str(BANK) if ROWS[row]["memory"] else None, top_k=2, exclude="floor_plan")
        print(f"{student} {row}: {meta['examples']} examples -> {out}")


def train(student: str, rows: list[str], device: str, stop_after: float | None, max_steps: int | None) -> None:
    for row in rows:
        if not ROWS[row]["lora"]:
            continue
        out = lora_dir(student, row)
        cmd = ["duomem", "distill", "train", "--model", student, "--data", str(sft_dir(student, row)), "--out",
               str(out), "--device", device, "--epochs", str(STUDENTS[student]["epochs"]), *TRAIN]
        if stop_after:
            cmd += ["--stop-after", str(stop_after)]
        if max_steps:
            cmd += ["--max-steps", str(max_steps)]
        subprocess.run(cmd, check=True)
        if (out / "adapter_model.safetensors").is_file() and not (out / "adapter.gguf").is_file():
            subprocess.run(["duomem", "distill", "export", "--adapter", str(out)], check=True)


def records(student: str, split: str, row: str, actions: str) -> Path:
    return HERE / "runs" / f"{student}-{split}" / f"{row}-{actions}"


def evaluate(student: str, split: str, rows: list[str], actions: str, workers: int, games: int | None) -> None:
    for row in rows:
        r = ROWS[row]
        cmd = ["duomem", "eval", "--model", student, "--split", split, "--actions", actions, "--workers",
               str(workers), "--out", _rel(records(student, split, row, actions)), "--name", f"{row}-{actions}",
               "--no-progress"]
        if r["lora"]:
            cmd += ["--adapter", _rel(lora_dir(student, row) / "adapter.gguf"),
                    "--shots", str(STUDENTS[student]["lora_shots"])]
        if r["memory"]:
            cmd += ["--memory", _rel(BANK), "--top-k", "2"]
        if games:
            cmd += ["--games", str(games)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("sft", "train", "eval"):
        p = sub.add_parser(name)
        p.add_argument("--student", required=True, choices=STUDENTS)
        p.add_argument("--rows", default=",".join(ROWS))
    sub.choices["train"].add_argument("--device", default="cuda")
    sub.choices["train"].add_argument("--stop-after", type=float, default=None)
    sub.choices["train"].add_argument("--max-steps", type=int, default=None)
    sub.choices["eval"].add_argument("--split", default="valid_unseen", choices=N_PLANNED)
    sub.choices["eval"].add_argument("--actions", default="free", choices=("free", "score"))
    sub.choices["eval"].add_argument("--workers", type=int, default=2)
    sub.choices["eval"].add_argument("--games", type=int, default=None)
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "report":
        print(report())
        return
    rows = args.rows.split(",")
    if unknown := sorted(set(rows) - set(ROWS)):
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if args.command == "sft":
        sft(args.student, rows)
    elif args.command == "train":
        train(args.student, rows, args.device, args.stop_after, args.max_steps)
    else:
        evaluate(args.student, args.split, rows, args.actions, args.workers, args.games)


def report() -> Path:
    raise NotImplementedError


if __name__ == "__main__":
    main()
