"""What a rollout run plays with: one typed spec holding every setting that changes play (picklable, hashable)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from duomem import settings
from duomem.envs.base import MAX_STEPS, TaskType
from duomem.errors import ConfigError
from duomem.memory.bank import Retrieval
from duomem.memory.entry import MemoryFormat

Policy = Literal["expert", "llm"]
Backend = Literal["auto", "llamacpp", "transformers", "openai"]
FewshotSet = Literal["train", "heldout"]
ActionSelection = Literal["free", "grammar", "score"]
ScoreNorm = Literal["sum", "mean"]
ExampleSource = Literal["fixed", "bank"]
KEY_VERSION = 2
"""How a run's key is computed: a changed key means another run. ``scripts/migrate_run_keys.py`` rewrites the
``run.json`` of runs made with version 1 (which left out fields added later while at their defaults)."""


class RolloutSpec(BaseModel):
    """Everything that decides how episodes are played: the only input of a rollout besides the games. Two runs
    with equal specs and games give equal records (up to timings) with greedy decoding."""

    model_config = ConfigDict(extra="forbid")

    policy: Policy = "llm"
    model: str | None = None
    """A model name (see ``duomem models list``), a .gguf path, hf:ORG/NAME or openai:MODEL@URL."""
    backend: Backend = "auto"
    adapter: str | None = None
    """A LoRA adapter: a GGUF LoRA file or a peft folder (llama.cpp reads the ``adapter.gguf`` exported in it)."""
    memory: str | None = None
    """A memory bank folder (``duomem memory build``)."""
    top_k: int = Field(2, ge=0, le=16)
    retrieval: Retrieval = "similarity"
    """``similarity``: top-k over all memories (the paper); ``same_type``: top-k among the task type's memories."""
    shots: int = Field(2, ge=0, le=2)
    fewshot: FewshotSet = "train"
    """Which few-shot examples the prompt shows (see ``duomem.agent.prompts.FEWSHOT_SETS``)."""
    memory_format: MemoryFormat | None = None
    """How retrieved memories are shown (None: the bank's own format)."""
    history_window: int | None = Field(None, ge=1)
    max_steps: int = Field(MAX_STEPS, ge=1, le=500)
    loop_limit: int | None = Field(None, ge=2)
    """End an episode, lost, once its last turns are one cycle of turns played this many times over, word for word
    with the same answers (``duomem.agent.episode.loop_period``); None: only ``max_steps`` ends it. 4 was chosen on
    valid_seen (the smallest that ends none of its won episodes) and ends none of the 2,746 won episodes of the
    committed records, while cutting 59% of the base SmolLM2-135M's turns."""
    action_selection: ActionSelection = "free"
    """How the LLM's answer becomes a command: ``free`` text mapped onto a command (never onto another one),
    ``grammar``-constrained decoding to a command or a thought, or ``score``: the admissible command (or
    ``think:``) with the highest log-probability."""
    score_norm: ScoreNorm = "mean"
    """``score``: a candidate's summed token log-probability, or its mean per token (length-normalised; the default,
    chosen on valid_seen: benchmarks/README section 9)."""
    note: bool = False
    """Write the episodic note under each game answer: places not visited yet, closed places not opened, where
    objects the task names were seen (``duomem.agent.note``; a student reads it well only if trained with it)."""
    unseen_types: list[TaskType] = Field(default_factory=list)
    """Task types the student never learned (new kinds of task): their prompts show solved examples of another type
    (``pick``) in place of their own, so the layout the student learned stays and memories are the only source of
    the new kind's procedure."""
    examples: ExampleSource = "fixed"
    """Where the prompt's solved examples come from: ``fixed``, the packaged few-shot set; ``bank``, the solved
    episodes of the task's type that the memory bank keeps (``duomem memory add --transcripts``), most similar
    first, the packaged set completing them (a new kind of task is taught by a bank update alone)."""
    max_new_tokens: int = Field(64, ge=4, le=1024)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int = 0
    explore: float = Field(0.0, ge=0.0, le=1.0)
    """Expert only: chance of a random ``go to`` before the target is taken (diverse demonstrations)."""
    expert_fix: bool = True
    """Expert only: repair its inventory tracking under ALFWorld 0.4's ``move`` grammar (False: as released)."""
    n_ctx: int = Field(8192, ge=512)
    """The context budget in tokens (for an OpenAI-compatible server: at most this, or the server's if lower)."""
    batch: int = Field(1, ge=1)
    """Episodes stepped together in one process, one ``complete_batch`` call per step."""
    batch_tokens: int = Field(default_factory=settings.batch_tokens, ge=1)
    """transformers: padded tokens of one batched forward pass (``DUOMEM_BATCH_TOKENS``)."""
    request_timeout: float = Field(default_factory=settings.openai_timeout, gt=0)
    """OpenAI-compatible servers: seconds per request (``DUOMEM_OPENAI_TIMEOUT``)."""
    request_retries: int = Field(default_factory=settings.openai_retries, ge=1)
    """OpenAI-compatible servers: tries per request (``DUOMEM_OPENAI_RETRIES``)."""
    request_concurrency: int = Field(default_factory=settings.openai_concurrency, ge=1)
    """OpenAI-compatible servers: requests in flight at once (``DUOMEM_OPENAI_CONCURRENCY``)."""
    threads: int | None = Field(None, ge=1)
    device: str = "cpu"
    step_timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RolloutSpec:
        if self.policy == "llm" and not self.model:
            raise ConfigError("an llm policy needs a model (e.g. smollm2-135m)")
        if self.policy == "expert" and (self.model or self.adapter or self.memory):
            raise ConfigError("the expert policy takes no model, adapter or memory bank")
        if self.examples == "bank" and not self.memory:
            raise ConfigError("examples from the bank need a memory bank (--memory BANK; --top-k 0 shows no "
                              "memory block)")
        return self

    @property
    def uses_transformers(self) -> bool:
        return self.backend == "transformers" or (self.backend == "auto" and (self.model or "").startswith("hf:"))

    @property
    def uses_openai(self) -> bool:
        return self.backend == "openai" or (self.backend == "auto" and (self.model or "").startswith("openai:"))

    def key_fields(self) -> dict:
        """Every field that changes what is played (all but threads, device and the game-step timeout), with
        :data:`KEY_VERSION`. Settings that cannot matter are left out: the score norm unless commands are scored,
        another backend's batching and request settings."""
        data = self.model_dump(exclude={"threads", "step_timeout", "device"})
        if self.action_selection != "score":
            data.pop("score_norm")
        for name in ("unseen_types", "examples", "loop_limit"):  # added after KEY_VERSION 2: runs without them keep their keys
            if data[name] == type(self).model_fields[name].get_default(call_default_factory=True):
                data.pop(name)
        if not self.uses_transformers:
            data.pop("batch_tokens")
            data.pop("batch")
        if not self.uses_openai:
            for name in ("request_timeout", "request_retries", "request_concurrency"):
                data.pop(name)
        return {"key_version": KEY_VERSION, **data}

    def fingerprint(self) -> str:
        """Hash of :meth:`key_fields`."""
        return hashlib.sha256(json.dumps(self.key_fields(), sort_keys=True).encode()).hexdigest()[:16]
