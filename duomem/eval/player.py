"""The one episode loop: a policy steps a batch of episodes through game slots, one decision per episode per step.

Every executor plays through :class:`Player`: in this process (a batch of 1 is plain sequential play; a larger
batch steps games in worker processes while one ``complete_batch`` call decides for all of them), in each worker
process of a pool, or in each Ray actor. So every backend and every executor plays the same code, with the same
per-turn seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from duomem.agent.base import EpisodeState, Policy
from duomem.envs.base import TaskSpec
from duomem.envs.pool import EnvProcess, GameSlot, LocalSlot, turn_limit
from duomem.eval.episode import reset_peak_rss, to_record
from duomem.eval.records import EpisodeRecord
from duomem.eval.spec import RolloutSpec

Job = tuple[TaskSpec, int]
"""A game and the sample index of the episode to play on it."""


def build_policy(spec: RolloutSpec) -> Policy:
    """The policy ``spec`` describes, with its model and memory retriever loaded."""
    from duomem.agent.expert import ExpertPolicy
    from duomem.agent.react import ReActAgent

    if spec.policy == "expert":
        return ExpertPolicy(explore=spec.explore)
    from duomem.llm import load_chat_model

    model = load_chat_model(spec.model or "", backend=spec.backend, adapter=spec.adapter, n_ctx=spec.n_ctx,
                            threads=spec.threads, seed=spec.seed, device=spec.device,
                            batch_tokens=spec.batch_tokens, request_timeout=spec.request_timeout,
                            request_retries=spec.request_retries, request_concurrency=spec.request_concurrency)
    memory = None
    if spec.memory and (spec.top_k > 0 or spec.examples == "bank"):
        from duomem.memory.bank import MemoryBank

        memory = MemoryBank.load(spec.memory).retriever(top_k=spec.top_k, retrieval=spec.retrieval,
                                                        memory_format=spec.memory_format,
                                                        transcripts=spec.examples == "bank")
    return ReActAgent(model, shots=spec.shots, memory=memory, history_window=spec.history_window,
                      max_new_tokens=spec.max_new_tokens, temperature=spec.temperature, fewshot=spec.fewshot,
                      action_selection=spec.action_selection, score_norm=spec.score_norm, note=spec.note,
                      unseen_types=spec.unseen_types, examples=spec.examples)


@dataclass
class _Slot:
    game: GameSlot
    state: EpisodeState | None = None


class Player:
    """A policy and ``spec.batch`` game slots (in this process for a batch of 1, else one process per game)."""

    def __init__(self, spec: RolloutSpec, leakage_guard: str | None = None, policy: Policy | None = None) -> None:
        """``policy``: one already built for ``spec`` (e.g. around a model that is loaded once for many runs);
        by default :func:`build_policy` builds it."""
        reset_peak_rss()  # the run's peak memory: this process's model and game, not what it held before
        self.spec = spec
        self.leakage_guard = leakage_guard
        self._own_policy = policy is None
        self.policy = policy or build_policy(spec)
        self._slots: list[_Slot] = []

    @property
    def model(self):
        """The policy's chat model (None for the expert)."""
        return getattr(self.policy, "model", None)

    def _slot(self) -> GameSlot:
        s = self.spec
        kind = LocalSlot if s.batch == 1 else EnvProcess
        return kind(max_steps=s.max_steps, step_timeout=s.step_timeout, expert=s.policy == "expert",
                    expert_fix=s.expert_fix)

    def play(self, jobs: Iterable[Job]) -> Iterator[EpisodeRecord]:
        """Play ``jobs``, ``spec.batch`` at a time, yielding each record as its episode ends."""
        queue = iter(jobs)
        while len(self._slots) < self.spec.batch:
            self._slots.append(_Slot(self._slot()))
        for slot in self._slots:
            self._start(slot, queue)
        self._begin([s for s in self._slots if s.state is not None])
        while True:
            yield from self._harvest(queue)
            live = [s for s in self._slots if s.state is not None]
            if not live:
                return
            decisions = self.policy.act([s.state for s in live])
            stepping = []
            for slot, decision in zip(live, decisions, strict=True):
                command = slot.state.decide(decision)
                if command is not None:
                    slot.game.send_step(command)
                    stepping.append(slot)
            for slot in stepping:
                obs, error, seconds = slot.game.receive()
                if obs is None:
                    slot.state.fail(error or "game error")
                else:
                    slot.state.observe(obs, seconds)

    def _start(self, slot: _Slot, queue: Iterator[Job]) -> bool:
        job = next(queue, None)
        if job is None:
            slot.state = None
            return False
        task, sample = job
        s = self.spec
        limit = turn_limit(task, s.max_steps, expert=s.policy == "expert")
        slot.state = EpisodeState(task, self.policy.name, self.policy.model_name, sample, s.seed, limit,
                                  s.loop_limit)
        slot.game.send_reset(task, slot.state.seed)
        return True

    def _begin(self, slots: list[_Slot]) -> None:
        for slot in slots:
            obs, error, seconds = slot.game.receive()
            if obs is None:
                slot.state.begin_failed(error or "reset failed", seconds)
            else:
                slot.state.begin(obs, seconds)
                self.policy.start(slot.state)

    def _harvest(self, queue: Iterator[Job]) -> Iterator[EpisodeRecord]:
        """Records of the finished episodes; their slots take the next jobs (until every slot is busy again)."""
        while True:
            done = [s for s in self._slots if s.state is not None and s.state.finished]
            if not done:
                return
            for slot in done:
                yield to_record(slot.state, self.spec.adapter, self.spec.memory, self.leakage_guard,
                                self.spec.action_selection if self.spec.policy == "llm" else None)
            self._begin([s for s in done if self._start(s, queue)])

    def close(self) -> None:
        for slot in self._slots:
            slot.game.close()
        self._slots = []
        model = self.model
        if model is not None and self._own_policy:
            model.close()


def play(spec: RolloutSpec, jobs: Iterable[Job], policy: Policy | None = None) -> list[EpisodeRecord]:
    """Play ``jobs`` in this process and return their records (no files; :func:`duomem.eval.runner.run_rollouts`
    is the resumable run)."""
    player = Player(spec, policy=policy)
    try:
        return list(player.play(jobs))
    finally:
        player.close()
