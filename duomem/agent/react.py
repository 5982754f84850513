"""A ReAct-style LLM agent: one line per turn, a command or a ``think:`` thought, with full history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from duomem.agent.episode import Decision, EpisodeState
from duomem.agent.parsing import parse_action
from duomem.agent.prompts import conversation, fit_history, task_prompt
from duomem.envs.base import TaskSpec
from duomem.llm.base import ChatModel, Completion, Message

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
    counts as an invalid action), so a small model cannot think in circles until the step limit.

    The agent keeps no per-episode state: :meth:`start` writes the episode's first user turn into its
    :class:`EpisodeState` and :meth:`act` reads the states it is given, so one agent steps a batch of episodes
    through one ``complete_batch`` call, with each episode's own per-turn seed."""

    name = "llm"

    def __init__(self, model: ChatModel, shots: int = 2, memory: MemoryRetriever | None = None,
                 history_window: int | None = None, max_new_tokens: int = 64, temperature: float = 0.0,
                 reserve_tokens: int = 128, max_consecutive_thinks: int = 1, fewshot: str = "train") -> None:
        self.model = model
        self.model_name = model.name
        self.shots = shots
        self.memory = memory
        self.history_window = history_window
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.budget = model.context_length - max_new_tokens - reserve_tokens
        self.max_consecutive_thinks = max_consecutive_thinks
        self.fewshot = fewshot

    def start(self, state: EpisodeState) -> None:
        memories = self.memory.retrieve_for(state.task) if self.memory else []
        state.first_user = task_prompt(state.task.task_type, state.obs.text, self.shots,
                                       [text for _, text in memories], self.fewshot)
        state.memory_ids = [mid for mid, _ in memories]

    def messages(self, state: EpisodeState) -> list[Message]:
        """The prompt of the episode's next turn."""
        full = conversation(state.first_user, state.traj.steps)
        return fit_history(full, self.model.count_tokens, self.budget, self.history_window)

    def act(self, states: Sequence[EpisodeState]) -> list[Decision]:
        completions = self.model.complete_batch([self.messages(s) for s in states],
                                                max_tokens=self.max_new_tokens, stop=STOP,
                                                temperature=self.temperature, seeds=[s.step_seed for s in states])
        return [self.decide(s, c) for s, c in zip(states, completions, strict=True)]

    def may_think(self, state: EpisodeState) -> bool:
        """Whether the next turn may be a thought (not after ``max_consecutive_thinks`` thoughts in a row)."""
        recent = state.traj.steps[-self.max_consecutive_thinks:] if self.max_consecutive_thinks else []
        return len(recent) < self.max_consecutive_thinks or any(s.kind != "think" for s in recent)

    def decide(self, state: EpisodeState, completion: Completion) -> Decision:
        """Turn the model's answer into a decision."""
        parsed = parse_action(completion.text, state.obs.admissible_commands, allow_think=self.may_think(state))
        return Decision(kind=parsed.kind, command=parsed.command, raw=completion.text, match=parsed.match,
                        completion=completion)
