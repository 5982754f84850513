"""A ReAct-style LLM agent: one line per turn, a command or a ``think:`` thought, with full history."""

from __future__ import annotations

from typing import Protocol

from duomem.agent.base import Decision
from duomem.agent.parsing import parse_action
from duomem.agent.prompts import conversation, fit_history, task_prompt
from duomem.agent.trajectory import Trajectory
from duomem.envs.base import Observation, TaskSpec
from duomem.llm.base import ChatModel, Completion

STOP = ("\n",)


class MemoryRetriever(Protocol):
    """Gives the agent the memories for a task (see ``duomem.memory``)."""

    def retrieve_for(self, task: TaskSpec) -> list[tuple[str, str]]:
        """``(memory id, text)`` pairs, most similar first; never memories of ``task``'s own game."""
        ...


class ReActAgent:
    """Prompts ``model`` with instructions, ``shots`` examples of the task's type, retrieved memories and the
    episode so far; maps its answer onto an admissible command (see :mod:`duomem.agent.parsing`).

    After ``max_consecutive_thinks`` thoughts in a row the next answer is read as a command (a thought then
    counts as an invalid action), so a small model cannot think in circles until the step limit."""

    name = "llm"

    def __init__(self, model: ChatModel, shots: int = 2, memory: MemoryRetriever | None = None,
                 history_window: int | None = None, max_new_tokens: int = 64, temperature: float = 0.0,
                 reserve_tokens: int = 128, max_consecutive_thinks: int = 1) -> None:
        self.model = model
        self.model_name = model.name
        self.shots = shots
        self.memory = memory
        self.history_window = history_window
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.budget = model.context_length - max_new_tokens - reserve_tokens
        self.max_consecutive_thinks = max_consecutive_thinks
        self._first_user = ""
        self._seed = 0

    def reset(self, task: TaskSpec, observation: Observation, seed: int) -> dict:
        memories = self.memory.retrieve_for(task) if self.memory else []
        self._first_user = task_prompt(task.task_type, observation.text, self.shots, [text for _, text in memories])
        self._seed = seed
        return {"memory_ids": [mid for mid, _ in memories]}

    def messages(self, trajectory: Trajectory) -> list:
        full = conversation(self._first_user, trajectory.steps)
        return fit_history(full, self.model.count_tokens, self.budget, self.history_window)

    def act(self, trajectory: Trajectory, observation: Observation) -> Decision:
        completion = self.model.complete(self.messages(trajectory), max_tokens=self.max_new_tokens, stop=STOP,
                                         temperature=self.temperature, seed=self.step_seed(trajectory))
        return self.decide(trajectory, observation, completion)

    def step_seed(self, trajectory: Trajectory) -> int:
        return self._seed + len(trajectory.steps)

    def decide(self, trajectory: Trajectory, observation: Observation, completion: Completion) -> Decision:
        """Turn the model's answer into a decision (used directly by the batched runner)."""
        recent = trajectory.steps[-self.max_consecutive_thinks:] if self.max_consecutive_thinks else []
        may_think = len(recent) < self.max_consecutive_thinks or any(s.kind != "think" for s in recent)
        parsed = parse_action(completion.text, observation.admissible_commands, allow_think=may_think)
        return Decision(kind=parsed.kind, command=parsed.command, raw=completion.text, match=parsed.match,
                        completion=completion)

