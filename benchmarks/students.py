"""Student sizes (issue 29): the 0.5B and 1.5B students beside the 135M, on the full-scale teacher data.

Usage:
  python benchmarks/students.py sft --student qwen2.5-coder-0.5b                 # here: one SFT set per trained row
  python benchmarks/students.py stage --student qwen2.5-coder-0.5b               # here: .carry/<student>/s0..sN for the GPU
  bash benchmarks/gpu_students.sh qwen2.5-coder-0.5b lora duomem                 # there, after the parts: train
  python benchmarks/students.py eval --student qwen2.5-coder-0.5b --rows nomem,teacher_memory [--workers 2]
  python benchmarks/students.py report                                            # results/students.{json,md}

Rows, as the 135M's committed rows (``results/smollm2-135m-valid_unseen``): ``nomem`` (the packaged model, two
few-shot examples), ``teacher_memory`` (the same with the shipped teacher bank: 600 memories by the ``plan`` writer,
top-2 by similarity), ``lora`` (a LoRA trained on the expert's 3,356 won train demonstrations), ``duomem`` (a LoRA
trained with the teacher memories in its prompts, played with them). The teacher's demonstrations and the SFT
recipe are those of ``benchmarks/search_context.py`` (rank 16, alpha 32, lr 2e-4, 8 x 2 examples a step); what
differs per student is in :data:`STUDENTS` (a larger student trains without few-shot examples in its prompts, 28%
of the tokens, to fit the lent GPU's time). Play: llama.cpp, greedy, 50 steps, worker processes of one
thread; records in ``benchmarks/runs/<student>-<split>/<row>-<actions>/`` (a rerun resumes). No choice is made on
valid_unseen.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from search_context import BANK, demonstrations

from duomem.envs.base import TASK_TYPES as TYPES
from duomem.jsonl import atomic_write_json, atomic_write_text

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
    "smollm2-135m": {"params": "135M", "lora_shots": 2, "epochs": 2, "train_args": []},
    "qwen2.5-coder-0.5b": {"params": "494M", "lora_shots": 0, "epochs": 2, "train_args": []},
    "qwen2.5-coder-1.5b": {"params": "1.54B", "lora_shots": 0, "epochs": 1, "train_args": ["--gradient-checkpointing"]},
}
"""Per student: its parameters (the model card's count), few-shot examples in the trained rows' prompts (SFT and
play alike), training epochs and further training options (the 1.5B trains beside a batched row on an 80 GB card:
without checkpointing a batch of its longest demonstrations takes about 50 GB of activations). The 135M's are its
shipped students' (its rows here are read from their own benchmarks, :data:`REFERENCE`; it trains the rows of
``benchmarks/new_task_types.py``). Not tuned: set by the lent GPU's time (30 minutes a session, the model's
transfer included); the report says so."""
TRAIN = ["--rank", "16", "--alpha", "32", "--lr", "2e-4", "--max-length", "8192", "--batch-size", "8",
         "--grad-accum", "2", "--save-steps", "50"]
DEVICE_WHEELS = ["accelerate==1.16.0", "annotated_doc==0.0.7", "annotated_types==0.8.0", "click==8.5.1",
                 "gguf==0.19.0", "jinja2==3.1.6", "markdown_it_py==4.3.0", "markupsafe==3.0.4", "mdurl==0.1.2",
                 "psutil==7.2.2", "pydantic==2.14.4", "pydantic_core==2.50.5", "pygments==2.21.0", "pyyaml==6.0.4",
                 "rank_bm25==0.2.2", "rich==15.0.0", "shellingham==1.5.4", "typer==0.29.2",
                 "typing_inspection==0.4.5"]
"""What duomem needs beside the lent H200's torch, transformers and peft (Python 3.12): fetched by ``stage``."""
N_PLANNED = {"valid_seen": 140, "valid_unseen": 134}


