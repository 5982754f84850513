"""Context that helps the 135M student search (issue 27): the episodic note, typed memories with where-found priors.

Usage:
  python benchmarks/search_context.py sft                       # here: demonstrations + one SFT set per setting
  python benchmarks/search_context.py train --device cuda       # on the GPU machine: one LoRA per setting
  python benchmarks/search_context.py eval --split valid_seen --rows lora-note,duomem-typed [--actions score]
  python benchmarks/search_context.py eval --split generated --rows lora      # 60 generated games, unseen floor plans
  python benchmarks/search_context.py report                    # results/search-context.{json,md}

The teacher's demonstrations are rebuilt from the committed expert records of all 3,553 train games
(``runs/expert-train-full``: 3,368 won; the 12 few-shot games left out of SFT data, as in every committed
adapter), the teacher memories are the shipped DuoMem bank (600 memories by the ``plan`` writer, shown ``typed``
here), SFT prompts never retrieve a memory of their own floor plan, and each setting trains its own LoRA with the
recipe of the shipped students (rank 16, alpha 32, 2 epochs, lr 2e-4, 8 examples x 2 accumulation steps, max length 8,192: with the note 5-10% of the examples pass 4,096 tokens).
Evaluation: llama.cpp, greedy, 50 steps, 2 workers of one thread, the setting's own play prompt; settings are
chosen on valid_seen only; the generated test set (seed 2027, 60 games on the 12 floor plans no shipped student
trained on) is never used for a choice. Each row's records go to runs/search-context/<split>/<row>-<actions>/ (rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from duomem.jsonl import atomic_write_text, read_jsonl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / "runs" / "search-context"
RUNS = HERE / "runs" / "search-context"
RESULTS = HERE / "results"
BANK = ROOT / "adapters" / "smollm2-135m-duomem" / "bank"
TEACHER_RECORDS = HERE / "runs" / "expert-train-full" / "episodes.jsonl"
MODEL = "smollm2-135m"

SETTINGS: dict[str, dict] = {
    "lora": {"memory": None, "note": False, "shipped": "smollm2-135m-lora"},
    "lora-note": {"memory": None, "note": True},
    "duomem-abstract": {"memory": "abstract", "note": False, "shipped": "smollm2-135m-duomem"},
    "duomem-typed": {"memory": "typed", "note": False},
    "duomem-typed-note": {"memory": "typed", "note": True},
    "full": {"memory": None, "note": False, "method": "full"},
    "lora-examples": {"memory": None, "note": False, "shipped": "smollm2-135m-lora", "examples": "bank"},
}
"""Row -> how its student was trained and is played: the memory format shown (None: no memory block), the episodic
note, ``method: full`` for the parameter-space reference (every weight fine-tuned, lr 5e-5, played as a q8_0 GGUF
model), for the reference rows the shipped student whose adapter it is (trained before this benchmark), and
``examples: bank``: the prompt's two solved examples are the teacher's episodes most similar to the task (of its
type, from :func:`episode_bank`) in place of the packaged two, no memory block."""
SHARED = {
    ("valid_seen", "lora-free"): HERE / "runs" / "action-selection" / "valid_seen" / "lora-free",
    ("valid_seen", "lora-score"): HERE / "runs" / "action-selection" / "valid_seen" / "lora-score-mean",
    ("valid_unseen", "lora-free"): HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_lora-1eb8f8a04d1f",
    ("valid_unseen", "lora-score"): HERE / "runs" / "action-selection" / "valid_unseen" / "lora-score-mean",
    ("valid_unseen", "duomem-abstract-free"): HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_duomem-df6778a503fa",
}
"""Rows already played with the same adapter and play settings by other benchmarks (scored rows: the ``mean``
norm, the default), read from there instead of being played twice."""
SPLITS = ("valid_seen", "valid_unseen", "generated")
GENERATED_SEED = 2027
"""The generated test set: 60 games (10 per task type) on the floor plans that none of the shipped students' training
games used (the demo's 12), generated with this seed (the demo uses 0), into runs/search-context/generated; a test
set only, never used for a choice."""
GENERATED_GAMES = 60
N_PLANNED = {"valid_seen": 140, "valid_unseen": 134, "generated": GENERATED_GAMES}
TRAIN = ["--rank", "16", "--alpha", "32", "--epochs", "2", "--lr", "2e-4", "--max-length", "8192",
         "--batch-size", "8", "--grad-accum", "2", "--save-steps", "100"]
CONCURRENT = {"lora-note": 1, "duomem-typed": 3, "full": 3, "duomem-typed-note": 1}
"""How many trainings shared the GPU when each row's student was trained (its tokens/s is per process)."""
FULL_LR = "5e-5"
"""The full fine-tune's learning rate (later --lr wins): the top of the range the CLI suggests for every weight;
not tuned."""


def demonstrations() -> Path:
    """The teacher's demonstrations, rebuilt from its committed records (as the pipeline's collection does)."""
    from duomem.agent.demonstrations import demonstration
    from duomem.agent.trajectory import Trajectory

    out = WORK / "demonstrations.jsonl"
    if out.is_file():
        return out
    demos, seen = [], set()
    for row in sorted(read_jsonl(TEACHER_RECORDS), key=lambda r: (r["game_id"], r.get("sample", 0))):
        demo = demonstration(Trajectory.model_validate(row["trajectory"]))
        if demo is None or (demo.game_id, tuple(demo.actions)) in seen:
            continue
        seen.add((demo.game_id, tuple(demo.actions)))
        demos.append(demo.model_dump_json())
    atomic_write_text(out, "".join(line + "\n" for line in demos))
    return out


def episode_bank() -> Path:
    """The shipped DuoMem bank's memories again, each with its teacher episode (``duomem memory build
    --transcripts`` from the demonstrations of the same train games): what ``examples: bank`` rows show."""
    from duomem.memory.bank import MemoryBank

    out = WORK / "episode-bank"
    if (out / "manifest.json").is_file():
        return out
    bank = MemoryBank.load(BANK)
    games = {g for e in bank.entries for g in e.source_game_ids}
    source = WORK / "episode-bank.jsonl"
    atomic_write_text(source, "".join(json.dumps(r) + "\n" for r in read_jsonl(demonstrations())
                                      if r["game_id"] in games))
    subprocess.run(["duomem", "memory", "build", "--trajectories", _rel(source), "--out", _rel(out), "--writer",
                    "plan", "--format", bank.manifest["memory_format"], "--embedder", bank.manifest["embedder"],
                    "--transcripts"], check=True, cwd=ROOT)
    return out


def sft(rows: list[str]) -> None:
    from duomem.distill.dataset import build_dataset

    demos = demonstrations()
    for row in rows:
        s = SETTINGS[row]
        if "shipped" in s:
            continue
        out = WORK / "sft" / row
        if (out / "dataset.json").is_file():
            continue
        meta = build_dataset(demos, out, shots=2, memory=str(BANK) if s["memory"] else None, top_k=2,
                             exclude="floor_plan", memory_format=s["memory"], note=s["note"])
        print(f"{row}: {meta['examples']} examples -> {out}")


def adapter(row: str) -> Path:
    """The row's LoRA, or for a full fine-tune its whole model (GGUF)."""
    s = SETTINGS[row]
    if "shipped" in s:
        return ROOT / "adapters" / s["shipped"] / "adapter.gguf"
    return WORK / "lora" / row / ("model.gguf" if s.get("method") == "full" else "adapter.gguf")


def train(rows: list[str], device: str, stop_after: float | None) -> None:
    for row in rows:
        if "shipped" in SETTINGS[row]:
            continue
        out = WORK / "lora" / row
        cmd = ["duomem", "distill", "train", "--model", MODEL, "--data", str(WORK / "sft" / row), "--out",
               str(out), "--device", device, *TRAIN]
        if SETTINGS[row].get("method") == "full":
            cmd += ["--method", "full", "--lr", FULL_LR]
        if stop_after:
            cmd += ["--stop-after", str(stop_after)]
        subprocess.run(cmd, check=True)
        trained = any((out / name).is_file() for name in ("adapter_model.safetensors", "model.safetensors"))
        if trained and not adapter(row).is_file():
            subprocess.run(["duomem", "distill", "export", "--adapter", str(out)], check=True)


def _rel(path: Path) -> str:
    """A path as the records keep it: relative to the checkout, so a run resumes from any clone."""
    return str(path.relative_to(ROOT))


def folder(split: str, row: str, actions: str) -> Path:
    return SHARED.get((split, f"{row}-{actions}"), RUNS / split / f"{row}-{actions}")


def generated() -> Path:
    """The generated test games (made once, the same files from the same seed)."""
    from duomem.envs.generate import generate_tasks
    from duomem.eval.students import get_student
    from duomem.pipeline.showcase import unseen_floor_plans

    out = WORK / "generated"
    if not (out / "generation.json").is_file():
        scenes = unseen_floor_plans(get_student(SETTINGS["lora"]["shipped"]))
        generate_tasks(out, n=1, test_n=GENERATED_GAMES, seed=GENERATED_SEED, test_scenes=scenes, workers=2)
    return out


def evaluate(split: str, rows: list[str], actions: str, games: int | None) -> None:
    where = ["--split", split]
    if split == "generated":
        where = ["--tasks", _rel(generated()), "--split", "test"]
    for row in rows:
        s = SETTINGS[row]
        if (split, f"{row}-{actions}") in SHARED:
            print(f"{row}-{actions} on {split}: shared with {folder(split, row, actions)}, not played again")
            continue
        model = ["--model", _rel(adapter(row))] if s.get("method") == "full" else \
            ["--model", MODEL, "--adapter", _rel(adapter(row))]
        cmd = ["duomem", "eval", *model, *where,
               "--workers", "2", "--threads", "1", "--actions", actions, "--max-steps", "50",
               "--out", _rel(RUNS / split / f"{row}-{actions}"), "--name", f"{row}-{actions}", "--no-progress"]
        if s["memory"]:
            cmd += ["--memory", _rel(BANK), "--top-k", "2", "--memory-format", s["memory"]]
        if s.get("examples") == "bank":
            cmd += ["--memory", _rel(episode_bank()), "--top-k", "0", "--examples", "bank"]
        if s["note"]:
            cmd.append("--note")
        if games:
            cmd += ["--games", str(games)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def _row(split: str, row: str, actions: str) -> dict | None:
    """One row's summary, failure anatomy and outcomes (a row still running: what it has, marked partial)."""
    from failure_anatomy import anatomy

    from duomem.eval.runner import load_records
    from duomem.eval.summary import summarize

    path = folder(split, row, actions)
    records = load_records(path)
    if not records:
        return None
    n_planned = N_PLANNED[split]
    summary = summarize(records, f"{row}-{actions}", "llm", MODEL, split)
    return {"row": row, "actions": actions, "split": split, "records": str(path.relative_to(ROOT)),
            "complete": len(records) >= n_planned, "n_planned": n_planned, "tuning": split == "valid_seen",
            "summary": summary, "anatomy": {k: v for k, v in anatomy(records).items() if k != "games"}}


def training_facts() -> Path:
    """results/search-context-training.json: how each row's student was trained (the machine's training.json
    without the loss curve), the sha256 of the GGUF file that is played, and the concurrency it trained under."""
    import datetime
    import hashlib
    import json

    from duomem.jsonl import atomic_write_json

    out = RESULTS / "search-context-training.json"
    facts = json.loads(out.read_text()) if out.is_file() else {}
    for row, s in SETTINGS.items():
        played, meta = adapter(row), WORK / "lora" / row / "training.json"
        if "shipped" in s or not played.is_file() or not meta.is_file():
            continue
        t = {k: v for k, v in json.loads(meta.read_text()).items()
             if k not in ("loss_curve", "data", "resumed_from", "finished", "targets", "device", "world_size",
                          "total_params", "adapter_bytes")}
        t["gguf_sha256"] = hashlib.sha256(played.read_bytes()).hexdigest()
        t["gguf_bytes"] = played.stat().st_size
        t["command"] = f"python benchmarks/search_context.py sft --rows {row} && python benchmarks/search_context.py " \
                       f"train --rows {row} --device cuda"
        t["concurrent_trainings"] = CONCURRENT.get(row, 1)
        t.setdefault("date", datetime.date.fromtimestamp(meta.stat().st_mtime).isoformat())
        facts[row] = {**facts.get(row, {}), **t}
    atomic_write_json(out, facts)
    return out


def report() -> Path:
    """results/search-context.{json,md}: every row played so far, its failure anatomy and the paired test against
    LoRA only with the same action selection on the same split."""
    from duomem.eval.stats import compare
    from duomem.eval.summary import pct_ci
    from duomem.jsonl import atomic_write_json

    rows = [r for split in SPLITS for row in SETTINGS for actions in ("free", "score")
            if (r := _row(split, row, actions)) is not None]
    for r in rows:
        ref = next((x for x in rows if x["split"] == r["split"] and x["row"] == "lora"
                    and x["actions"] == r["actions"]), None)
        if ref is not None and ref is not r:
            r["against_lora"] = compare(r["summary"]["outcomes"], ref["summary"]["outcomes"])
    data = {"benchmark": "search context (issue 27)", "model": MODEL, "command": "python benchmarks/search_context.py "
            "eval --split SPLIT --rows ROW [--actions score]; ... report",
            # per-game outcomes stay in each row's records (``records``): the tracked tree has a budget
            "rows": [{**r, "summary": {k: v for k, v in r["summary"].items() if k != "outcomes"}} for r in rows]}
    atomic_write_json(RESULTS / "search-context.json", data)
    classes = ("never_saw_target", "closed_receptacle", "lamp_not_used", "pick_two_second", "wrong_object", "other")
    lines = ["# Search context (issue 27)", "",
             f"Student `{MODEL}` (llama.cpp, greedy, 50 steps); each row's LoRA trained with its own context, except "
             "lora-examples: the shipped LoRA (trained with the packaged examples) shown the teacher's two most "
             "similar episodes of the task's type as its solved examples instead, measured on valid_unseen only "
             "and chosen for nothing. valid_seen is the tuning split (choices are made there only). Paired: games "
             "won by this row only / by LoRA only (same action selection, same games), exact McNemar p.", "",
             "| split | row | actions | games | success % [95% CI] | vs LoRA only | p | lost: "
             + " / ".join(classes) + " |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, a, c = r["summary"], r["anatomy"], r.get("against_lora")
        n = f"{s['n_episodes']}" + ("" if r["complete"] else f" of {r['n_planned']} (partial)")
        vs = f"{c['a_only']} / {c['b_only']} ({100 * c['difference']:+.1f})" if c else "-"
        p = f"{c['p_value']:.3f}" if c else "-"
        counts = " / ".join(str(a["counts"].get(k, 0)) for k in classes)
        lines.append(f"| {r['split']}{' (tuning)' if r['tuning'] else ''} | {r['row']} | {r['actions']} | {n} | "
                     f"{pct_ci(s)} | {vs} | {p} | {counts} |")
    atomic_write_text(RESULTS / "search-context.md", "\n".join(lines) + "\n")
    return RESULTS / "search-context.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sft")
    p.add_argument("--rows", default=",".join(SETTINGS))
    p = sub.add_parser("train")
    p.add_argument("--rows", default=",".join(SETTINGS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--stop-after", type=float, default=None)
    p = sub.add_parser("eval")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--rows", required=True)
    p.add_argument("--actions", default="free")
    p.add_argument("--games", type=int, default=None, help="development only, never for a committed figure")
    sub.add_parser("report")
    args = parser.parse_args()
    rows = args.rows.split(",") if hasattr(args, "rows") else []
    unknown = [r for r in rows if r not in SETTINGS]
    if unknown:
        sys.exit(f"unknown rows {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    if args.command == "sft":
        sft(rows)
    elif args.command == "train":
        train(rows, args.device, args.stop_after)
    elif args.command == "eval":
        evaluate(args.split, rows, args.actions, args.games)
    else:
        training_facts()
        print(report().read_text())


if __name__ == "__main__":
    main()
