"""Training and batched play at hardware speed (issue 26): measured on whatever GPU (or CPU) this runs on.

Each part fits one 10-minute call of a lent GPU machine and merges its figures into results/gpu-throughput.json
(and .md); rerun a part to measure it again.

  python benchmarks/gpu_throughput.py train --sft SFT_FOLDER [--model smollm2-135m] [--steps 60] [--batch-size 8]
      LoRA training with the shipped students' recipe for --steps optimiser steps: train_tokens_per_s as
      `duomem distill train` counts them, and the share of the card's bf16 peak (6 x parameters FLOPs a token).
  python benchmarks/gpu_throughput.py play --student smollm2-135m-lora [--split valid_unseen] [--actions free]
      [--batch 134] [--workers 15]
      a shipped student's row played batched on the transformers backend (its GGUF LoRA imported to peft):
      episodes per hour, and the row against the committed llama.cpp CPU row of the same student, paired.
  python benchmarks/gpu_throughput.py tree      the tracked tree's size (what travels to the GPU machine)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from duomem.jsonl import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "gpu-throughput.json"
CPU_ROWS = {
    ("smollm2-135m-lora", "valid_unseen", "free"): HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_lora-1eb8f8a04d1f",
    ("smollm2-135m-lora", "valid_unseen", "score"): HERE / "runs" / "action-selection" / "valid_unseen" / "lora-score-mean",
}
"""The committed llama.cpp rows each GPU row is paired with."""
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
"""Dense bf16 tensor-core peaks from the vendors' data sheets, by a name the device reports."""


def _device() -> dict:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        return {"device": "cuda", "name": name, "bf16_peak_tflops": peak, "count": torch.cuda.device_count()}
    return {"device": "cpu", "name": platform.processor() or platform.machine(), "bf16_peak_tflops": None, "count": 0}


def _merge(part: str, data: dict, path: Path = RESULTS) -> None:
    """Add one measured row to ``path`` (JSON) and its Markdown twin."""
    results = json.loads(path.read_text()) if path.is_file() else {"benchmark": "gpu throughput (issue 26)"}
    results.setdefault(part, {})[data.pop("key")] = data
    atomic_write_json(path, results)
    lines = ["# GPU throughput", "", "Written by `python benchmarks/gpu_throughput.py PART ...`; each row names its "
             "command, device and date.", ""]
    for name, rows in results.items():
        if not isinstance(rows, dict):
            continue
        lines += [f"## {name}", "", "| row | figures | device | date |", "|---|---|---|---|"]
        for key, row in rows.items():
            figures = ", ".join(f"{k} {v}" for k, v in row.get("figures", {}).items())
            lines.append(f"| {key} | {figures} | {row.get('device', {}).get('name', '-')} | {row.get('date', '-')} |")
        lines.append("")
    atomic_write_text(path.with_suffix(".md"), "\n".join(lines))


def train(sft: Path, model: str, steps: int, batch_size: int, grad_accum: int, out: Path) -> dict:
    from duomem.distill.train import LoraConfig, train_lora

    device = _device()
    config = LoraConfig(rank=16, alpha=32, epochs=2, max_steps=steps, learning_rate=2e-4, batch_size=batch_size,
                        grad_accum=grad_accum, max_length=8192, save_steps=10_000)
    meta = train_lora(model, sft, out, config, device=device["device"], show_progress=False)
    tps = meta["train_tokens_per_s"]
    flops = 6 * meta["total_params"] * tps if tps else None
    peak = device["bf16_peak_tflops"]
    return {"key": f"train {model} batch {batch_size}x{grad_accum}", "device": device, "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(sys.argv),
            "figures": {"train_tokens_per_s": round(tps) if tps else None, "steps": meta["steps"],
                        "wall_s": round(meta["wall_s"], 1),
                        "share_of_bf16_peak": round(flops / (peak * 1e12), 4) if flops and peak else None}}