def rel(path: Path) -> str:
    """``path`` relative to the checkout when inside it (records then name portable paths), else as given."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def sft_dir(student: str, row: str) -> Path:
    return WORK / student / "sft" / row


def lora_dir(student: str, row: str) -> Path:
    return WORK / student / "lora" / row


def sft(student: str, rows: list[str]) -> None:
    """One SFT set per trained row. The sets are the same for students with the same few-shot setting (the
    tokenizer applies at training), so an existing one is copied."""
    import shutil

    from duomem.distill.dataset import build_dataset

    demos = None
    for row in rows:
        out = sft_dir(student, row)
        if not ROWS[row]["lora"] or (out / "dataset.json").is_file():
            continue
        same = [sft_dir(s, row) for s, c in STUDENTS.items()
                if s != student and c["lora_shots"] == STUDENTS[student]["lora_shots"]]
        if done := next((d for d in same if (d / "dataset.json").is_file()), None):
            shutil.copytree(done, out)
            print(f"{student} {row}: the same set as {done}")
            continue
        demos = demos or demonstrations()
        meta = build_dataset(demos, out, shots=STUDENTS[student]["lora_shots"],
                             memory=str(BANK) if ROWS[row]["memory"] else None, top_k=2, exclude="floor_plan")
        print(f"{student} {row}: {meta['examples']} examples -> {out}")


def trained(student: str, row: str) -> bool:
    """Whether ``row`` trains a LoRA: one of :data:`ROWS` with a LoRA, or any row whose SFT set was built (by
    another benchmark, e.g. ``new_task_types.py``)."""
    return ROWS[row]["lora"] if row in ROWS else (sft_dir(student, row) / "dataset.json").is_file()


def train(student: str, rows: list[str], device: str, stop_after: float | None, max_steps: int | None,
          epochs: float | None = None) -> None:
    """Train each row's LoRA (``epochs``: the student's own, :data:`STUDENTS`, unless given) and export it."""
    for row in rows:
        if not trained(student, row):
            continue
        out = lora_dir(student, row)
        cmd = ["duomem", "distill", "train", "--model", student, "--data", str(sft_dir(student, row)), "--out",
               str(out), "--device", device, "--epochs", str(epochs or STUDENTS[student]["epochs"]), *TRAIN,
               *STUDENTS[student]["train_args"]]
        if stop_after:
            cmd += ["--stop-after", str(stop_after)]
        if max_steps:
            cmd += ["--max-steps", str(max_steps)]
        subprocess.run(cmd, check=True)
        if (out / "adapter_model.safetensors").is_file() and not (out / "adapter.gguf").is_file():
            subprocess.run(["duomem", "distill", "export", "--adapter", str(out)], check=True)
        keep_training_record(student, row)


def keep_training_record(student: str, row: str) -> Path | None:
    """The row's ``training.json``, with its exported adapter's size and sha256, as
    ``runs/students/<student>/<row>.training.json`` (committed; the adapter itself may be too large to be)."""
    from duomem.llm.registry import file_sha256

    out = lora_dir(student, row)
    if not (out / "training.json").is_file() or not (out / "adapter.gguf").is_file():
        return None
    meta = json.loads((out / "training.json").read_text())
    meta["adapter_gguf"] = {"bytes": (out / "adapter.gguf").stat().st_size, "sha256": file_sha256(out / "adapter.gguf")}
    path = TRAINED / student / f"{row}.training.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(meta, separators=(",", ":")) + "\n")  # compact: the tree has a budget
    return path


def device_wheels(out: Path, wheels: list[str] = DEVICE_WHEELS) -> Path:
    """``wheels`` for CPython 3.12 on x86-64 Linux, downloaded once into ``out``."""
    if not out.is_dir() or len(list(out.glob("*.whl"))) < len(wheels):
        platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                                 "manylinux2014_x86_64", "manylinux_2_12_x86_64",
                                                 "manylinux2010_x86_64")]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out),
                        *wheels], check=True)
    return out


GAME_WHEELS = ["alfworld==0.4.2", "textworld==1.7.0", "hashids==1.3.1", "mementos==1.3.1", "more_itertools==11.2.1",
               "networkx==3.6.1", "prompt_toolkit==3.0.53", "tatsu==5.8.3", "termcolor==3.3.0", "tqdm==4.70.1",
               "wcwidth==0.9.4"]
"""What playing ALFWorld needs there besides :data:`DEVICE_WHEELS`."""
NO_WHEEL = ["jericho", "fast_downward"]
"""Packages textworld loads that PyPI has no wheel of for the machine's Python: their installed folders (Python and
a ``.so`` loaded with ctypes, built for x86-64 Linux) are copied from this environment."""


def stage_play(archives: Path | None = None) -> list[Path]:
    """``.carry/e0`` (the game wheels, the slim ALFWorld archives of the validation splits, the query-embedding
    cache for their task descriptions, so that memory rows need no embedder there, and the bank updates of
    ``new_task_types.py`` where built) and ``.carry/e1`` (the packages of :data:`NO_WHEEL`): what playing rows on the
    GPU machine needs; each is carried with one of ``setup``'s calls."""
    import importlib.util
    import shutil

    from duomem import settings
    from duomem.envs.alfworld_data import load_tasks
    from duomem.memory.embed import load_embedder

    archives = archives or settings.alfworld_archive_dir() or ROOT.parent / "shared" / "alfworld"
    e0, e1 = ROOT / ".carry" / "e0", ROOT / ".carry" / "e1"
    for folder in (e0, e1):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    device_wheels(e0 / "wheels", GAME_WHEELS)
    splits = ("valid_seen", "valid_unseen")
    for split in splits:
        shutil.copy(archives / f"slim_{split}.tar.xz", e0)
    embedder = load_embedder(json.loads((BANK / "manifest.json").read_text())["embedder"])
    embedder.embed([t.goal for split in splits for t in load_tasks(split)])
    (e0 / "embeddings").mkdir()
    shutil.copy(embedder.path, e0 / "embeddings")
    updates = ROOT / "runs" / "new-task-types" / "banks"
    if updates.is_dir():
        for bank in (d for d in updates.iterdir() if (d / "manifest.json").is_file()):
            shutil.copytree(bank, e0 / "banks" / bank.name)
    for name in NO_WHEEL:
        spec = importlib.util.find_spec(name)
        shutil.copytree(Path(spec.origin).parent, e1 / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
    return [e0, e1]


def stage(student: str, wheels: Path | None, rows: list[str]) -> list[Path]:
    """Folders ``.carry/<student>/s0`` ... for the GPU machine, one per call (each carried with the working tree
    within the 64 MiB a call takes): the student's GGUF in checked parts (scripts/parts.py), then the wheels the
    machine lacks and the rows' SFT sets (gzipped) with the last part. Each student has a folder of its own, so two
    students can be staged and set up on one machine."""
    import gzip
    import shutil

    wheels = wheels or device_wheels(ROOT / ".carry" / "wheels")
    sys.path.insert(0, str(ROOT / "scripts"))
    from parts import split

    from duomem.llm.registry import resolve

    tree = sum(int(line.split()[0]) for line in subprocess.run(
        "git ls-files -z --cached --others --exclude-standard | xargs -0 du -b", shell=True, cwd=ROOT,
        capture_output=True, text=True, check=True).stdout.splitlines())
    room = 64 * 2**20 - tree - 3 * 2**20
    extra = sum(f.stat().st_size for f in wheels.glob("*.whl")) + 3 * 2**20
    carry = ROOT / ".carry" / student
    for old in carry.glob("s[0-9]*"):  # an earlier staging
        shutil.rmtree(old)
    tmp = carry / "parts"
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = split(resolve(student).path, tmp, room)
    parts = sorted(tmp.glob("*.part[0-9]*"))
    last_fits = parts[-1].stat().st_size + extra <= room  # else the wheels and data travel in a call of their own
    folders = [carry / f"s{i}" for i in range(len(parts) + (0 if last_fits else 1))]
    for folder in folders:
        folder.mkdir(parents=True)
    for part, folder in zip(parts, folders, strict=False):  # a last folder of its own holds no part
        shutil.move(part, folder / part.name)
    shutil.move(manifest, folders[-1] / manifest.name)
    shutil.copytree(wheels, folders[-1] / "wheels")
    for row in rows:
        if trained(student, row):
            with (sft_dir(student, row) / "train.jsonl").open("rb") as src, \
                    gzip.open(folders[-1] / f"{row}.jsonl.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            shutil.copy(sft_dir(student, row) / "dataset.json", folders[-1] / f"{row}.dataset.json")
    tmp.rmdir()
    return folders


def records(student: str, split: str, row: str, actions: str, backend: str = "llamacpp", runs: Path = HERE / "runs") -> Path:
    """A row's records: ``<row>-<actions>`` (llama.cpp on CPU cores) or ``<row>-<actions>-transformers``."""
    suffix = "" if backend == "llamacpp" else f"-{backend}"
    return runs / f"{student}-{split}" / f"{row}-{actions}{suffix}"


def evaluate(student: str, split: str, rows: list[str], actions: str, workers: int, games: int | None,
             backend: str = "llamacpp", device: str = "cpu", batch: int = 1,
             runs: Path = HERE / "runs") -> list[subprocess.Popen]:
    """Play ``rows``; with the transformers backend (a GPU, ``batch`` episodes stepped together) the rows play side
    by side as processes of their own and are returned running; llama.cpp rows play one after another."""
    running = []
    for row in rows:
        r = ROWS[row]
        name = records(student, split, row, actions, backend, runs)
        cmd = ["duomem", "eval", "--model", student, "--split", split, "--actions", actions, "--out",
               rel(name),
               "--name", name.name, "--no-progress"]
        if backend == "llamacpp":
            cmd += ["--workers", str(workers)]
        else:
            cmd += ["--backend", backend, "--device", device, "--batch", str(batch)]
        if r["lora"]:
            # llama.cpp reads the exported GGUF LoRA; transformers the trained peft folder itself
            adapter = lora_dir(student, row)
            adapter = adapter / "adapter.gguf" if backend == "llamacpp" else adapter
            cmd += ["--adapter", rel(adapter), "--shots", str(STUDENTS[student]["lora_shots"])]
        if r["memory"]:
            cmd += ["--memory", rel(BANK), "--top-k", "2"]
        if games:
            cmd += ["--games", str(games)]
        print(" ".join(cmd), flush=True)
        if backend == "llamacpp":
            subprocess.run(cmd, check=True, cwd=ROOT)
        else:
            running.append(subprocess.Popen(cmd, cwd=ROOT))
    return running


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
    sub.choices["train"].add_argument("--epochs", type=float, default=None, help="default: the student's own")
    sub.choices["eval"].add_argument("--split", default="valid_unseen", choices=N_PLANNED)
    sub.choices["eval"].add_argument("--actions", default="free", choices=("free", "score"))
    sub.choices["eval"].add_argument("--workers", type=int, default=2)
    sub.choices["eval"].add_argument("--games", type=int, default=None)
    sub.choices["eval"].add_argument("--backend", default="llamacpp", choices=("llamacpp", "transformers"))
    sub.choices["eval"].add_argument("--device", default="cpu")
    sub.choices["eval"].add_argument("--batch", type=int, default=1, help="transformers: episodes stepped together")
    sub.choices["eval"].add_argument("--runs", type=Path, default=HERE / "runs", help="where record folders go")
    p = sub.add_parser("stage")
    p.add_argument("--student", required=True, choices=STUDENTS)
    p.add_argument("--rows", default="lora,duomem")
    p.add_argument("--wheels", type=Path, default=None, help="folder of the wheels the GPU machine lacks (default: "
                   "download DEVICE_WHEELS into .carry/wheels)")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "report":
        print(report())
        return
    rows = args.rows.split(",")
    if unknown := sorted(r for r in rows if r not in ROWS and not (args.command in ("train", "stage")
                                                                   and trained(args.student, r))):
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)} (train and stage: or a row whose SFT "
                     "set another benchmark built)")
    if args.command == "stage":
        for folder in [*stage(args.student, args.wheels, rows), *stage_play()]:
            print(f"{folder.relative_to(ROOT)}: {sum(f.stat().st_size for f in folder.rglob('*') if f.is_file()) / 2**20:.1f} MiB")
        return
    if args.command == "sft":
        sft(args.student, rows)
    elif args.command == "train":
        train(args.student, rows, args.device, args.stop_after, args.max_steps, args.epochs)
    else:
        running = evaluate(args.student, args.split, rows, args.actions, args.workers, args.games, args.backend,
                           args.device, args.batch, args.runs)
        if any(p.wait() for p in running):
            sys.exit(1)


