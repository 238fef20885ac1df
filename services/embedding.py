"""The encoder: a sentence-transformers model loaded from a local path, never from a hub.

torch and transformers are imported here (and in training) only; the rest of Sift sees vectors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sift-tokenize")

    @classmethod
    def load(cls, path: str, *, device: str = "auto", max_seq_length: int = 256, batch_size: int = 0) -> Encoder:
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
        size = batch_size or default_batch_size(resolved)
        return cls(model, version=model_version(path), device=resolved, batch_size=size)

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
            return self._encode_overlapped(list(texts))

    def _encode_overlapped(self, texts: list[str]) -> np.ndarray:
        """Batches of texts sorted by length (little padding), each tokenised in a helper thread
        while the model runs the batch before it (fast tokenizers release the GIL), then put back
        in order. The model's own modules do the forward pass, pooling and normalisation."""
        import torch
        from sentence_transformers.util import batch_to_device

        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [order[start : start + self.batch_size] for start in range(0, len(texts), self.batch_size)]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        pending = self._tokenizer.submit(self._model.tokenize, [texts[i] for i in batches[0]])
        for n, batch in enumerate(batches):
            features = pending.result()
            if n + 1 < len(batches):
                pending = self._tokenizer.submit(self._model.tokenize, [texts[i] for i in batches[n + 1]])
            with torch.inference_mode():
                output = self._model.forward(batch_to_device(features, self._model.device))
                vectors = torch.nn.functional.normalize(output["sentence_embedding"].float(), p=2, dim=1)
            out[batch] = vectors.cpu().numpy()
        return out


def default_batch_size(device: str) -> int:
    """Texts per forward pass when SIFT_ENCODE_BATCH_SIZE is 0: 32 on CPU, where larger batches
    only add padding, 256 on a GPU, which needs them to be busy."""
    return 256 if device.startswith("cuda") else 32


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
