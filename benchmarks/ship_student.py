"""Ship a row of a finished pipeline run as a student: its GGUF LoRA (and memory bank) into adapters/<name>/ with a
manifest (``student.json``) that ``duomem models list``, ``duomem eval --student`` and ``duomem demo`` read.

Usage: python benchmarks/ship_student.py RUN_DIR ROW NAME --report PUBLISHED_REPORT --command "duomem run ..."
e.g.   python benchmarks/ship_student.py runs/full-smollm2-135m duomem smollm2-135m-duomem \\
           --report benchmarks/results/smollm2-135m-valid_unseen/report.json \\
           --command "duomem run configs/full-smollm2-135m.yaml"
The row's committed figure is read from the published report (not from the run), so the manifest quotes exactly
what the repository shows.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from duomem.eval.students import MANIFEST, folder_sha256, read_student
from duomem.jsonl import atomic_write_json, pack_jsonl
from duomem.llm.registry import PACKAGED, file_sha256
from duomem.memory.bank import EMBEDDINGS, MEMORIES
from duomem.memory.bank import MANIFEST as BANK_MANIFEST
from duomem.memory.provenance import provenance
from duomem.pipeline.config import ROWS

ROOT = Path(__file__).resolve().parent.parent


def floor_plans(demonstrations: Path) -> list[int]:
    """Floor plans of the games a run's teacher demonstrations come from."""
    ids = [json.loads(line)["game_id"] for line in demonstrations.read_text().splitlines() if line.strip()]
    return [int(p) for p in provenance(ids)["source_floor_plans"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("row", choices=[r for r, (lora, _) in ROWS.items() if lora])
    ap.add_argument("name")
    ap.add_argument("--report", type=Path, required=True, help="The published report.json that quotes the row.")
    ap.add_argument("--command", required=True, help="The command that produced the figure.")
    ap.add_argument("--description", default="")
    args = ap.parse_args()

    run = json.loads((args.run / "report.json").read_text())
    published = json.loads(args.report.read_text())
    row = published["configs"][args.row]
    if not row.get("complete"):
        raise SystemExit(f"the {args.row} row of {args.report} is not complete")
    config = json.loads((args.run / "config.json").read_text())
    lora = run["artifacts"]["loras"][args.row]
    adapter_dir = Path(lora["adapter"])
    training = json.loads((adapter_dir / "training.json").read_text())
    _, bank_kind = ROWS[args.row]
    out = ROOT / "adapters" / args.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy2(adapter_dir / "adapter.gguf", out / "adapter.gguf")
    bank = None
    if bank_kind:
        source = Path(run["artifacts"][f"{bank_kind}_bank"]["bank"])
        (out / "bank").mkdir()
        for name in (MEMORIES, EMBEDDINGS, BANK_MANIFEST):
            shutil.copy2(source / name, out / "bank" / name)
        pack_jsonl(out / "bank" / MEMORIES)  # shipped packed, as run records are committed
        bank = "bank"
    demos = Path(training["dataset"]["source"])
    base = config["student"]["model"]
    manifest = {
        "name": args.name,
        "description": args.description or f"{base} + LoRA on the teacher's demonstrations"
                                           + (f" + the {bank_kind} memory bank" if bank else ""),
        "base_model": base,
        "base_sha256": PACKAGED[base].sha256,
        "adapter": "adapter.gguf",
        "adapter_sha256": file_sha256(out / "adapter.gguf"),
        "adapter_bytes": (out / "adapter.gguf").stat().st_size,
        "bank": bank,
        "bank_sha256": folder_sha256(out / "bank") if bank else None,
        "play": {"top_k": row["top_k"] if bank else 0, "shots": row["shots"],
                 "fewshot": config["student"]["fewshot"], "retrieval": config["memory"]["retrieval"],
                 "memory_format": config["memory"]["show_format"], "action_selection": config["eval"]["action_selection"],
                 "max_steps": row["max_steps"]},
        "training": {
            "teacher": run["teacher"], "demonstrations": training["examples"],
            "data": {k: training["dataset"].get(k) for k in ("examples", "per_type", "shots", "fewshot", "memory",
                                                             "top_k", "retrieval", "exclude", "memory_format",
                                                             "memory_dropout", "sha256")},
            "memory": config["memory"] if bank else None,
            "lora": training["config"],
            "tokens_per_epoch": training["tokens_per_epoch"], "trained_tokens_per_epoch":
                training["trained_tokens_per_epoch"], "steps": training["steps"], "wall_s": training["wall_s"],
            "hardware": training["hardware"], "loss_first": training["loss_first"],
            "loss_last": training["loss_last"],
        },
        "train_floor_plans": floor_plans(demos) if demos.is_file() else [],
        "result": {"report": str(args.report.resolve().relative_to(ROOT)), "row": args.row,
                   "split": row["split"], "games": row["n_episodes"], "won": row["n_won"],
                   "success_pct": round(100 * row["success_rate"], 1), "command": args.command},
    }
    atomic_write_json(out / MANIFEST, manifest)
    student = read_student(out)
    student.verify()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {size / 1e6:.1f} MB; {student.result.won}/{student.result.games} on {student.result.split}")


if __name__ == "__main__":
    main()
