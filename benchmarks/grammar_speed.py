"""Grammar-constrained decoding over ScienceWorld's valid actions: the radix-tree GBNF (``duomem.llm.constrain.gbnf``)
against one alternative per command, on the same prompt and commands (docs/design.md, ``--actions grammar``).

Usage: python benchmarks/grammar_speed.py   # needs `duomem data prepare --env scienceworld` (dev) and Java
Writes results/grammar-speed.{json,md}: per game, the number of valid actions, seconds for one constrained
completion (24 tokens at most, smollm2-135m, llama.cpp, one thread) under each grammar, and whether both answered
the same.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import duomem.llm.llamacpp as backend
from duomem.envs.alfworld_data import load_tasks
from duomem.envs.scienceworld import ScienceWorldEnv
from duomem.envs.scienceworld_data import scienceworld_root
from duomem.jsonl import atomic_write_json, atomic_write_text
from duomem.llm import constrain, load_chat_model
from duomem.llm.base import Constraint

RESULTS = Path(__file__).resolve().parent / "results"
GAMES = (0, 100, 200)
"""Dev games (index order) whose first observation's valid actions are used."""
MESSAGES = [{"role": "system", "content": "You play a science game. Answer with one command."},
            {"role": "user", "content": "You are in the kitchen. Your task is to boil water. What do you do?"}]


def flat(constraint: Constraint) -> str:
    """The grammar before the radix tree: one alternative per command."""
    lines = constrain.gbnf(constraint).splitlines()
    commands = " | ".join(json.dumps(c) for c in dict.fromkeys(constraint.commands))
    return "\n".join([lines[0], f"command ::= {commands}", *[ln for ln in lines if ln.startswith("thought")]]) + "\n"


def main() -> None:
    tasks = load_tasks("dev", scienceworld_root())
    env = ScienceWorldEnv(expert=False)
    lists = [env.reset(tasks[i]).admissible_commands for i in GAMES]
    env.close()
    model = load_chat_model("smollm2-135m", threads=1, n_ctx=4096)
    rows = []
    for game, commands in zip(GAMES, lists, strict=True):
        choice = Constraint(tuple(commands), True)
        times, texts = {}, {}
        for name, grammar in (("flat", flat), ("radix", constrain.gbnf)):
            backend.gbnf = grammar  # the grammar the llama.cpp backend builds for this completion
            try:
                start = time.perf_counter()
                texts[name] = model.complete(MESSAGES, max_tokens=24, temperature=0.0, choices=choice).text
                times[name] = time.perf_counter() - start
            finally:
                backend.gbnf = constrain.gbnf
        rows.append({"game": tasks[game].game_id, "actions": len(commands), "flat_s": times["flat"],
                     "radix_s": times["radix"], "same_answer": texts["flat"] == texts["radix"]})
    out = {"command": "python benchmarks/grammar_speed.py", "model": "smollm2-135m", "split": "dev",
           "host": platform.processor() or platform.machine(), "rows": rows}
    atomic_write_json(RESULTS / "grammar-speed.json", out)
    lines = ["# Constrained decoding over ScienceWorld's valid actions", "", f"`{out['command']}`; smollm2-135m, "
             "llama.cpp, one thread, one completion of at most 24 tokens per grammar.", "",
             "| game | valid actions | one alternative per command, s | radix tree, s | same answer |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['game']} | {r['actions']} | {r['flat_s']:.2f} | {r['radix_s']:.2f} | {r['same_answer']} |"
              for r in rows]
    atomic_write_text(RESULTS / "grammar-speed.md", "\n".join(lines) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
