"""Write duomem/agent/fewshot_scienceworld.json.xz: up to two solved examples per ScienceWorld task for the prompt.

The examples are ScienceWorld's own gold paths on TRAIN variations (never dev or test): for each of the 30 tasks,
:data:`CANDIDATES` train variations sampled with :data:`SEED` (``duomem.envs.scienceworld_data.sample_variations``)
are played by the gold teacher, each under the episode seed ``duomem eval`` gives sample 0 of the game at run seed
0, and turned into demonstrations (``duomem.agent.demonstrations.demonstration``: the gold path as played, after a
plan thought). The rule that keeps the prompt short (ScienceWorld's observations are long and its gold paths run
to hundreds of actions): an example is kept only if it won and its transcript (what the prompt shows of it) is at
most :data:`MAX_CHARS` characters (about 1,350 tokens of SmolLM2's tokenizer, so two examples and the task leave
more than half of an 8k-token context to the episode); of those, the :data:`PER_TASK` shortest transcripts (ties:
the lower variation). A task with no example that short gets fewer (or no) examples: the agent plays it with what
there is. No example is cut short (a gold path that stops before it wins would teach an unfinished task).
Trajectories of the chosen variations are left out of SFT data (``duomem.distill.dataset``), as the ALFWorld
few-shot games are.

Run: python scripts/build_fewshot_scienceworld.py [CACHE]  (needs scienceworld and Java; about 30 min on two busy
cores: each gold path is generated in a fresh JVM; with CACHE, the played candidates are kept there and reused).
"""

from __future__ import annotations

import json
import lzma
import sys
import tempfile
from pathlib import Path

from duomem.agent.demonstrations import demonstration
from duomem.agent.prompts import transcript
from duomem.agent.trajectory import Step, Trajectory
from duomem.envs.scienceworld import ScienceWorldEnv
from duomem.envs.scienceworld_data import TASKS, load_tasks
from duomem.seeds import episode_seed

PER_TASK = 2
CANDIDATES = 4
MAX_CHARS = 5000
SEED = 0
OUT = Path(__file__).resolve().parents[1] / "duomem" / "agent" / "fewshot_scienceworld.json.xz"


def gold_trajectory(env: ScienceWorldEnv, task, seed: int) -> Trajectory:
    """The gold teacher's episode of ``task`` (the teacher's actions and the game's answers)."""
    obs = env.reset(task, seed=seed)
    traj = Trajectory(game_id=task.game_id, split=task.split, task_type=task.task_type, goal=task.goal,
                      initial_observation=obs.text, policy="expert", source=task.source, params=task.params)
    while not obs.done and obs.expert_action:
        action = obs.expert_action
        obs = env.step(action)
        traj.steps.append(Step(kind="action", text=action, observation=obs.text))
    traj.won = obs.won
    return traj


def candidates() -> list[tuple[int, Trajectory]]:
    """``(transcript size, demonstration)`` of the gold path of every candidate variation that won."""
    out = []
    env = ScienceWorldEnv(expert=True, admissible=False)
    try:
        with tempfile.TemporaryDirectory(prefix="duomem-sw-fewshot-") as tmp:
            for name in TASKS:
                for task in load_tasks("train", [name], per_task=CANDIDATES, seed=SEED, env=env,
                                       data_root=Path(tmp)):
                    assert task.split == "train"
                    demo = demonstration(gold_trajectory(env, task, episode_seed(0, task.game_id, 0)))
                    size = len(transcript(demo)) if demo is not None else 0
                    print(f"{task.game_id}: {len(demo.actions) if demo else 'lost'} actions, {size} chars",
                          file=sys.stderr, flush=True)
                    if demo is not None:
                        out.append((size, demo))
    finally:
        env.close()
    return out


def select(played: list[tuple[int, Trajectory]]) -> list[Trajectory]:
    """Per task (in task-id order), the :data:`PER_TASK` shortest transcripts of at most :data:`MAX_CHARS`."""
    chosen = []
    for name in TASKS:
        short = sorted((size, int(d.params["variation"]), d) for size, d in played
                       if d.task_type == name and size <= MAX_CHARS)
        chosen.extend(d for _, _, d in short[:PER_TASK])
    return chosen


def main() -> None:
    """``python scripts/build_fewshot_scienceworld.py [CACHE]``: with CACHE, the played candidates are read from
    it if it exists, else written to it (to change the selection rule without playing again)."""
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if cache is not None and cache.is_file():
        played = [(size, Trajectory.model_validate(d)) for size, d in json.loads(cache.read_text())]
    else:
        played = candidates()
        if cache is not None:
            cache.write_text(json.dumps([(size, d.model_dump()) for size, d in played]))
    chosen = select(played)
    text = json.dumps([d.model_dump(exclude={"model"}) for d in chosen], indent=1) + "\n"
    OUT.write_bytes(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME))
    counts = {name: sum(d.task_type == name for d in chosen) for name in TASKS}
    print(f"wrote {len(chosen)} examples to {OUT}; per task: {counts}")


if __name__ == "__main__":
    main()
