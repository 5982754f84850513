"""Write duomem/agent/fewshot.json: two solved examples per task type for the agent's prompt.

Each example is a train game played by ALFWorld's expert, with detours removed and the
project's thought annotations (duomem.agent.thoughts). Run: python scripts/build_fewshot.py  (needs the train
split prepared: duomem data prepare --splits train).
"""

from __future__ import annotations

import json
from pathlib import Path

from duomem.agent.demonstrations import demonstration
from duomem.envs.alfworld_data import load_tasks
from duomem.eval.player import play
from duomem.eval.spec import RolloutSpec

PER_TYPE = 2
MAX_ACTIONS = 10
OUT = Path(__file__).resolve().parents[1] / "duomem" / "agent" / "fewshot.json"


def main() -> None:
    tasks = load_tasks("train")
    spec = RolloutSpec(policy="expert")
    chosen: dict[str, list] = {}
    objects: dict[str, set] = {}
    for task in tasks[::7]:
        if len(chosen.get(task.task_type, [])) >= PER_TYPE:
            continue
        if task.params.get("object") in objects.get(task.task_type, set()):
            continue
        (record,) = play(spec, [(task, 0)])
        demo = demonstration(record.trajectory)
        if demo is None or not 3 <= len(demo.actions) <= MAX_ACTIONS:
            continue
        chosen.setdefault(task.task_type, []).append(demo.model_dump(exclude={"model"}))
        objects.setdefault(task.task_type, set()).add(task.params.get("object"))
        if sum(len(v) for v in chosen.values()) == 6 * PER_TYPE:
            break
    examples = [ex for t in sorted(chosen) for ex in chosen[t]]
    OUT.write_text(json.dumps(examples, indent=1) + "\n")
    print(f"wrote {len(examples)} examples to {OUT}")


if __name__ == "__main__":
    main()
