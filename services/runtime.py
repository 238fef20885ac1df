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
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from services.alerts import rules as alerts
from services.alerts.watchlist import Linker
from services.classify.serving import ActiveModels
from services.config import DEFAULT_TENANT, Settings, get_settings
from services.db.migrate import upgrade_tenant
from services.db.session import Database
from services.embedding.encoder import Encoder, set_threads
from services.errors import NotFound
from services.events.batch import BatchProcessor, FollowUp
from services.events.pipeline import Pipeline
from services.events.reidentify import move_points
from services.matching import faq
from services.matching.matcher import Matcher
from services.recommend.feeds import Recommender
from services.recommend.training import RecommendTrainer
from services.task_names import ALERTS_PROCESS, CALIBRATE_MATCH
from services.tenancy import tenants
from services.training.reindex import Reindexer
from services.training.runs import Trainer
from services.vectors import VectorStore, open_store
from services.vectors.faults import FaultyStore
from services.vectors.schema import ensure_collections
from services.vectors.timed import TimedStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Runtime:
    """The per-process resources of one tenant, created on first use.

    The process's root runtime (get_runtime()) acts for SIFT_TENANT (default: the default tenant);
    for_tenant() gives the runtime of any other tenant, which shares the root's model, database
    engine and vector store but has its own sessions (its schema), collections, models and caches.
    """

    def __init__(self, settings: Settings, *, root: Runtime | None = None) -> None:
        self.settings = settings
        self.tenant = settings.tenant
        self.pid = os.getpid()
        self._root = root
        self._lock = threading.RLock()
        self._made: dict[str, Any] = {}
        self._tenants: dict[str, Runtime] = {}

    def _once(self, name: str, make: Callable[[], T]) -> T:
        made = self._made.get(name)
        if made is None:
            with self._lock:
                made = self._made.get(name)
                if made is None:
                    made = self._made[name] = make()
        return made  # type: ignore[no-any-return]

    @property
    def root(self) -> Runtime:
        """The process's root runtime (self, unless this is a tenant's)."""
        return self._root or self

    def for_tenant(self, tenant: str) -> Runtime:
        """The runtime of a tenant (made once per process)."""
        root = self.root
        if tenant == root.tenant:
            return root
        made = root._tenants.get(tenant)
        if made is None:
            with root._lock:
                made = root._tenants.get(tenant)
                if made is None:
                    made = root._tenants[tenant] = Runtime(root.settings.for_tenant(tenant), root=root)
        return made

    def tenant_ids(self) -> list[str]:
        """Every tenant (the beat's sweeps visit each one)."""
        with self.control_db.session_scope() as session:
            return tenants.tenant_ids(session)

    def create_tenant(self, tenant: str, *, name: str = "") -> bool:
        """Make a tenant's tables, then record it (so a recorded tenant always has them); False if it existed."""
        tenants.check_tenant_id(tenant)
        if tenant != DEFAULT_TENANT:  # the default tenant's tables are the main schema's
            upgrade_tenant(self.settings.sqlalchemy_url, tenant)
        with self.control_db.session_scope() as session:
            return tenants.add_tenant(session, tenant=tenant, name=name)

    @property
    def control_db(self) -> Database:
        """The main schema: the tenants and their keys (and the default tenant's tables)."""
        if self._root is not None:
            return self._root.control_db
        return self._once("control_db", lambda: Database(self.settings.sqlalchemy_url))

    @property
    def db(self) -> Database:
        """This tenant's database: sessions that see its tables only."""
        return self._once("db", self._tenant_db)

    def _tenant_db(self) -> Database:
        if self.tenant != DEFAULT_TENANT and self.tenant not in self.tenant_ids():
            raise NotFound(f"no tenant {self.tenant!r}; `sift keys create --tenant {self.tenant}` creates it")
        return self.control_db.for_tenant(self.tenant)

    @property
    def encoder(self) -> Encoder:
        """The model, loaded once per process, with torch limited to the cores this process owns."""
        if self._root is not None:
            return self._root.encoder
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
        """The vector store, with this tenant's collections and payload indexes in place."""
        return self._once("store", self._tenant_store)

    def _tenant_store(self) -> VectorStore:
        s = self.settings
        store = self.root._once("base_store", self.root._open_store)
        ensure_collections(
            store, prefix=s.tenant_prefix, dimension=self.encoder.dimension, item_filter_fields=s.item_filter_fields
        )
        # Points whose id changed in a migration move before anything reads them by id.
        move_points(
            sessions=self.db.session_scope,
            store=store,
            collection_for_kind=lambda kind: self.models.for_kind(kind).collection,
            page=s.reindex_page,
        )
        self._build_indexes(store)
        return store

    def _open_store(self) -> VectorStore:
        s = self.settings
        api_key = s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None
        store: VectorStore = open_store(qdrant_url=s.qdrant_url, qdrant_api_key=api_key, vectors_dir=s.vectors_dir)
        if s.vector_fault_file is not None:  # fault tests take the store down and back with a file
            store = FaultyStore(store, marker=s.vector_fault_file)
        return TimedStore(store)  # outermost: it times, and sees every failed write (readiness)

    def build_vector_indexes(self) -> dict[str, int]:
        """Index the vector collections that are due, every tenant's (the beat's maintenance; embedded store only)."""
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
                settings=self.settings,
                store=self.store,
                models=self.models,
                sessions=self.db.session_scope,
                reads=self.db.read_scope,
            ),
        )

    @property
    def recommender(self) -> Recommender:
        """Feeds, similar items and re-ranking over the item collections."""
        return self._once(
            "recommender",
            lambda: Recommender(
                settings=self.settings,
                store=self.store,
                models=self.models,
                sessions=self.db.session_scope,
                reads=self.db.read_scope,
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
    def batch(self) -> BatchProcessor:
        """The batch use case over this tenant's pipeline; done news is linked to watched entities
        in the commit that records it, then evaluated for alerts."""
        return self._once(
            "batch",
            lambda: BatchProcessor(
                settings=self.settings,
                sessions=self.db.session_scope,
                pipeline=self.pipeline,
                follow_ups={"news": FollowUp(record=self._record_links, then=ALERTS_PROCESS)},
            ),
        )

    def _record_links(self, session: Session, event_ids: list[str], now: datetime) -> None:
        alerts.record_links(session, event_ids=event_ids, settings=self.settings, now=now)

    def _reembed_faqs(self, encoder: Encoder, ticket_collection: str, since: datetime | None) -> int:
        page = self.settings.reindex_page
        return faq.reembed(self.db.session_scope, self.store, encoder, ticket_collection, since=since, page=page)

    @property
    def trainer(self) -> Trainer:
        """Executes training runs in this process (on the GPU when there is one)."""
        return self._once(
            "trainer",
            lambda: Trainer(
                settings=self.settings,
                sessions=self.db.session_scope,
                models=self.models,
                device=self.encoder.device,
                after_switch={faq.KIND: CALIBRATE_MATCH},  # a new ticket head or encoder changes match scores
                others=[
                    RecommendTrainer(
                        settings=self.settings,
                        sessions=self.db.session_scope,
                        store=lambda: self.store,
                        models=self.models,
                    )
                ],
            ),
        )

    @property
    def reindexer(self) -> Reindexer:
        """Runs re-index jobs against this process's vector store."""
        return self._once(
            "reindexer",
            lambda: Reindexer(
                settings=self.settings,
                sessions=self.db.session_scope,
                store=self.store,
                models=self.models,
                companions={faq.KIND: self._reembed_faqs},  # the FAQ base lives in the ticket encoder's space
                after_switch={faq.KIND: CALIBRATE_MATCH},
            ),
        )

    def vector_write_failure(self) -> tuple[float, str] | None:
        """(when, why) while this process's last vector write failed, else None."""
        store = self.root._made.get("base_store")
        return store.write_failure if isinstance(store, TimedStore) else None

    def model_loaded(self) -> bool:
        """True once the encoder is in memory (readiness)."""
        return "encoder" in self.root._made

    def close(self) -> None:
        """Flush the vector store and drop connections (the root closes what every tenant shares)."""
        root = self.root
        with root._lock:
            databases = root.databases()
            root._tenants.clear()
            if "base_store" in root._made:
                root._made.pop("base_store").close()
            for name in ("store", "pipeline", "batch", "matcher", "recommender"):
                root._made.pop(name, None)
            for db in databases:
                db.dispose()

    def databases(self) -> list[Database]:
        """The distinct engines this process opened (the main one, and each SQLite tenant file)."""
        root = self.root
        made = [root._made.get("control_db"), root._made.get("db")]
        made += [child._made.get("db") for child in list(root._tenants.values())]
        engines: dict[int, Database] = {}
        for db in made:
            if db is not None:
                engines.setdefault(id(db.engine), db)
        return list(engines.values())


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
        if _runtime is not None:
            for db in _runtime.databases():  # the parent's connections stay the parent's
                db.engine.dispose(close=False)
        _runtime = Runtime(settings or get_settings())
        return _runtime


def forget_inherited_runtime() -> None:
    """In a forked child, drop the parent's runtime; in the process that made it (the solo pool,
    `sift up`), keep it: the embedded vector store may be opened only once per process."""
    if _runtime is not None and _runtime.pid != os.getpid():
        reset_runtime(_runtime.settings)
