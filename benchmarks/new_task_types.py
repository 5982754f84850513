"""New kinds of task taught by memory alone (issue 28): the 135M student trained without one task type, then
played on that type's games without and with the teacher's memories of it.

Usage:
  python benchmarks/new_task_types.py sft [--types heat,cool,clean]       # here: two SFT sets per held-out type
  python benchmarks/students.py stage --student smollm2-135m --rows $(python benchmarks/new_task_types.py rows)
  bash benchmarks/gpu_students.sh setup smollm2-135m ROWS...             # there (one call per .carry folder)
  EPOCHS=1 bash benchmarks/gpu_students.sh train smollm2-135m ROWS...    # one after another (queued)
  bash benchmarks/gpu_students.sh watch SECONDS                          # adapters back in parts
  python benchmarks/new_task_types.py eval [--types ...] [--rows ...] [--workers 2]   # here: llama.cpp
  bash benchmarks/gpu_students.sh eval-new-types TYPES [ROWS]             # there: the same rows, transformers
  python benchmarks/new_task_types.py tune [--types heat] [--variants g,g-k0,g-1]   # valid_seen choices, llama.cpp
  python benchmarks/new_task_types.py report                               # results/new-task-types.{json,md}

Per held-out type T (valid_unseen's games of T, all of them):
  a  LoRA trained without T (``lora-no-T``: the shipped LoRA-only recipe, T's demonstrations left out), no memory
  b  the same LoRA played with the teacher bank (every type's memories, T's included), top-2
  c  LoRA trained with memories in its prompts without T (``duomem-no-T``: the shipped DuoMem recipe; T's
     demonstrations and T's memories left out of every training prompt), played with the bank
  c2 as c, with half the training trajectories shown another type's solved examples (``duomem-swap-no-T``,
     ``fewshot_swap`` 0.5): c's prompts always showed the task's own examples, so nothing taught it to read memories
  d  the shipped students trained on all six types (their committed valid_unseen rows, T's games): LoRA only for
     a and b, DuoMem for c
  e  control for the prompt: d's LoRA-only student played as a-c are, with pick's solved examples for T's
  f  a's LoRA after a bank update of T (``duomem memory add --transcripts``, :func:`bank_update`): the prompt's
     solved examples are T's teacher episodes most similar to the task (``--examples bank``), no memory block
  g  c's LoRA after the same update: T's episodes as its examples and the memories (top-2) beside them
Rows a-c and e-g play T's games as a new kind of task (``--unseen-types T``): their prompts show two solved examples
of ``pick`` in place of T's (the shipped students' prompts show two of the task's own type; with none at all the
135M students lose the layout they learned: the shipped LoRA won 0 of the first 10 cool games), so a and the
LoRA's weights never see T's procedure, and b and c get it from the bank's memories only.
The memory settings (k = 2, the bank's abstract format, similarity retrieval) are the shipped DuoMem student's,
chosen on valid_seen before this benchmark (benchmarks/README section 10); nothing is chosen on valid_unseen.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from search_context import BANK, demonstrations
from students import REFERENCE, STUDENTS, digest, lora_dir, rel, sft_dir, training

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STUDENT = "smollm2-135m"
TYPES = ("heat", "cool", "clean")
"""The two-step types the issue names first (examine is a fourth: ``--types heat,cool,clean,examine``)."""
RECIPES = {"lora": (False, 0.0), "duomem": (True, 0.0), "duomem-swap": (True, 0.5)}
"""Recipe -> (the retrieved memories in the training prompts, the share of trajectories trained with another type's
solved examples: ``duomem-swap`` learns to take the procedure from the memories, as an unseen type needs)."""
PLAY = {"a": ("lora", 0, "fixed"), "b": ("lora", 2, "fixed"), "c": ("duomem", 2, "fixed"),
        "c2": ("duomem-swap", 2, "fixed"), "e": ("shipped", 0, "fixed"), "f": ("lora", 0, "bank"),
        "g": ("duomem", 2, "bank")}
"""Row -> (recipe of its LoRA, memories shown (top-k), where the solved examples come from); ``shipped``: the
shipped LoRA-only student's adapter; ``bank`` examples: the type's solved episodes from the bank update
(:func:`bank_update`)."""
SHIPPED_LORA = ROOT / "adapters" / "smollm2-135m-lora" / "adapter.gguf"
EPOCHS = 1
"""Training epochs of the held-out LoRAs (``EPOCHS=1`` for gpu_students.sh): set by the lent GPU's time; the shipped
students of row d trained for 2, so d is an upper reference, and a against c is the comparison that counts."""
RECORDS = HERE / "runs" / "new-task-types" / "valid_unseen"
TUNE = {"g": (2, 2), "g-k0": (2, 0), "g-1": (1, 2)}
"""The choices behind rows f and g, made on valid_seen (``tune``): variant -> (the type's solved episodes shown,
memories beside them: top-k), each played with c's LoRA after the bank update on valid_seen's games of the
held-out type. ``g`` is the setting rows f and g use (the shipped DuoMem student's two examples and k = 2)."""
TUNING = HERE / "runs" / "new-task-types" / "valid_seen"
BANKS = ROOT / "runs" / "new-task-types" / "banks"
RESULTS = HERE / "results" / "new-task-types"


def row_name(recipe: str, task_type: str) -> str:
    return f"{recipe}-no-{task_type}"


def sft(types: list[str]) -> None:
    from duomem.distill.dataset import build_dataset

    demos = demonstrations()
    for t in types:
        for recipe, (memory, swap) in RECIPES.items():
            out = sft_dir(STUDENT, row_name(recipe, t))
            if (out / "dataset.json").is_file():
                continue
            meta = build_dataset(demos, out, shots=STUDENTS[STUDENT]["lora_shots"],
                                 memory=str(BANK) if memory else None, top_k=2, exclude="floor_plan",
                                 leave_out_types=[t], fewshot_swap=swap)
            print(f"{out.name}: {meta['examples']} examples ({meta['left_out_type_trajectories']} of {t} left out)")


def bank_update(task_type: str) -> Path:
    """The teacher bank as a student trained without ``task_type`` would have shipped it (the type's memories left
    out), then updated the way a user adds a new kind of task: ``duomem memory add --transcripts`` from the
    teacher's demonstrations of the games the bank's memories of the type were written from. Its memories are
    the teacher bank's; its update keeps the type's solved episodes too (rows f and g show them as examples), and
    the manifest records what the update added."""
    import json

    from duomem.agent.trajectory import Trajectory
    from duomem.jsonl import atomic_write_text, read_jsonl
    from duomem.memory.bank import MemoryBank
    from duomem.memory.embed import load_embedder

    out = BANKS / task_type
    if (out / "manifest.json").is_file() and json.loads((out / "manifest.json").read_text()).get("updates"):
        return out
    bank = MemoryBank.load(BANK)
    MemoryBank.create(out, bank.without_types([task_type]).entries, load_embedder(bank.manifest["embedder"]),
                      bank.manifest["memory_format"])
    games = {g for e in bank.entries if e.task_type == task_type for g in e.source_game_ids}
    source = BANKS / f"{task_type}.jsonl"
    atomic_write_text(source, "".join(Trajectory.model_validate(r).model_dump_json() + "\n"
                                      for r in read_jsonl(demonstrations()) if r["game_id"] in games))
    subprocess.run(["duomem", "memory", "add", rel(out), "--trajectories", rel(source), "--writer", "plan",
                    "--task-types", task_type, "--transcripts"], check=True, cwd=ROOT)
    return out


def play_command(task_type: str, adapter: Path, split: str, shots: int, top_k: int, examples: str, out: Path,
                 name: str) -> list[str]:
    """The ``duomem eval`` command (less its executor) that plays ``split``'s games of the held-out ``task_type``
    as a new kind of task: ``shots`` solved examples (``examples``: ``fixed`` ones of pick, or ``bank``: the type's
    episodes from the bank update) and ``top_k`` memories (the update's bank with ``bank`` examples, else the
    shipped one)."""
    cmd = ["duomem", "eval", "--model", STUDENT, "--adapter", rel(adapter), "--shots", str(shots), "--split", split,
           "--task-types", task_type, "--unseen-types", task_type, "--out", rel(out), "--name", name, "--no-progress"]
    if examples == "bank":
        return [*cmd, "--memory", rel(bank_update(task_type)), "--top-k", str(top_k), "--examples", "bank"]
    return [*cmd, "--memory", rel(BANK), "--top-k", str(top_k)] if top_k else cmd


def tune(types: list[str], variants: list[str], workers: int) -> None:
    """Play the :data:`TUNE` variants on valid_seen's games of each held-out type (llama.cpp, ``workers`` games at
    a time; resumable)."""
    for t in types:
        adapter = lora_dir(STUDENT, row_name("duomem", t)) / "adapter.gguf"
        if not adapter.exists():
            raise SystemExit(f"error: {adapter} is missing: train {row_name('duomem', t)} first (see the usage)")
        for v in variants:
            shots, top_k = TUNE[v]
            cmd = [*play_command(t, adapter, "valid_seen", shots, top_k, "bank", TUNING / t / v,
                                 f"{v}-no-{t}-valid_seen"), "--workers", str(workers)]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)


