"""One JSONL record per played episode."""

from __future__ import annotations

from pydantic import BaseModel, Field

from duomem.agent.trajectory import Trajectory


class EpisodeRecord(BaseModel):
    """Outcome, cost and full trajectory of one episode."""

    game_id: str
    task_type: str
    split: str
    sample: int = 0
    seed: int
    policy: str
    model: str | None = None
    adapter: str | None = None
    memory_bank: str | None = None
    memory_ids: list[str] = Field(default_factory=list)
    memory_leakage_guard: str | None = None
    """What the leakage check found for the bank and the evaluated games (see ``duomem.eval.leakage``)."""
    won: bool
    """Whether the task was completed (ScienceWorld: a score of 100)."""
    score: float | None = None
    """The game's final score where it keeps one: ScienceWorld's 0-100 (negative: the task was failed, e.g. by
    focusing on the wrong object); None for ALFWorld (records made before this field have none either)."""
    steps: int
    """Agent turns, thoughts included (the step limit counts these)."""
    loop_period: int | None = None
    """The cycle (in turns) the agent repeated until the spec's ``loop_limit`` ended the episode; None otherwise."""
    env_steps: int
    thinks: int
    invalid_actions: int
    wall_s: float
    llm_s: float = 0.0
    env_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    scored_tokens: int = 0
    """Candidate tokens evaluated to choose actions by likelihood (``action_selection: score``)."""
    action_selection: str | None = None
    """``free``, ``grammar`` or ``score`` for an LLM policy."""
    tokens_per_s: float = 0.0
    """Completion tokens per second of model time."""
    peak_rss_mb: float = 0.0
    ended_at: float = 0.0
    """Unix time the episode ended (with ``wall_s``, a run's throughput can be measured)."""
    error: str | None = None
    expert_error: str | None = None
    """The handcoded expert's first internal error in this episode (it then said ``look``), if any."""
    trajectory: Trajectory

    @property
    def key(self) -> tuple[str, int]:
        return (self.game_id, self.sample)
