"""The encoder: a sentence-transformers model loaded from a local path, never from a hub.

torch and transformers are imported here (and in training) only; the rest of Sift sees vectors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
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


def resolve_backend(requested: str, device: str) -> str:
    """auto -> onnx-int8 on CPU (docs/decisions/int8-encoder-on-cpu.md: its speed and accuracy cost), torch on a
    GPU (fp16 there); onnx-int8 on a GPU is an error."""
    if requested == "auto":
        return "torch" if device.startswith("cuda") else "onnx-int8"
    if requested == "onnx-int8" and device.startswith("cuda"):
        raise InvalidInput("SIFT_ENCODER_BACKEND=onnx-int8 runs on CPU; use torch (fp16) or auto on a GPU")
    if requested not in BACKENDS:
        raise InvalidInput(f"unknown encoder backend {requested!r}; use one of {', '.join(BACKENDS)}")
    return requested


BACKENDS = ("auto", "torch", "onnx-int8")


def set_threads(threads: int) -> None:
    """Give torch exactly the cores this process owns, so processes do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, threads))


def import_libraries() -> float:
    """Import the encoder's libraries (torch, sentence-transformers, ONNX Runtime) without loading a
    model or running a kernel; returns the seconds it took. A prefork worker calls it before it
    forks, so each pool child (the first and every one forked after a child died) starts with them
    in memory instead of importing them before its first batch (15 s on a loaded 2-core machine)."""
    started = time.perf_counter()
    import onnxruntime  # noqa: F401
    import sentence_transformers  # noqa: F401

    return time.perf_counter() - started


def hide_progress_bars() -> None:
    """No tqdm bars from transformers while a command shows its own (loading weights, for one)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class Encoder:
    """A loaded model: encode(texts) -> L2-normalised float32 vectors, one forward pass per call."""

    def __init__(
        self,
        model: Any,
        *,
        version: str,
        device: str,
        batch_size: int,
        backend: str = "torch",
        session: Any = None,
        streams: int = 1,
    ) -> None:
        self._model = model
        self.version = version
        self.device = device
        self.batch_size = batch_size
        self.backend = backend
        self._session = session
        if session is not None:
            from services.embedding.int8 import input_names

            self._inputs = input_names(model)
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        self._lock = threading.Lock()
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sift-tokenize")
        # int8: `streams` threads, each running whole batches on one core (see _encode_parallel)
        self._streams = ThreadPoolExecutor(
            max_workers=max(1, streams), thread_name_prefix="sift-encode", initializer=on_every_core
        )

    @classmethod
    def load(
        cls,
        path: str,
        *,
        device: str = "auto",
        max_seq_length: int = 256,
        batch_size: int = 0,
        backend: str = "torch",
        cache_dir: Path | None = None,
    ) -> Encoder:
        """Load from a local directory; a hub name works only if it is already in the local cache.
        backend onnx-int8 runs the transformer quantized in ONNX Runtime (its file made once and
        kept in cache_dir); the version stays the model's: the same weights, a faster numeric path."""
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
        chosen = resolve_backend(backend, resolved)
        session, streams = None, 1
        if chosen == "onnx-int8":
            from services.embedding import int8 as embedding_int8

            if cache_dir is None:
                raise InvalidInput("the onnx-int8 encoder backend needs a cache directory for its model file")
            import torch

            file = embedding_int8.quantized_file(model, path, cache_dir)
            session = embedding_int8.session(file, threads=1)
            streams = torch.get_num_threads()
        return cls(
            model,
            version=model_version(path),
            device=resolved,
            batch_size=size,
            backend=chosen,
            session=session,
            streams=streams,
        )

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
            if self._session is not None:
                return self._encode_parallel(list(texts))
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
        pending = self._tokenizer.submit(self._model.preprocess, [texts[i] for i in batches[0]])
        for n, batch in enumerate(batches):
            features = pending.result()
            if n + 1 < len(batches):
                pending = self._tokenizer.submit(self._model.preprocess, [texts[i] for i in batches[n + 1]])
            with torch.inference_mode():
                output = self._model.forward(batch_to_device(features, self._model.device))
                vectors = torch.nn.functional.normalize(output["sentence_embedding"].float(), p=2, dim=1)
            out[batch] = vectors.cpu().numpy()
        return out

    def _encode_parallel(self, texts: list[str]) -> np.ndarray:
        """The int8 path: batches sorted by length as above, each tokenised, run and pooled whole
        by one of `streams` threads on one core (ONNX Runtime and the tokenizer release the GIL).
        Independent batches side by side need no barrier between cores after every operator, as
        one batch on two threads does, and a thread the API preempts holds back only its own
        batch: +20 % over one two-thread run on two cores (docs/decisions/encode-batch-per-core.md)."""
        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)

        def run(batch: np.ndarray) -> None:
            features = self._model.preprocess([texts[i] for i in batch])
            with torch.inference_mode():
                output = self._forward_int8(features)
                vectors = torch.nn.functional.normalize(output["sentence_embedding"].float(), p=2, dim=1)
            out[batch] = vectors.numpy()

        batches = [order[start : start + self.batch_size] for start in range(0, len(texts), self.batch_size)]
        list(self._streams.map(run, batches))  # waits for all; re-raises a batch's error here
        return out

    def _forward_int8(self, features: dict[str, Any]) -> dict[str, Any]:
        """The transformer in ONNX Runtime (it releases the GIL), then the model's own modules
        after it (pooling, normalisation) on its token embeddings."""
        import torch

        from services.embedding.int8 import OUTPUT

        inputs = {name: features[name].numpy() for name in self._inputs}
        features[OUTPUT] = torch.from_numpy(self._session.run([OUTPUT], inputs)[0])
        for module in list(self._model)[1:]:
            features = module(features)
        return features


def on_every_core() -> None:
    """An encode thread runs on any of the process's cores, even when the thread that started it
    was confined to one (the API's, in `sift up`)."""
    if hasattr(os, "sched_setaffinity"):  # Linux only
        os.sched_setaffinity(0, os.sched_getaffinity(os.getpid()))


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