def tuning_table(types: list[str]) -> tuple[dict, list[str]]:
    """The :data:`TUNE` variants played on valid_seen so far: per type, each variant's wins and its paired test
    against ``g``."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import load_records
    from duomem.eval.stats import compare
    from duomem.eval.summary import pct_ci, summarize
    from duomem.jsonl import jsonl_exists

    out: dict = {}
    lines = ["", "Choices on valid_seen (`new_task_types.py tune`; all of valid_seen's games of the type, g's LoRA "
                 "after the bank update): solved episodes shown and memories beside them; paired against the "
                 "setting rows f and g use (g: 2 episodes, k = 2).", "",
             "| type | variant | episodes shown | memories (k) | won | success % | vs g |",
             "|---|---|---|---|---|---|---|"]
    for t in types:
        found = {v: recs for v in TUNE if jsonl_exists(TUNING / t / v / "episodes.jsonl")
                 and (recs := load_records(TUNING / t / v))}
        if not found:
            continue
        games = sum(task.task_type == t for task in load_tasks("valid_seen"))
        sums = {v: summarize(recs, v, "llm", STUDENT, "valid_seen") for v, recs in found.items()}
        out[t] = {}
        for v, summ in sums.items():
            pair = compare(summ["outcomes"], sums["g"]["outcomes"]) if v != "g" and "g" in sums else None
            out[t][v] = {"shots": TUNE[v][0], "top_k": TUNE[v][1], **{x: summ[x] for x in ROW_FIELDS if x in summ},
                         "vs_g": pair, "records": rel(TUNING / t / v)}
            vs = f"{pair['a_only']} / {pair['b_only']}, p = {pair['p_value']:.3f}" if pair else "-"
            part = f" ({summ['n_episodes']} of {games} games)" if summ["n_episodes"] < games else ""
            out[t][v]["complete"] = not part
            lines.append(f"| {t} | {v} | {TUNE[v][0]} | {TUNE[v][1]} | {summ['n_won']}/{summ['n_episodes']}{part} | "
                         f"{pct_ci(summ)} | {vs} |")
    return out, lines if out else []


def records(task_type: str, row: str, backend: str = "llamacpp", runs: Path = RECORDS) -> Path:
    """A row's records: ``<type>/<row>`` (llama.cpp on CPU cores) or ``<type>/<row>-<backend>``."""
    return runs / task_type / (row if backend == "llamacpp" else f"{row}-{backend}")


