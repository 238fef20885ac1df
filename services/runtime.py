"""What one process holds: the settings, its database engine, its vector store and its model.

Everything heavy is created lazily, once, even when the API thread and the worker thread ask
at the same moment (the embedded vector store may be opened only once per process). After a
fork, reset_runtime() drops what the parent made; the model is only ever loaded in the process
that uses it, so no CUDA context crosses a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from services.classify import ActiveModels
from services.config import Settings, get_settings
from services.db.session import Database
from services.embedding import Encoder, set_threads
from services.match import Matcher
from services.pipeline import Pipeline
from services.recommend import Recommender
from services.reindex import Reindexer
from services.training import Trainer
from services.vectors import VectorStore, open_store
from services.vectors.faults import FaultyStore
from services.vectors.schema import ensure_collections
from services.vectors.timed import TimedStore
from services.watchlist import Linker

log = logging.getLogger(__name__)
T = TypeVar("T")


class Runtime:
    """The per-process resources, created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self._lock = threading.RLock()
        self._made: dict[str, Any] = {}

    def _once(self, name: str, make: Callable[[], T]) -> T:
        made = self._made.get(name)
        if made is None:
            with self._lock:
                made = self._made.get(name)
                if made is None:
                    made = self._made[name] = make()
        return made  # type: ignore[no-any-return]

    @property
    def db(self) -> Database:
        """The database of this process."""
        return self._once("db", lambda: Database(self.settings.sqlalchemy_url))

    @property
    def encoder(self) -> Encoder:
        """The model, loaded once, with torch limited to the cores this process owns."""
        return self._once("encoder", self._load_encoder)

    def _load_encoder(self) -> Encoder:
        set_threads(self.settings.threads_for_this_process())
        return self.load_encoder(self.settings.model_path)

    def load_encoder(self, path: str) -> Encoder:
        """An encoder from a local path, with this process's device and batch settings."""
        s = self.settings
        encoder = Encoder.load(
            path,
            device=s.device,
            max_seq_length=s.max_seq_length,
            batch_size=s.encode_batch_size,
            backend=s.encoder_backend,
            cache_dir=s.onnx_cache_dir,
        )
        log.info("model %s loaded on %s (%s)", encoder.version, encoder.device, encoder.backend)
        return encoder

    @property
    def models(self) -> ActiveModels:
        """The encoders and heads this process serves (hot-reloaded from the registry)."""
        return self._once(
            "models",
            lambda: ActiveModels(
                settings=self.settings,
                base=self.encoder,
                sessions=self.db.session_scope,
                load_encoder=self.load_encoder,
            ),
        )

    @property
    def store(self) -> VectorStore:
        """The vector store, with every collection and payload index in place."""
        return self._once("store", self._open_store)

    def _open_store(self) -> VectorStore:
        s = self.settings
        api_key = s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None
        store: VectorStore = TimedStore(
            open_store(qdrant_url=s.qdrant_url, qdrant_api_key=api_key, vectors_dir=s.vectors_dir)
        )
        if s.vector_fault_file is not None:  # fault tests take the store down and back with a file
            store = FaultyStore(store, marker=s.vector_fault_file)
        ensure_collections(
            store,
            prefix=s.collection_prefix,
            dimension=self.encoder.dimension,
            item_filter_fields=s.item_filter_fields,
        )
        self._build_indexes(store)
        return store

    def build_vector_indexes(self) -> dict[str, int]:
        """Index the vector collections that are due (the beat's maintenance; embedded store only)."""
        return self._build_indexes(self.store)

    def _build_indexes(self, store: VectorStore) -> dict[str, int]:
        started = time.monotonic()
        built = store.build_indexes(min_unindexed=self.settings.vector_index_min_unindexed)
        if built:
            log.info("vector indexes built for %s in %.1f s", built, time.monotonic() - started)
        return built

    @property
    def matcher(self) -> Matcher:
        """Matches tickets against the FAQ base with the served ticket encoder and intent head."""
        return self._once(
            "matcher",
            lambda: Matcher(
                settings=self.settings, store=self.store, models=self.models, sessions=self.db.session_scope
            ),
        )

    @property
    def recommender(self) -> Recommender:
        """Feeds, similar items and re-ranking over the item collections."""
        return self._once(
            "recommender",
            lambda: Recommender(
                settings=self.settings, store=self.store, models=self.models, sessions=self.db.session_scope
            ),
        )

    @property
    def linker(self) -> Linker:
        """Links news to the watched entities."""
        return self._once(
            "linker", lambda: Linker(sessions=self.db.session_scope, reload_s=self.settings.model_reload_s)
        )

    @property
    def pipeline(self) -> Pipeline:
        """The batch pipeline over this process's encoder and store; tickets get FAQ suggestions,
        news its entity links."""
        return self._once(
            "pipeline",
            lambda: Pipeline(
                models=self.models,
                store=self.store,
                steps={"ticket": [self.matcher.step], "news": [self.linker.step]},
            ),
        )

    @property
    def trainer(self) -> Trainer:
        """Executes training runs in this process (on the GPU when there is one)."""
        return self._once(
            "trainer",
            lambda: Trainer(
                settings=self.settings, sessions=self.db.session_scope, models=self.models, device=self.encoder.device
            ),
        )

    @property
    def reindexer(self) -> Reindexer:
        """Runs re-index jobs against this process's vector store."""
        return self._once(
            "reindexer",
            lambda: Reindexer(
                settings=self.settings, sessions=self.db.session_scope, store=self.store, models=self.models
            ),
        )

    def model_loaded(self) -> bool:
        """True once the encoder is in memory (readiness)."""
        return "encoder" in self._made

    def close(self) -> None:
        """Flush the vector store and drop connections."""
        with self._lock:
            if "store" in self._made:
                self._made.pop("store").close()
                self._made.pop("pipeline", None)
                self._made.pop("matcher", None)
                self._made.pop("recommender", None)
            if "db" in self._made:
                self._made["db"].dispose()


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
        if _runtime is not None and "db" in _runtime._made:
            _runtime._made["db"].engine.dispose(close=False)  # the parent's connections stay the parent's
        _runtime = Runtime(settings or get_settings())
        return _runtime


def forget_inherited_runtime() -> None:
    """In a forked child, drop the parent's runtime; in the process that made it (the solo pool,
    `sift up`), keep it: the embedded vector store may be opened only once per process."""
    if _runtime is not None and _runtime.pid != os.getpid():
        reset_runtime(_runtime.settings)
