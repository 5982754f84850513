"""duomem: dual-space distillation of LLM agents (procedural memory + LoRA) into small on-device students."""

__version__ = "0.1.0"