def evaluate(types: list[str], rows: list[str], workers: int, backend: str = "llamacpp",
             runs: Path = RECORDS) -> None:
    """Play ``rows`` for each held-out type: with llama.cpp one after another (``workers`` games at a time); with
    transformers (a GPU) every row side by side, each all of its type's games in one batch."""
    running = []
    for t in types:
        for row in rows:
            recipe, top_k, examples = PLAY[row]
            adapter = SHIPPED_LORA if recipe == "shipped" else lora_dir(STUDENT, row_name(recipe, t))
            if backend == "llamacpp" and recipe != "shipped":  # llama.cpp reads the exported GGUF LoRA,
                adapter = adapter / "adapter.gguf"              # transformers the peft folder
            if not adapter.exists():
                raise SystemExit(f"error: {adapter} is missing: train {row_name(recipe, t)} first (see the usage)")
            cmd = play_command(t, adapter, "valid_unseen", STUDENTS[STUDENT]["lora_shots"], top_k, examples,
                               records(t, row, backend, runs), f"{row}-no-{t}")
            if backend == "llamacpp":
                cmd += ["--workers", str(workers)]
            else:
                cmd += ["--backend", backend, "--device", "cuda", "--batch", "64"]
            print(" ".join(cmd), flush=True)
            if backend == "llamacpp":
                subprocess.run(cmd, check=True, cwd=ROOT)
            else:
                running.append(subprocess.Popen(cmd, cwd=ROOT))
    if any(p.wait() for p in running):
        raise SystemExit("error: a row failed (see its output above)")


