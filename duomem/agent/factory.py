"""Build the policy a rollout spec describes."""

from __future__ import annotations

from duomem.agent.base import Policy
from duomem.agent.expert import ExpertPolicy
from duomem.agent.react import ReActAgent
from duomem.eval.spec import RolloutSpec


def build_policy(spec: RolloutSpec) -> Policy:
    if spec.policy == "expert":
        return ExpertPolicy(explore=spec.explore)
    from duomem.llm import load_chat_model

    model = load_chat_model(spec.model or "", backend=spec.backend, adapter=spec.adapter, n_ctx=spec.n_ctx,
                            threads=spec.threads, seed=spec.seed, device=spec.device)
    memory = None
    if spec.memory and spec.top_k > 0:
        from duomem.memory.bank import MemoryBank

        memory = MemoryBank.load(spec.memory).retriever(top_k=spec.top_k, retrieval=spec.retrieval)
    return ReActAgent(model, shots=spec.shots, memory=memory, history_window=spec.history_window,
                      max_new_tokens=spec.max_new_tokens, temperature=spec.temperature)
