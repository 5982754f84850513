"""Write duomem/agent/fewshot.json.xz: two solved examples per task type for the agent's prompt.

The examples are games that no teacher can collect and no evaluation uses: ``duomem data generate`` draws them
on :data:`FEWSHOT_SCENES`, floor plans that none of ALFWorld's task sets (train, valid_seen, valid_unseen) uses
and that the generated test split of seed 0 (benchmarks section 5) does not use either. Each is played by
ALFWorld's expert, with detours removed and the project's thought annotations (duomem.agent.thoughts).
So a teacher may collect every ALFWorld train game without any training prompt holding its own answer;
``duomem.distill.dataset.build_dataset`` still leaves out any training trajectory of a shown few-shot game
(the ``train`` set, ``duomem/agent/fewshot_train.json.xz``, which every committed result used, is of train games).

Run: python scripts/build_fewshot.py  (generates its games in a temporary folder, in rounds of 8 per task type still short of examples; about 10 min on one core).
"""

from __future__ import annotations

import json
import lzma
import tempfile
from pathlib import Path

from duomem.agent.demonstrations import demonstration
from duomem.envs.alfworld_data import load_tasks
from duomem.envs.generate import generate_tasks
from duomem.eval.player import play
from duomem.eval.spec import RolloutSpec
from duomem.memory.provenance import FEWSHOT_SCENES

PER_TYPE = 2
MAX_ACTIONS = 10
TASKS_PER_TYPE = 8
ROUNDS = 5
SEED = 14
OUT = Path(__file__).resolve().parents[1] / "duomem" / "agent" / "fewshot.json.xz"


def main() -> None:
    types = ("pick", "clean", "heat", "cool", "examine", "pick_two")
    chosen: dict[str, list] = {}
    objects: dict[str, set] = {}
    spec = RolloutSpec(policy="expert")
    with tempfile.TemporaryDirectory(prefix="duomem-fewshot-") as tmp:
        for round_ in range(ROUNDS):
            missing = [t for t in types if len(chosen.get(t, [])) < PER_TYPE]
            if not missing:
                break
            out = Path(tmp) / f"round{round_}"
            generate_tasks(out, n=len(missing) * TASKS_PER_TYPE, seed=SEED + round_, task_types=missing,
                           scenes=list(FEWSHOT_SCENES), verify="expert", workers=1, show_progress=False)
            for task in load_tasks("train", out):
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
    missing = [t for t in types if len(chosen.get(t, [])) < PER_TYPE]
    if missing:
        raise SystemExit(f"too few short expert games for {', '.join(missing)}; raise TASKS_PER_TYPE or ROUNDS")
    examples = [ex for t in sorted(chosen) for ex in chosen[t]]
    OUT.write_bytes(lzma.compress((json.dumps(examples, indent=1) + "\n").encode(), preset=9 | lzma.PRESET_EXTREME))
    print(f"wrote {len(examples)} examples to {OUT}")


if __name__ == "__main__":
    main()
