"""What one process holds: the settings, its database engine, its vector store and its model.

Everything heavy is created lazily and once. After a fork, reset() drops what the parent made
(connections, and never a CUDA context: the model is only loaded in the process that uses it).
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property

from services.config import Settings, get_settings
from services.db.session import Database
from services.embedding import Encoder, set_threads
from services.pipeline import Pipeline
from services.vectors import VectorStore, open_store
from services.vectors.schema import ensure_collections

log = logging.getLogger(__name__)


class Runtime:
    """The per-process resources, created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()

    @cached_property
    def db(self) -> Database:
        """The database of this process."""
        return Database(self.settings.sqlalchemy_url)

    @cached_property
    def encoder(self) -> Encoder:
        """The model, loaded once, with torch limited to the cores this process owns."""
        with self._lock:
            set_threads(self.settings.threads_for_this_process())
            s = self.settings
            encoder = Encoder.load(
                s.model_path, device=s.device, max_seq_length=s.max_seq_length, batch_size=s.encode_batch_size
            )
            log.info("model %s loaded on %s", encoder.version, encoder.device)
            return encoder

    @cached_property
    def store(self) -> VectorStore:
        """The vector store, with every collection and payload index in place."""
        with self._lock:
            s = self.settings
            api_key = s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None
            store = open_store(qdrant_url=s.qdrant_url, qdrant_api_key=api_key, vectors_dir=s.vectors_dir)
            ensure_collections(store, prefix=s.collection_prefix, dimension=self.encoder.dimension)
            return store

    @cached_property
    def pipeline(self) -> Pipeline:
        """The batch pipeline over this process's encoder and store."""
        return Pipeline(encoder=self.encoder, store=self.store, collection_prefix=self.settings.collection_prefix)

    def model_loaded(self) -> bool:
        """True once the encoder is in memory (readiness)."""
        return "encoder" in self.__dict__

    def close(self) -> None:
        """Flush the vector store and drop connections."""
        if "store" in self.__dict__:
            self.store.close()
        if "db" in self.__dict__:
            self.db.dispose()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
        return _runtime


def reset_runtime(settings: Settings | None = None) -> Runtime:
    """Forget inherited resources (after a fork) or switch settings (tests); returns the new runtime."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None and "db" in _runtime.__dict__:
            _runtime.db.dispose()
        _runtime = Runtime(settings or get_settings())
        return _runtime
