"""How fast the game engine steps, with and without duomem's memoised text generation (issue 15's environment time).

Usage: python benchmarks/env_speed.py [--games 6] [--steps 20]   -> results/env-speed.{json,md}
Each variant runs in its own process: reset and random admissible commands (seeded) on the first valid_unseen game
of each task type; the same commands in both, and the test suite checks that the observations are identical.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import time
from pathlib import Path

from duomem.eval.summary import host
from duomem.jsonl import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent


def _measure(memoize: bool, games: int, steps: int, queue) -> None:
    from duomem.envs import alfworld
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks

    if not memoize:
        alfworld._memoize_text_generation = lambda: None  # TextWorld as released
    seen: dict[str, object] = {}
    for t in load_tasks("valid_unseen"):
        seen.setdefault(t.task_type, t)
    tasks = list(seen.values())[:games]
    env = AlfworldEnv(expert=False)
    rng = random.Random(0)
    reset_s = step_s = 0.0
    n = 0
    texts = []
    for task in tasks:
        start = time.perf_counter()
        obs = env.reset(task, seed=0)
        reset_s += time.perf_counter() - start
        for _ in range(steps):
            command = rng.choice(obs.admissible_commands)
            start = time.perf_counter()
            obs = env.step(command)
            step_s += time.perf_counter() - start
            n += 1
            texts.append(obs.text)
            if obs.done:
                break
    env.close()
    queue.put({"memoized": memoize, "games": len(tasks), "steps": n, "s_per_step": step_s / n,
               "steps_per_s": n / step_s, "s_per_reset": reset_s / len(tasks), "observations": texts})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for memoize in (False, True):
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(memoize, args.games, args.steps, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    same = rows[0].pop("observations") == rows[1].pop("observations")
    result = {"rows": rows, "identical_observations": same, "speed_up": rows[0]["s_per_step"] / rows[1]["s_per_step"],
              "host": host(),
              "command": f"python benchmarks/env_speed.py --games {args.games} --steps {args.steps}"}
    atomic_write_json(HERE / "results" / "env-speed.json", result)
    lines = ["# Game engine speed (valid_unseen, random admissible commands, one process; a new game loaded at each reset)", "",
             "| engine | games | steps | s/step | steps/s | s/(load + reset) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'memoised (duomem)' if r['memoized'] else 'as released'} | {r['games']} | {r['steps']} | "
                     f"{r['s_per_step']:.3f} | {r['steps_per_s']:.1f} | {r['s_per_reset']:.2f} |")
    lines += ["", f"Speed-up per step: {result['speed_up']:.2f}x; observations identical: {same}.",
              f"Command: `{result['command']}`"]
    atomic_write_text(HERE / "results" / "env-speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
