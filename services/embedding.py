"""The encoder: a sentence-transformers model loaded from a local path, never from a hub.

torch and transformers are imported here (and in training) only; the rest of Sift sees vectors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services import metrics
from services.errors import InvalidInput

# Nothing may download weights at run time: make the hub client refuse before it is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """auto -> cuda when a GPU is visible, else cpu; cuda without a GPU is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("SIFT_DEVICE=cuda but no CUDA device is visible; use auto or cpu")
    return requested


def model_kwargs_for(device: str) -> dict[str, Any]:
    """fp16 weights on a GPU (half the memory, tensor cores); fp32 on CPU, where fp16 is slower."""
    if device.startswith("cuda"):
        import torch

        return {"torch_dtype": torch.float16}
    return {}


def set_threads(threads: int) -> None:
    """Give torch exactly the cores this process owns, so processes do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, threads))


class Encoder:
    """A loaded model: encode(texts) -> L2-normalised float32 vectors, one forward pass per call."""

    def __init__(self, model: Any, *, version: str, device: str, batch_size: int) -> None:
        self._model = model
        self.version = version
        self.device = device
        self.batch_size = batch_size
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str, *, device: str = "auto", max_seq_length: int = 256, batch_size: int = 32) -> Encoder:
        """Load from a local directory; a hub name works only if it is already in the local cache."""
        from sentence_transformers import SentenceTransformer

        resolved = resolve_device(device)
        if not Path(path).exists():
            log.warning("SIFT_MODEL=%s is not a directory; trying the local cache only (offline)", path)
        try:
            model = SentenceTransformer(path, device=resolved, model_kwargs=model_kwargs_for(resolved))
        except OSError as exc:
            raise InvalidInput(f"cannot load model {path!r} offline: {exc}") from exc
        # Truncate to the model's window: longer inputs cost memory and change nothing (st #1795).
        model.max_seq_length = min(int(model.max_seq_length or max_seq_length), max_seq_length)
        model.eval()
        return cls(model, version=model_version(path), device=resolved, batch_size=batch_size)

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text."""
        return int(self._model.max_seq_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for texts, L2-normalised, float32, shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # One forward pass at a time per model: concurrent calls from the API thread and the
        # worker thread would only fight over the same cores.
        with self._lock, metrics.ENCODE_DURATION.labels(device=self.device).time():
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


def model_version(path: str) -> str:
    """A stable version string: the directory name and a short hash of its config and weights' sizes."""
    p = Path(path)
    if not p.is_dir():
        return path
    digest = hashlib.sha256()
    for item in sorted(p.rglob("*")):
        if item.is_file():
            digest.update(f"{item.relative_to(p)}:{item.stat().st_size}".encode())
    name = p.name if p.name != "model" else p.parent.name
    return f"{name}@{digest.hexdigest()[:12]}"
