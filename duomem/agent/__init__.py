"""Agents: the ReAct LLM agent, the handcoded expert, prompts, action parsing and trajectories."""
