"""What scoring the admissible commands costs against one plain completion, for one agent turn on llama.cpp.

The turn: the first kitchen (cool) game of valid_unseen, the agent's prompt with two examples (~1,500 tokens), after
one `go to countertop` command; the previous turn's prompt is cached, as in play. Each measurement is taken twice
(the second is reported: warm caches), then cold (nothing cached). Writes results/scoring-cost.{json,md}.

Usage: python benchmarks/scoring_cost.py [--model smollm2-135m] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from duomem.jsonl import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _turn() -> tuple[list, list, list[str]]:
    """The agent's first and second prompts of the game, and the second turn's admissible commands."""
    from duomem.agent.prompts import conversation, task_prompt
    from duomem.agent.trajectory import Step
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks

    task = next(t for t in load_tasks("valid_unseen") if t.task_type == "cool")
    env = AlfworldEnv(max_steps=30, expert=False)
    first = env.reset(task)
    first_user = task_prompt(task.task_type, first.text, shots=2)
    command = next(c for c in first.admissible_commands if c.startswith("go to countertop"))
    second = env.step(command)
    env.close()
    steps = [Step(kind="action", text=command, observation=second.text)]
    return conversation(first_user, []), conversation(first_user, steps), list(second.admissible_commands)


def measure(model_name: str, threads: int) -> dict:
    from duomem.llm import load_chat_model
    from duomem.llm.base import Candidate

    messages1, messages2, admissible = _turn()
    candidates = [Candidate(c) for c in admissible] + [Candidate("think:", ends_turn=False)]
    model = load_chat_model(model_name, threads=threads, n_ctx=4096)
    rows: dict[str, dict] = {}
    try:
        for what in ("score", "complete", "score", "complete"):  # the second of each is kept
            model.reset_cache()
            model.complete(messages1, max_tokens=1)  # the previous turn, cached
            wall, cpu = time.perf_counter(), _cpu()
            if what == "score":
                s = model.score(messages2, candidates)
                detail = {"candidates": len(candidates), "candidate_tokens": sum(s.n_tokens),
                          "evaluated_tokens": s.evaluated_tokens, "prompt_tokens": s.prompt_tokens,
                          "cached_tokens": s.cached_tokens}
            else:
                c = model.complete(messages2, max_tokens=64, stop=["\n"])
                detail = {"generated_tokens": c.completion_tokens, "prompt_tokens": c.prompt_tokens,
                          "cached_tokens": c.cached_tokens}
            rows[what] = {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu() - cpu, **detail}
        for what in ("score", "complete"):
            model.reset_cache()
            wall, cpu = time.perf_counter(), _cpu()
            if what == "score":
                model.score(messages2, candidates)
            else:
                model.complete(messages2, max_tokens=64, stop=["\n"])
            rows[f"cold {what}"] = {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu() - cpu}
    finally:
        model.close()
    return {"benchmark": "scoring cost (one agent turn)", "model": model_name, "threads": threads,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "command": f"python benchmarks/scoring_cost.py --model {model_name} --threads {threads}",
            "date": time.strftime("%Y-%m-%d"), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    data = measure(args.model, args.threads)
    atomic_write_json(HERE / "results" / "scoring-cost.json", data)
    lines = ["# Scoring cost, one agent turn", "", f"`{data['command']}` ({data['date']}, {data['machine']}; timings "
             "are not asserted anywhere)", "", "| call | wall s | CPU s | detail |", "|---|---|---|---|"]
    for what, r in data["rows"].items():
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r.items() if k not in ("wall_s", "cpu_s"))
        lines.append(f"| {what} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {detail} |")
    atomic_write_text(HERE / "results" / "scoring-cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