REFERENCE = {
    ("smollm2-135m", "nomem", "free"): HERE / "runs" / "smollm2-135m-nomem-valid_unseen",
    ("smollm2-135m", "teacher_memory", "free"): HERE / "runs" / "smollm2-135m-valid_unseen"
    / "eval_teacher_memory-d8e7dff95957",
    ("smollm2-135m", "lora", "free"): HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_lora-1eb8f8a04d1f",
    ("smollm2-135m", "duomem", "free"): HERE / "runs" / "smollm2-135m-valid_unseen" / "eval_duomem-df6778a503fa",
    ("smollm2-135m", "lora", "score"): HERE / "runs" / "action-selection" / "valid_unseen" / "lora-score-mean",
}
"""The 135M's committed valid_unseen rows with the same settings (its LoRAs: the shipped students, two few-shot
examples), read from their own benchmarks."""
BACKENDS = {
    "llamacpp": "llama.cpp on 2 CPU cores (the packaged Q4_K_M GGUF, the LoRA as a GGUF adapter), one thread per "
                "worker process",
    "transformers": "transformers on one GPU (the 0.5B's rows on an H200, the 1.5B's on an H100; the GGUF "
                    "dequantised to bf16, the peft LoRA merged), every game of the split stepped together, one batched "
                    "generate per step",
}
TRAINED = HERE / "runs" / "students"
"""Each trained row's ``training.json`` as ``<student>/<row>.training.json`` (the adapters stay out of the tree)."""


