"""Write procedural memories from trajectories with any chat model (the teacher's or the student's own)."""

from __future__ import annotations

import hashlib
import re

from duomem.agent.trajectory import Trajectory
from duomem.llm.base import ChatModel
from duomem.memory.entry import MemoryEntry, MemoryFormat, generalise_names

WRITER_SYSTEM = ("You write procedural memories for a household robot that plays a text game. A memory explains how "
                 "a kind of task is solved, so that the robot can solve similar tasks in other rooms.")

WRITER_PROMPT = """Task: {goal}
Outcome: {outcome}
What the robot did (command, then what the game answered):
{steps}

Write a short script of 3 to 6 numbered steps that solves this kind of task in any room. Use general names \
(no numbers like "mug 1"), say where such objects are usually found, and name the commands to use.{failure_hint}
For example, a script for "put a hot potato in fridge" is:
1. A potato is usually on a countertop, diningtable or sinkbasin, or in the fridge or garbagecan.
2. go to each of those places in turn (open them if closed) until you see a potato.
3. take the potato from that place.
4. go to microwave, then heat the potato with microwave.
5. go to fridge, then move the potato to fridge.
Write only the numbered steps for the task above."""

FAILURE_HINT = " The robot failed: also say what it should have done differently."
MAX_STEPS_SHOWN = 30
MAX_OBS_CHARS = 100


def trajectory_digest(traj: Trajectory) -> str:
    """The trajectory as the writer sees it: commands and shortened answers (thoughts left out)."""
    lines = []
    for step in [s for s in traj.steps if s.kind == "action"][:MAX_STEPS_SHOWN]:
        obs = step.observation.replace("\n", " ")
        obs = obs if len(obs) <= MAX_OBS_CHARS else obs[:MAX_OBS_CHARS] + "..."
        lines.append(f"> {step.text}\n{obs}")
    return "\n".join(lines)


def parse_script(text: str, max_lines: int = 8) -> str:
    """Numbered steps from the writer's answer, instance numbers removed; falls back to the non-empty lines."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    numbered = [re.sub(r"^\s*(\d+)[.)]\s*", "", ln) for ln in lines if re.match(r"^\s*\d+[.)]", ln)]
    chosen = (numbered or lines)[:max_lines]
    return "\n".join(f"{i + 1}. {generalise_names(ln)}" for i, ln in enumerate(chosen))


def memory_id(traj: Trajectory) -> str:
    return hashlib.sha1(f"{traj.trajectory_id}|{'/'.join(traj.actions)}".encode()).hexdigest()[:12]


class MemoryWriter:
    """Turns one trajectory into a :class:`MemoryEntry` with ``model`` (greedy)."""

    def __init__(self, model: ChatModel | None, fmt: MemoryFormat = "both", max_new_tokens: int = 200) -> None:
        if fmt != "trajectory" and model is None:
            raise ValueError("a script needs a writer model")
        self.model = model
        self.fmt = fmt
        self.max_new_tokens = max_new_tokens

    def _messages(self, traj: Trajectory) -> list:
        prompt = WRITER_PROMPT.format(goal=traj.goal, outcome="success" if traj.won else "failure",
                                      steps=trajectory_digest(traj), failure_hint="" if traj.won else FAILURE_HINT)
        return [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": prompt}]

    def write(self, traj: Trajectory) -> MemoryEntry:
        return self.write_many([traj])[0]

    def write_many(self, trajs: list[Trajectory]) -> list[MemoryEntry]:
        """One memory per trajectory; a backend with ``complete_batch`` writes them in one batch."""
        if self.fmt == "trajectory" or self.model is None:
            return [self._entry(t, None) for t in trajs]
        convs = [self._messages(t) for t in trajs]
        if len(trajs) > 1 and hasattr(self.model, "complete_batch"):
            completions = self.model.complete_batch(convs, max_tokens=self.max_new_tokens, temperature=0.0)
        else:
            completions = [self.model.complete(c, max_tokens=self.max_new_tokens, temperature=0.0) for c in convs]
        return [self._entry(t, c) for t, c in zip(trajs, completions, strict=True)]

    def _entry(self, traj: Trajectory, completion) -> MemoryEntry:
        script, prompt_tokens, completion_tokens = "", 0, 0
        if completion is not None:
            script = parse_script(completion.text)
            prompt_tokens, completion_tokens = completion.prompt_tokens, completion.completion_tokens
        return MemoryEntry(
            id=memory_id(traj), task_type=traj.task_type, goal=traj.goal, script=script,
            actions=traj.actions if self.fmt != "script" else [], won=traj.won,
            writer=self.model.name if self.model is not None and self.fmt != "trajectory" else None,
            source_policy=traj.policy, source_model=traj.model, source_split=traj.split,
            source_game_ids=[traj.game_id], source_trajectory_ids=[traj.trajectory_id],
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        )
