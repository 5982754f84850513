"""Chat-model backends (llama.cpp, transformers, OpenAI-compatible servers) behind one protocol."""

from duomem.llm.base import ChatModel, Completion, Message
from duomem.llm.factory import load_chat_model

__all__ = ["ChatModel", "Completion", "Message", "load_chat_model"]