def training() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(TRAINED.glob("*/*.training.json")):
        found[(path.parent.name, path.name.split(".")[0])] = json.loads(path.read_text())
    return found


SPEED_SAMPLE = {"smollm2-135m": HERE / "runs" / "students-speed" / "smollm2-135m-lora-n30",
                "qwen2.5-coder-1.5b": HERE / "runs" / "qwen2.5-coder-1.5b-valid_unseen" / "lora-free"}
"""The 30-game on-device samples (5 games a type) timed on one machine on quiet cores, the scaling table's speed:
the 1.5B LoRA row's first 30 records (``students.py eval --rows lora --games 30``; the rest of its row was played
beside other work) and the shipped 135M LoRA student on the same games (``duomem eval --student smollm2-135m-lora
--games 30 --workers 2 --out ...``; its full row was timed on another machine)."""
SPEED_GAMES = 30


def _adapter_mb(student: str) -> str:
    gguf = training().get((student, "lora"), {}).get("adapter_gguf")
    shipped = ROOT / "adapters" / f"{student}-lora" / "adapter.gguf"
    size = gguf["bytes"] if gguf else shipped.stat().st_size if shipped.is_file() else None
    return f"{size / 1e6:.1f}" if size else "-"


def scaling_table(rows: list[dict], split: str) -> list[str]:
    """One line per student: each row's success (a complete row first, llama.cpp before the GPU), the paired
    tests, and the LoRA student on 2 CPU cores (s/episode, peak RSS; a sample where its row is not complete)."""
    from duomem.eval.runner import load_records
    from duomem.eval.summary import pct_ci, summarize

    names = {"nomem": "no memory", "teacher_memory": "teacher memory", "lora": "LoRA only", "duomem": "DuoMem"}

    def best(student: str, row: str, backend: str | None = None) -> dict | None:
        found = [r for r in rows if r["student"] == student and r["row"] == row and r["actions"] == "free"
                 and backend in (None, r["backend"])]
        return min(found, key=lambda r: (not r["complete"], r["backend"] != "llamacpp"), default=None)

    def cell(r: dict | None) -> str:
        if r is None:
            return "-"
        s = r["summary"]
        where = [] if r["backend"] == "llamacpp" else ["GPU"]
        where += [] if r["complete"] else [f"{s['n_episodes']} of {N_PLANNED[split]}"]
        return pct_ci(s) + (f" ({', '.join(where)})" if where else "")

    def paired(r: dict | None) -> str:
        c = r and r.get("paired")
        return f"{c['a_only']} / {c['b_only']}, p = {c['p_value']:.2f}" if c else "-"

    lines = [f"**Scaling** ({split}, free play; llama.cpp on 2 CPU cores unless marked GPU; a partial row says how "
             "many games it holds; paired: games won by one side only, exact McNemar p; speed: the LoRA student's "
             "30-game sample where there is one, all on one machine, else its row):", "",
             "| student | parameters | " + " | ".join(names.values()) + " | DuoMem vs LoRA | teacher memory vs "
             "none | LoRA s/episode, 2 cores | peak RSS MB | LoRA adapter MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for student, conf in STUDENTS.items():
        chosen = {row: best(student, row) for row in names}
        if student in SPEED_SAMPLE:
            sample = load_records(SPEED_SAMPLE[student])[:SPEED_GAMES]
            cpu = {"complete": False, "summary": summarize(sample, "speed", "llm", student, split)}
        else:
            cpu = best(student, "lora", "llamacpp")
        speed = "-" if cpu is None else (f"{cpu['summary']['wall_s_per_episode']:.0f}"
                                          + ("" if cpu["complete"] else f" ({cpu['summary']['n_episodes']} games)"))
        rss = round(cpu["summary"]["peak_rss_mb"]) if cpu and cpu["summary"]["peak_rss_mb"] else "-"
        lines.append(f"| {student} | {conf['params']} | " + " | ".join(cell(chosen[r]) for r in names)
                     + f" | {paired(chosen['duomem'])} | {paired(chosen['teacher_memory'])} | {speed} | {rss} | "
                     f"{_adapter_mb(student)} |")
    lines.append("| paper: Qwen3-4B, 72B teacher | 4B | 4.3 | 56.4 | 72.1 | 77.9 | - | - | - | - | - |")
    return lines


PAPER = "Qwen3-4B (DuoMem abstract): no memory 4.3, own memory 55.0, + teacher memory 56.4, + LoRA 72.1, DuoMem 77.9"


def report(split: str = "valid_unseen") -> Path:
    """results/students.{json,md}: every row played so far per student (partial rows marked), with the paired
    tests teacher memory against no memory and DuoMem against LoRA only (same student, same action selection)."""
    from duomem.eval.runner import load_records
    from duomem.eval.stats import compare
    from duomem.eval.summary import pct_ci, summarize

    rows = []
    for student in STUDENTS:
        for backend in BACKENDS:
            for actions in ("free", "score"):
                for row in ROWS:
                    path = records(student, split, row, actions, backend)
                    if backend == "llamacpp":
                        path = REFERENCE.get((student, row, actions), path)
                    found = load_records(path) if path.is_dir() else []
                    if found:
                        summary = summarize(found, f"{row}-{actions}", "llm", student, split)
                        rows.append({"student": student, "row": row, "actions": actions, "backend": backend,
                                     "records": rel(path), "complete": len(found) >= N_PLANNED[split],
                                     "summary": summary})
    pairs = {"teacher_memory": "nomem", "duomem": "lora"}
    same = ("student", "actions")
    for r in rows:  # against the same backend's row, or a complete row of the other backend where that one is not
        refs = [x for x in rows if all(x[k] == r[k] for k in same) and x["row"] == pairs.get(r["row"])]
        ref = min(refs, key=lambda x: (not x["complete"], x["backend"] != r["backend"]), default=None)
        if ref is not None:
            r["paired"] = {"against": ref["row"], "against_backend": ref["backend"],
                           **compare(r["summary"]["outcomes"], ref["summary"]["outcomes"])}
    atomic_write_json(RESULTS / "students.json", {
        "benchmark": "student sizes (issue 29)", "split": split, "paper": PAPER,
        "command": "python benchmarks/students.py eval --student STUDENT --rows ROWS [--actions score]; ... report",
        "students": STUDENTS, "backends": BACKENDS,
        "training": {f"{s}/{r}": digest(t, s, r) for (s, r), t in training().items()},
        "rows": [{**r, "summary": {k: v for k, v in r["summary"].items() if k != "outcomes"}} for r in rows]})
    lines = ["# Student sizes (issue 29)", "",
             f"{split}, greedy, 50 steps. Backends: {'; '.join(f'`{k}`: {v}' for k, v in BACKENDS.items())}. "
             "Rows without LoRA: the packaged model with two few-shot examples; teacher memory: the shipped bank, "
             "top-2. Paired: games won by this row only / by the row it is set against (teacher memory against no "
             "memory, DuoMem against LoRA only; same student and play, the same backend unless only the other's "
             "row is complete: every trained llama.cpp row matches its GPU row game for game where both were played), "
             f"exact McNemar p, on the games both played. Paper: {PAPER}.", "",
             "| student | row | actions | backend | games | success % [95% CI] | paired | p | s/episode | "
             "peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, c = r["summary"], r.get("paired")
        n = f"{s['n_episodes']}" + ("" if r["complete"] else f" of {N_PLANNED[split]} (partial)")
        vs = f"{c['a_only']} / {c['b_only']} vs {c['against']} ({c['n_games']} games)" if c else "-"
        p = f"{c['p_value']:.3f}" if c else "-"
        lines.append(f"| {r['student']} | {r['row']} | {r['actions']} | {r['backend']} | {n} | {pct_ci(s)} | {vs} | {p} | "
                     f"{s['wall_s_per_episode']:.0f} | {round(s['peak_rss_mb']) if s['peak_rss_mb'] else '-'} |")
    lines += ["", *scaling_table(rows, split)]
    lines += ["", "s/episode: one episode's wall time; a batched row plays all its games at once (its throughput: "
              "`results/gpu-throughput.md`). Training (`runs/students/<student>/<row>.training.json`):", "",
              "| student | row | examples | epochs | steps | tokens/s | wall s | device | adapter (GGUF) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (student, row), t in training().items():
        gguf = t.get("adapter_gguf", {})
        adapter = f"{gguf['bytes'] / 1e6:.1f} MB, sha256 {gguf['sha256'][:12]}..." if gguf else "-"
        lines.append(f"| {student} | {row} | {t['examples']} | {t['epochs']} | {t['steps']} | "
                     f"{t['train_tokens_per_s']:,.0f} | {t['wall_s']:.0f} | {t.get('hardware', t.get('device', '-'))} "
                     f"| {adapter} |")
    lines += ["", "Adapters too large for the repository are not shipped: `students.py train` (then `distill export`) "
              "rebuilds each from its SFT set (GPU training is not bit-for-bit repeatable; the hash names the file the rows were "
              "played with)."]
    atomic_write_text(RESULTS / "students.md", "\n".join(lines) + "\n")
    for student in STUDENTS:
        if student not in {s for s, _, _ in REFERENCE}:  # the 135M has its pipeline's own report
            student_report(student, split, [r for r in rows if r["student"] == student])
    return RESULTS / "students.md"


TRAINING_DIGEST = ("examples", "epochs", "steps", "train_tokens_per_s", "wall_s", "hardware", "loss_first",
                   "loss_last", "adapter_gguf")
"""What a report keeps of each training record (the whole record is committed in :data:`TRAINED`)."""


def digest(record: dict, student: str, row: str) -> dict:
    """:data:`TRAINING_DIGEST` of a training record, with the path of the whole record."""
    return {**{k: record.get(k) for k in TRAINING_DIGEST}, "record": rel(TRAINED / student / f"{row}.training.json")}


def student_report(student: str, split: str, rows: list[dict]) -> Path:
    """``results/<student>-<split>/report.{json,md}``: one student's rows (Wilson intervals, per task type, the
    paired tests), its training, the settings it played with and how they were chosen, its on-device sample."""
    from duomem.eval.summary import pct_ci
    from duomem.jsonl import atomic_write_text

    folder = RESULTS / f"{student}-{split}"
    conf = STUDENTS[student]
    on_device = RESULTS / f"on-device-{student}.json"
    data = {"student": student, "params": conf["params"], "split": split, "n_games": N_PLANNED[split],
            "teacher": "ALFWorld handcoded expert (oracle)", "bank": rel(BANK), "paper": PAPER,
            "settings": {"top_k": 2, "memory_format": "abstract", "shots_trained_rows": conf["lora_shots"],
                         "shots_untrained_rows": 2, "epochs": conf["epochs"], "train": TRAIN + conf["train_args"],
                         "chosen_on": "not tuned: k and format are the 135M's (chosen on valid_seen), the training "
                                      "settings were set by the lent GPU's time; nothing was chosen on valid_unseen"},
            "command": f"python benchmarks/students.py eval --student {student} --rows ROWS [--backend transformers "
                       "--device cuda --batch 134]; python benchmarks/students.py report",
            "rows": [{**r, "summary": {k: v for k, v in r["summary"].items() if k != "outcomes"}} for r in rows],
            "training": {r: digest(t, s, r) for (s, r), t in training().items() if s == student},
            "on_device": rel(on_device) if on_device.is_file() else None}
    atomic_write_json(folder / "report.json", data)
    lines = [f"# {student} ({conf['params']}) on {split}", "",
             f"Rows of `benchmarks/students.py` ({N_PLANNED[split]} games each when complete; greedy, 50 steps); "
             f"settings: {data['settings']['chosen_on']}.", "",
             "| row | actions | backend | games | success % [95% CI] | paired | p | " + " | ".join(TYPES) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(TYPES)]
    for r in rows:
        s, c = r["summary"], r.get("paired")
        n = f"{s['n_episodes']}" + ("" if r["complete"] else " (partial)")
        vs = f"{c['a_only']} / {c['b_only']} vs {c['against']}" if c else "-"
        p = f"{c['p_value']:.3f}" if c else "-"
        per = " | ".join(f"{s['per_type'][t]['n_won']}/{s['per_type'][t]['n']}" if t in s["per_type"] else "-"
                         for t in TYPES)
        lines.append(f"| {r['row']} | {r['actions']} | {r['backend']} | {n} | {pct_ci(s)} | {vs} | {p} | {per} |")
    atomic_write_text(folder / "report.md", "\n".join(lines) + "\n")
    return folder


if __name__ == "__main__":
    main()
