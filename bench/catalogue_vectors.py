"""Real embeddings of a bench catalogue, made once with Sift's own encoder and kept on disk.

A large catalogue's build is bound by its encoding (1,000,000 items through the pipeline 512 ids
at a time: hours on 2 cores). Here the distinct passages the pipeline would embed (title + ". " +
text, as services.events.pipeline.text_to_embed makes them) go through the product's encoder
(Runtime.encoder: all-MiniLM-L6-v2, int8 ONNX on CPU, its length-sorted batches of 32 on every
core) in calls of CHUNK passages, each chunk saved as float32 .npy in DIR (named by sha256 of its
passages in order and the encoder version), so an interrupted run resumes where it stopped and
later builds reuse them. The build runs every item through the pipeline as before (accept,
claim, classify, payload, upsert, record: the worker's code) with the encoder's encode() answering
from these vectors (`looked_up`), while the chunks after them are still being encoded (a thread,
`Table.fill`): a batch waits for the chunks it needs. A text not among the passages (a zero-shot
head's label texts) is encoded then and there and counted.
The vectors are the encoder's own; only the batches they were computed in differ: the int8 encoder
quantizes activations per batch, so one text's vector moves a little with its batch (cosine 0.990
to 0.995 between a chunk's vector and a 10-text batch's here), as it does between the pipeline's
own batches.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from services.embedding.encoder import Encoder

CHUNK = 20_000  # passages per encode call and per .npy file
Encode = Callable[[Sequence[str]], np.ndarray]


def chunk_file(root: Path, passages: Sequence[str], encoder_version: str) -> Path:
    """A chunk's file, named by its passages and the encoder: a smaller catalogue made by the same
    generator (a prefix of a larger one) finds the larger one's chunks when its boundaries match."""
    digest = hashlib.sha256(encoder_version.encode())
    for p in passages:
        digest.update(p.encode())
        digest.update(b"\0")
    return root / f"chunk-{len(passages)}-{digest.hexdigest()[:20]}.npy"


class Table:
    """The distinct passages and their vectors, filled in order, chunk by chunk (`fill`); a reader
    waits for the rows it needs (`rows`)."""

    def __init__(self, passages: Sequence[str], dimension: int) -> None:
        self.passages = list(passages)
        self.index = {p: i for i, p in enumerate(self.passages)}
        self.matrix = np.empty((len(self.passages), dimension), dtype=np.float32)
        self.ready = 0
        self.error: BaseException | None = None
        self.report: dict[str, Any] = {}
        self._changed = threading.Condition()

    def fill(self, encode: Encode, root: Path, encoder_version: str) -> None:
        """Read each chunk from root, or encode it there and save it; the rows are readable as each
        chunk is in. What it did goes to self.report (chunks encoded now, texts/s while encoding)."""
        try:
            self._fill(encode, root, encoder_version)
        except BaseException as exc:
            with self._changed:
                self.error = exc
                self._changed.notify_all()
            raise

    def _fill(self, encode: Encode, root: Path, encoder_version: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        encoded, encode_s, started = 0, 0.0, time.perf_counter()
        for start in range(0, len(self.passages), CHUNK):
            texts = self.passages[start : start + CHUNK]
            file = chunk_file(root, texts, encoder_version)
            if file.is_file():
                matrix = np.load(file)
            else:
                t0 = time.perf_counter()
                matrix = encode(texts)
                encode_s += time.perf_counter() - t0
                encoded += len(texts)
                partial = file.with_suffix(".partial.npy")
                np.save(partial, matrix)
                partial.rename(file)
                print(
                    f"#   vectors {start + len(texts):>8}/{len(self.passages)}: {encoded / encode_s:6.1f} texts/s "
                    f"encoding (this run), {time.perf_counter() - started:6.1f} s",
                    flush=True,
                )
            with self._changed:
                self.matrix[start : start + len(texts)] = matrix
                self.ready = start + len(texts)
                self._changed.notify_all()
        self.report = {
            "dir": str(root),
            "passages": len(self.passages),
            "encoded_now": encoded,
            "encode_s": round(encode_s, 1),
            "texts_per_s": round(encoded / encode_s, 1) if encode_s else None,
            "seconds": round(time.perf_counter() - started, 1),
            "chunk": CHUNK,
        }

    def rows(self, rows: Sequence[int]) -> np.ndarray:
        """The vectors of these rows, once they are in (waiting for them if need be)."""
        needed = max(rows, default=-1) + 1
        with self._changed:
            while self.ready < needed and self.error is None:
                self._changed.wait()
            if self.error is not None and self.ready < needed:
                raise RuntimeError("encoding the catalogue's passages failed") from self.error
        return self.matrix[list(rows)]


@contextmanager
def looked_up(encoder: Encoder, table: Table) -> Iterator[dict[str, Any]]:
    """While the block runs, encoder.encode answers from table (waiting for the chunks it needs)
    and encodes only the texts not in it. Yields the counts: looked up, encoded, seconds waited."""
    counts: dict[str, Any] = {"looked_up": 0, "encoded": 0, "waited_s": 0.0}
    real = encoder.encode

    def encode(texts: Sequence[str]) -> np.ndarray:
        rows = [table.index.get(t, -1) for t in texts]
        out = np.empty((len(texts), encoder.dimension), dtype=np.float32)
        found = [i for i, r in enumerate(rows) if r >= 0]
        t0 = time.perf_counter()
        out[found] = table.rows([rows[i] for i in found])
        counts["waited_s"] = round(counts["waited_s"] + time.perf_counter() - t0, 1)
        missing = [i for i, r in enumerate(rows) if r < 0]
        if missing:
            out[missing] = real([texts[i] for i in missing])
        counts["looked_up"] += len(found)
        counts["encoded"] += len(missing)
        return out

    setattr(encoder, "encode", encode)  # noqa: B010  (an instance attribute shadows the method)
    try:
        yield counts
    finally:
        delattr(encoder, "encode")
