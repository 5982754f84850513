"""What a rollout run plays with: policy, model, adapter, memory and limits (picklable, hashable)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from duomem.errors import ConfigError


class RolloutSpec(BaseModel):
    """Everything that decides how episodes are played. Two runs with equal specs and games give equal records
    (up to timings) with greedy decoding."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["expert", "llm"] = "llm"
    model: str | None = None
    """A model name (see ``duomem models list``), a .gguf path, hf:ORG/NAME or openai:MODEL@URL."""
    backend: Literal["auto", "llamacpp", "transformers", "openai"] = "auto"
    adapter: str | None = None
    """A LoRA adapter: a GGUF LoRA file (llama.cpp) or a peft folder (transformers; exported on the fly for
    llama.cpp)."""
    memory: str | None = None
    """A memory bank folder (``duomem memory build``)."""
    top_k: int = Field(2, ge=0, le=16)
    retrieval: Literal["similarity", "same_type"] = "similarity"
    """``similarity``: top-k over all memories (the paper); ``same_type``: top-k among the task type's memories."""
    shots: int = Field(2, ge=0, le=2)
    history_window: int | None = Field(None, ge=1)
    max_steps: int = Field(50, ge=1, le=500)
    max_new_tokens: int = Field(64, ge=4, le=1024)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int = 0
    explore: float = Field(0.0, ge=0.0, le=1.0)
    """Expert only: chance of a random ``go to`` before the target is taken (diverse demonstrations)."""
    expert_fix: bool = True
    """Expert only: repair its inventory tracking under ALFWorld 0.4's ``move`` grammar (False: as released)."""
    n_ctx: int = Field(8192, ge=512)
    threads: int | None = Field(None, ge=1)
    device: str = "cpu"
    step_timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RolloutSpec:
        if self.policy == "llm" and not self.model:
            raise ConfigError("an llm policy needs --model (e.g. smollm2-135m)")
        if self.policy == "expert" and (self.model or self.adapter or self.memory):
            raise ConfigError("the expert policy takes no --model, --adapter or --memory")
        return self

    def key_fields(self) -> dict:
        """The fields that change what is played (not threads, device or timeouts). Fields added after the first
        release are left out while at their defaults, so that earlier runs keep their keys and resume."""
        data = self.model_dump(exclude={"threads", "step_timeout", "device"})
        for name, default in _LATER_FIELDS.items():
            if data.get(name) == default:
                data.pop(name)
        return data

    def fingerprint(self) -> str:
        """Hash of :meth:`key_fields`."""
        return hashlib.sha256(json.dumps(self.key_fields(), sort_keys=True).encode()).hexdigest()[:16]


_LATER_FIELDS = {"retrieval": "similarity"}