ROW_FIELDS = ("n_episodes", "n_won", "success_rate", "success_ci95", "mean_steps", "invalid_action_rate",
              "wall_s_per_episode", "backend", "complete")
"""What the results file keeps of each row's summary (the rest is in the row's records: the tree has a budget)."""


def played(task_type: str, row: str) -> Path | None:
    """A row's records: played with llama.cpp on CPU cores, or else batched with transformers on a GPU."""
    return next((r for r in (records(task_type, row), records(task_type, row, "transformers")) if r.is_dir()), None)


def conduct(task_type: str, row: str, recs: list) -> dict[str, int]:
    """How many of a row's games played the type's own command at least once (``cool X with Y``, ...) and picked up
    the task's object (the game answered "You pick up ..."): whether a student that never learned the type does any
    of it. For rows shown the bank's episodes: of the games won, those where the object was picked up at a place the
    first example visits, and those whose places up to it are the first example's, in order (the example copied)."""
    import re

    verb = {"examine": "use"}.get(task_type, task_type)

    def sent(rec, prefix: str, answer: str = "") -> bool:
        return any(s.kind == "action" and s.text.startswith(prefix) and s.observation.startswith(answer)
                   for s in rec.trajectory.steps)

    out = {"games": len(recs), "type_command": sum(sent(r, f"{verb} ") for r in recs),
           "object_taken": sum(sent(r, f"take {r.trajectory.params.get('object', '?')} ", "You pick up")
                               for r in recs)}
    if PLAY[row][2] == "bank":
        from duomem.envs.alfworld_data import load_tasks
        from duomem.memory.bank import MemoryBank

        tasks = {t.game_id: t for t in load_tasks("valid_unseen")}
        bank = MemoryBank.load(bank_update(task_type)).retriever(PLAY[row][1], transcripts=True)
        at_place = copied = 0
        for rec in (r for r in recs if r.won):
            example = bank.examples_for(tasks[rec.game_id], 1)[0][1]
            visits = re.findall(r"^> go to (.+)$", example, flags=re.M)
            acts = [s.text for s in rec.trajectory.steps if s.kind == "action"]
            take = next(i for i, a in enumerate(acts) if a.startswith("take "))
            gone = [a.removeprefix("go to ") for a in acts[:take] if a.startswith("go to ")]
            at_place += acts[take].split(" from ")[-1] in visits
            copied += gone == visits[:len(gone)]
        out.update(won_at_example_place=at_place, won_on_example_path=copied)
    return out