def play(student: str, split: str, actions: str, batch: int, workers: int, out: Path) -> dict:
    from duomem.eval.runner import load_records
    from duomem.eval.stats import compare

    device = _device()
    cmd = ["duomem", "eval", "--student", student, "--split", split, "--backend", "transformers", "--device",
           device["device"], "--batch", str(batch), "--actions", actions, "--out", str(out), "--no-progress"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    records = load_records(out)
    figures: dict = {"episodes": len(records), "won": sum(r.won for r in records),
                     "episodes_per_h": round(3600 * len(records) / wall), "wall_s": round(wall, 1)}
    cpu = CPU_ROWS.get((student, split, actions))
    if cpu is not None:
        c = compare({r.game_id: r.won for r in records}, {r.game_id: r.won for r in load_records(cpu)})
        figures.update(vs_cpu_gpu_only=c["a_only"], vs_cpu_cpu_only=c["b_only"], vs_cpu_p=round(c["p_value"], 4))
    return {"key": f"play {student} {split} {actions}", "device": device, "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(cmd), "records": str(out), "figures": figures}


def from_records(folder: Path, against: Path | None, note: str) -> dict:
    """A played row's figures read off its records (so they can be recomputed from committed records): games
    won, the row's wall time (first episode's start to last episode's end, the model's loading excluded),
    episodes per hour, mean seconds per episode in the model and in the game, and the model's share of the row's
    wall (a batched generate's time is split over the episodes it decided for, so the episodes' model seconds add
    up to the time the row spent generating); paired with ``against``."""
    from duomem.eval.runner import load_records
    from duomem.eval.stats import compare

    records = load_records(folder)
    starts = [r.ended_at - r.wall_s for r in records]
    wall = max(r.ended_at for r in records) - min(starts)
    figures: dict = {"episodes": len(records), "won": sum(r.won for r in records),
                     "episodes_per_h": round(3600 * len(records) / wall), "row_wall_s": round(wall, 1),
                     "llm_s_per_episode": round(sum(r.llm_s for r in records) / len(records), 1),
                     "env_s_per_episode": round(sum(r.env_s for r in records) / len(records), 1),
                     "model_share_of_wall": round(sum(r.llm_s for r in records) / wall, 2)}
    if against is not None:
        c = compare({r.game_id: r.won for r in records}, {r.game_id: r.won for r in load_records(against)})
        figures.update(vs_only_this=c["a_only"], vs_only_other=c["b_only"], vs_p=round(c["p_value"], 4),
                       vs=_rel(against))
    spec = json.loads((folder / "run.json").read_text())["spec"]
    return {"key": f"records {_rel(folder)}", "device": {"name": note}, "date": time.strftime("%Y-%m-%d"),
            "command": f"python benchmarks/gpu_throughput.py records {_rel(folder)}"
                       + (f" --against {_rel(against)}" if against else ""),
            "model": spec["model"], "backend": spec["backend"], "batch": spec["batch"], "figures": figures}


def _rel(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def tree() -> dict:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    total = sum((ROOT / n).stat().st_size for n in names.decode().split("\0") if n and (ROOT / n).is_file())
    return {"key": "tracked tree", "date": time.strftime("%Y-%m-%d"), "device": {"name": "-"},
            "figures": {"MiB": round(total / 2**20, 2)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    p = sub.add_parser("train")
    p.add_argument("--sft", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-throughput" / "train")
    p = sub.add_parser("play")
    p.add_argument("--student", default="smollm2-135m-lora")
    p.add_argument("--split", default="valid_unseen")
    p.add_argument("--actions", default="free", choices=("free", "score"))
    p.add_argument("--batch", type=int, default=134)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    sub.add_parser("tree")
    p = sub.add_parser("records", help="a played row's figures from its records (episodes/h, paired test)")
    p.add_argument("folder", type=Path)
    p.add_argument("--against", type=Path, default=None, help="a record folder of the same games to pair with")
    p.add_argument("--device-note", default="-", help="where and beside what the row was played")
    p = sub.add_parser("merge", help="add the rows of a results file written elsewhere (--results on a GPU machine)")
    p.add_argument("file", type=Path)
    for p in sub.choices.values():
        p.add_argument("--results", type=Path, default=RESULTS, help="the JSON file the figures go to")
    args = ap.parse_args()
    if args.part == "merge":
        for part, rows in json.loads(args.file.read_text()).items():
            for key, row in rows.items() if isinstance(rows, dict) else ():
                _merge(part, {"key": key, **row}, args.results)
        return
    if args.part == "train":
        data = train(args.sft, args.model, args.steps, args.batch_size, args.grad_accum, args.out)
    elif args.part == "play":
        out = args.out or ROOT / "runs" / "gpu-throughput" / f"{args.student}-{args.split}-{args.actions}"
        data = play(args.student, args.split, args.actions, args.batch, args.workers, out)
    elif args.part == "records":
        data = from_records(args.folder, args.against, args.device_note)
    else:
        data = tree()
    key = data["key"]
    _merge(args.part, data, args.results)
    print(f"{key}: {json.loads(args.results.read_text())[args.part][key]['figures']}")


if __name__ == "__main__":
    main()
