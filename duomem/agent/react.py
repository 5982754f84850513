"""A ReAct-style LLM agent: one line per turn, a command or a ``think:`` thought, with full history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from duomem.agent.episode import Decision, EpisodeState
from duomem.agent.parsing import parse_action
from duomem.agent.prompts import episode_conversation, fit_history, substitute_type, task_prompt
from duomem.envs.base import TaskSpec
from duomem.llm.base import THINK_PREFIX, Candidate, ChatModel, Completion, Constraint, Message, Scores

STOP = ("\n",)
ACTION_SELECTIONS = ("free", "grammar", "score")


class MemoryRetriever(Protocol):
    """Gives the agent the memories for a task (see ``duomem.memory``)."""

    def retrieve_for(self, task: TaskSpec) -> list[tuple[str, str]]:
        """``(memory id, text)`` pairs, most similar first; never memories of ``task``'s own game."""
        ...

    def examples_for(self, task: TaskSpec, n: int) -> list[tuple[str, str]]:
        """At most ``n`` ``(task type, transcript)`` pairs: solved episodes of ``task``'s type, most similar
        first, shown as the prompt's solved examples; never ``task``'s own game."""
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
                 reserve_tokens: int = 128, max_consecutive_thinks: int = 1, fewshot: str = "train",
                 action_selection: str = "free", score_norm: str = "mean", note: bool = False,
                 unseen_types: Sequence[str] = (), examples: str = "fixed") -> None:
        if action_selection not in ACTION_SELECTIONS:
            raise ValueError(f"unknown action selection {action_selection!r}; use {', '.join(ACTION_SELECTIONS)}")
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
        self.action_selection = action_selection
        self.score_norm = score_norm
        self.note = note
        """Write the episodic note (:mod:`duomem.agent.note`) under each game answer."""
        self.unseen_types = frozenset(unseen_types)
        """Kinds of task the student never learned: their prompts show solved examples of another type in place of
        their own (:func:`~duomem.agent.prompts.substitute_type`), keeping the layout the student learned."""
        self.examples = examples
        """``bank``: the solved examples are ``memory``'s solved episodes of the task's type, the packaged ones
        completing them (``fixed``: the packaged ones only)."""

    def start(self, state: EpisodeState) -> None:
        memories = self.memory.retrieve_for(state.task) if self.memory else []
        kind = state.task.task_type
        # a kind the student never learned: the layout it learned, with no solved example of that kind
        example_type = substitute_type(kind, self.unseen_types) if kind in self.unseen_types else None
        solved = self.memory.examples_for(state.task, self.shots) if self.examples == "bank" and self.memory else []
        state.first_user = task_prompt(kind, state.obs.text, self.shots, [text for _, text in memories],
                                       self.fewshot, state.task.source, example_type, solved)
        state.memory_ids = [mid for mid, _ in memories]

    def messages(self, state: EpisodeState) -> list[Message]:
        """The prompt of the episode's next turn."""
        full = episode_conversation(state.first_user, state.traj, self.note)
        return fit_history(full, self.model.count_tokens, self.budget, self.history_window)

    def act(self, states: Sequence[EpisodeState]) -> list[Decision]:
        """One decision per state. ``free``: generate and parse; ``grammar``: generate constrained to an admissible
        command or a thought; ``score``: the most probable of the admissible commands and ``think:`` (scored
        from the prompt's cached state), a thought then generated after ``think:``."""
        if self.action_selection == "score":
            return self._act_by_score(states)
        choices = None
        if self.action_selection == "grammar":
            choices = [Constraint(tuple(s.obs.admissible_commands), self.may_think(s)) for s in states]
        completions = self.model.complete_batch([self.messages(s) for s in states],
                                                max_tokens=self.max_new_tokens, stop=STOP,
                                                temperature=self.temperature, seeds=[s.step_seed for s in states],
                                                choices=choices)
        return [self.decide(s, c) for s, c in zip(states, completions, strict=True)]

    def candidates(self, state: EpisodeState) -> list[Candidate]:
        """What ``score`` chooses among: every admissible command as a whole turn, and ``think:`` (a prefix)
        while a thought is allowed."""
        out = [Candidate(c) for c in state.obs.admissible_commands]
        if self.may_think(state) or not out:
            out.append(Candidate(THINK_PREFIX, ends_turn=False))
        return out

    def _act_by_score(self, states: Sequence[EpisodeState]) -> list[Decision]:
        prompts = [self.messages(s) for s in states]
        cands = [self.candidates(s) for s in states]
        all_scores = self.model.score_batch(list(zip(prompts, cands, strict=True)))
        decisions: list[Decision] = []
        thinking: list[int] = []
        for i, scores in enumerate(all_scores):
            best = cands[i][self._best(scores)]
            cost = Completion(text=best.text, prompt_tokens=scores.prompt_tokens, completion_tokens=0,
                              seconds=scores.seconds, cached_tokens=scores.cached_tokens,
                              scored_tokens=sum(scores.n_tokens))
            decisions.append(Decision(kind="action", command=best.text, raw=best.text, match="scored",
                                      completion=cost))
            if not best.ends_turn:
                thinking.append(i)
        if thinking:  # the thought itself is generated, constrained to a "think: ..." line
            thoughts = self.model.complete_batch(
                [prompts[i] for i in thinking], max_tokens=self.max_new_tokens, stop=STOP,
                temperature=self.temperature, seeds=[states[i].step_seed for i in thinking],
                choices=[Constraint((), allow_think=True)] * len(thinking))
            for i, c in zip(thinking, thoughts, strict=True):
                scored = decisions[i].completion
                assert scored is not None
                if not c.text[len(THINK_PREFIX):].strip():  # nothing to say after all: the best command instead
                    commands = [j for j, cand in enumerate(cands[i]) if cand.ends_turn]
                    if commands:
                        best = max(commands, key=lambda j: (self._values(all_scores[i])[j], -j))
                        decisions[i] = Decision(kind="action", command=cands[i][best].text, raw=c.text,
                                                match="scored", completion=scored)
                        continue
                c.seconds += scored.seconds
                c.prompt_tokens += scored.prompt_tokens
                c.cached_tokens += scored.cached_tokens
                c.scored_tokens += scored.scored_tokens
                decisions[i] = self.decide(states[i], c)
        return decisions

    def _values(self, scores: Scores) -> list[float]:
        """Each candidate's score: summed log-probability, or its mean per token (``score_norm``)."""
        if self.score_norm == "mean":
            return [lp / max(1, n) for lp, n in zip(scores.logprobs, scores.n_tokens, strict=True)]
        return list(scores.logprobs)

    def _best(self, scores: Scores) -> int:
        """The index of the best candidate (the first on ties)."""
        values = self._values(scores)
        return max(range(len(values)), key=lambda i: (values[i], -i))

    def may_think(self, state: EpisodeState) -> bool:
        """Whether the next turn may be a thought (not after ``max_consecutive_thinks`` thoughts in a row)."""
        recent = state.traj.steps[-self.max_consecutive_thinks:] if self.max_consecutive_thinks else []
        return len(recent) < self.max_consecutive_thinks or any(s.kind != "think" for s in recent)

    def decide(self, state: EpisodeState, completion: Completion) -> Decision:
        """Turn the model's answer into a decision."""
        parsed = parse_action(completion.text, state.obs.admissible_commands, allow_think=self.may_think(state))
        return Decision(kind=parsed.kind, command=parsed.command, raw=completion.text, match=parsed.match,
                        completion=completion)