def report(types: list[str]) -> Path:
    """results/new-task-types.{json,md}: per type, rows a-f with Wilson intervals, c, c2 and f paired against a and
    b (and c against d), and what the bank update of the type added."""
    import json

    from duomem.eval.runner import load_records
    from duomem.eval.stats import compare
    from duomem.eval.summary import pct_ci, summarize
    from duomem.jsonl import atomic_write_json, atomic_write_text

    reference = {"a": "lora", "b": "lora", "c": "duomem", "c2": "duomem", "f": "lora", "g": "duomem"}
    out: dict = {"benchmark": "new task types (issue 28)", "student": STUDENT, "split": "valid_unseen",
                 "bank": str(BANK.relative_to(ROOT)), "types": {}}
    lines = ["# New kinds of task by memory alone (issue 28)", "",
             f"The {STUDENT} student trained without one task type, played on that type's valid_unseen games "
             "(greedy, 50 steps; llama.cpp on 2 CPU cores, or batched transformers on one H100 where marked *). a: "
             "LoRA without the type, no memory; b: the same with the teacher bank (top-2); c: LoRA trained with "
             "memories, without the type, played with the bank; c2: as c, half its training prompts showing another "
             "type's solved examples; d: the shipped students trained on every type (LoRA only beside a and b, "
             "DuoMem beside c); e: d's LoRA only played as a-c are, with pick's solved examples in place of the "
             "type's (a control for the prompt); f: a's LoRA shown the type's own teacher episodes from the bank "
             "update as its solved examples (`--examples bank`, no memory block); g: c's LoRA with the same "
             "examples and the memories. Paired: games won by the row only / by the other row only, exact McNemar "
             "p. -: not played.", "",
             "| type | games | a | b | c | c2 | f | g | d (LoRA only / DuoMem) | e | c vs a | f vs a | g vs a | g vs c "
             "| bank update |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in types:
        found = {row: (path, load_records(path)) for row in PLAY if (path := played(t, row))}
        full = {r: [x for x in load_records(REFERENCE[(STUDENT, r, "free")]) if x.task_type == t]
                for r in ("lora", "duomem")}
        summaries = {row: summarize(recs, row, "llm", STUDENT, "valid_unseen") for row, (_, recs) in found.items()}
        summaries.update({f"d-{r}": summarize(recs, f"d-{r}", "llm", STUDENT, "valid_unseen") for r, recs in full.items()})
        paired = {f"{row} vs {other}": compare(summaries[row]["outcomes"], summaries[other]["outcomes"])
                  for row in ("c", "c2", "f", "g") for other in ("a", "b", "c", "d-duomem")
                  if row != other and {row, other} <= set(summaries)}
        manifest = BANKS / t / "manifest.json"
        update = json.loads(manifest.read_text())["updates"][-1] if manifest.is_file() else None
        behaviour = {row: conduct(t, row, recs) for row, (_, recs) in found.items()}
        out["types"][t] = {"rows": {k: {x: v[x] for x in ROW_FIELDS if x in v} for k, v in summaries.items()},
                           "records": {row: rel(path) for row, (path, _) in found.items()}, "conduct": behaviour,
                           "paired": paired, "reference_rows": reference, "bank_update": update}
        games = len(full["lora"])
        cell = {k: pct_ci(v) + ("*" if k in found and found[k][0].name.endswith("-transformers") else "")
                + (f" ({v['n_episodes']} of {games} games)" if v["n_episodes"] < games else "")
                for k, v in summaries.items()}
        vs = {k: f"{c['a_only']} / {c['b_only']}, p = {c['p_value']:.3f}" for k, c in paired.items()}
        added = f"{update['memories_added']} memories, {update['bytes_added'] / 1000:.0f} kB" if update else "-"
        lines.append(f"| {t} | {games} | " + " | ".join(cell.get(r, "-") for r in ("a", "b", "c", "c2", "f", "g"))
                     + f" | {cell['d-lora']} / {cell['d-duomem']} | {cell.get('e', '-')} | "
                     + " | ".join(vs.get(k, "-") for k in ("c vs a", "f vs a", "g vs a", "g vs c")) + f" | {added} |")
    lines += ["", "What the rows did (games of each row): the type's own command played at least once (`cool X with "
                  "Y`, ...), the task's object taken; for f and g, of the games won, those where the object lay at a "
                  "place the first example visits and those whose places up to it are the first example's, in order.",
              "", "| type | row | won | the type's command | object taken | won at an example's place | won on its "
              "path |", "|---|---|---|---|---|---|---|"]
    for t, v in out["types"].items():
        for row, c in v["conduct"].items():
            lines.append(f"| {t} | {row} | {v['rows'][row]['n_won']}/{c['games']} | {c['type_command']} | "
                         f"{c['object_taken']} | {c.get('won_at_example_place', '-')} | "
                         f"{c.get('won_on_example_path', '-')} |")
    out["valid_seen"], tuned = tuning_table(types)
    lines += tuned
    out["average"] = {"target": "the DuoMem student without the type (c, or g after the bank update) >= a + 30 "
                                "points and at least halfway from a to d, averaged over the held-out types"}
    for row in ("c", "g"):  # each over the types where it and a were both played
        done = [t for t, v in out["types"].items() if {"a", row} <= set(v["rows"])]
        if not done:
            continue
        mean = {k: 100 * sum(out["types"][t]["rows"][k]["success_rate"] for t in done) / len(done)
                for k in ("a", row, "d-duomem")}
        gap, gain = mean["d-duomem"] - mean["a"], mean[row] - mean["a"]
        out["average"][row] = {"types": done, **{f"{k}_pct": round(v, 1) for k, v in mean.items()},
                               f"{row}_minus_a_points": round(gain, 1),
                               "share_of_a_to_d": round(gain / gap, 2) if gap else None}
        lines += ["" if row == "c" else None, f"Average over {', '.join(done)} (the types with rows a and {row}): a "
                  f"{mean['a']:.1f}%, {row} {mean[row]:.1f}%, d (DuoMem) {mean['d-duomem']:.1f}%; {row} - a = "
                  f"{gain:+.1f} points" + (f", {gain / gap:.0%} of the way from a to d" if gap else "")
                  + " (target: +30 points and half the way)."]
    lines = [line for line in lines if line is not None]
    wanted = {row_name(x, t) for t in types for x in RECIPES}
    trainings = {r: t for (s, r), t in training().items() if s == STUDENT and r in wanted}
    out["training"] = {r: digest(t, STUDENT, r) for r, t in trainings.items()}
    lines += ["", f"The held-out LoRAs trained for {EPOCHS} epoch (the shipped students of d for 2), rank 16, on "
                  "the 3,356 expert demonstrations less the held-out type's: "
                  + "; ".join(f"{r} {t['steps']} steps, {t['train_tokens_per_s'] / 1000:.1f}k tokens/s on "
                              f"{t['hardware']}" for r, t in trainings.items()) + ".",
              "Rows a-c and e-g play with `--unseen-types T`: two solved examples of `pick` in the prompt in place of "
              "T's (d's prompts show two of T; f's and g's show T's from the bank update)."]
    atomic_write_json(RESULTS.with_suffix(".json"), out)
    atomic_write_text(RESULTS.with_suffix(".md"), "\n".join(lines) + "\n")
    return RESULTS.with_suffix(".md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("sft", "rows", "eval", "tune", "report"):
        p = sub.add_parser(name)
        p.add_argument("--types", default=",".join(TYPES))
    sub.choices["eval"].add_argument("--rows", default=",".join(PLAY))
    sub.choices["eval"].add_argument("--workers", type=int, default=2)
    sub.choices["eval"].add_argument("--backend", choices=("llamacpp", "transformers"), default="llamacpp",
                                     help="transformers: every row side by side on a GPU (gpu_students.sh)")
    sub.choices["eval"].add_argument("--runs", type=Path, default=RECORDS, help="where the records go")
    sub.choices["tune"].add_argument("--variants", default=",".join(TUNE))
    sub.choices["tune"].add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    types = args.types.split(",")
    if args.command == "sft":
        sft(types)
    elif args.command == "rows":  # the trained rows, for students.py stage and gpu_students.sh
        print(",".join(row_name(r, t) for t in types for r in RECIPES))
    elif args.command == "eval":
        evaluate(types, args.rows.split(","), args.workers, args.backend, args.runs)
    elif args.command == "tune":
        tune(types, args.variants.split(","), args.workers)
    else:
        print(report(types))


if __name__ == "__main__":
    main()
