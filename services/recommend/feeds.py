"""Recommendation feeds, similar items and re-ranking (the model itself is services/recommend/scoring.py).

A feed reads the user's latest SIFT_RECOMMEND_HISTORY interactions (a bounded read), gathers
candidates from three places under the caller's filters, scores them all with one blend, and
diversifies the top: Qdrant's recommendation query (like the profile items, unlike the dismissed
ones), co-interaction neighbours of the profile items, and trending items. Seen items are excluded
inside the vector query, so the limit still fills. `rank` scores a given list with the same blend.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.classify.serving import ActiveModels
from services.config import Settings
from services.db.models import Event
from services.errors import Conflict, InvalidInput, NotFound
from services.events import batch
from services.events.accept import point_id_for
from services.recommend import interactions, reads
from services.recommend.interactions import Touch
from services.recommend.item_points import ENTRY_TTL_S, ItemPoints
from services.recommend.item_reads import ItemReads
from services.recommend.learned import Ease, ServedModel, served_blend
from services.recommend.scoring import (
    Candidate,
    Profile,
    Scored,
    Signals,
    Weights,
    build_profile,
    diversify,
    explain,
    score_all,
    weights_from,
)
from services.training import reindex
from services.vectors.base import Filters, Hit, VectorStore

_RECOMMEND_EXAMPLES = 10  # examples per side in the vector query: the best-weighted positives, the latest dismissals
log = logging.getLogger(__name__)
_MAX_RANK_ITEMS = 1000
_PREFILL_ITEMS = 20_000  # per kind, read into the item cache when the API starts (about 40 MB)
# With the embedded store, which only this process writes: every item up to this many per kind
# (about 200 MB at 100,000), kept until it changes (see item_points.py).
_PREFILL_ITEMS_EMBEDDED = 100_000
_EXTRA_PER_SOURCE = 30  # neighbours, trending and newest items a warm feed adds to the vector query's
# Feeds and ranks compute one at a time in a process (their reads still take no writer's turn): side by
# side, threads trade the GIL between short SQLite and Qdrant calls; 8 clients' feeds at 100,000 items
# cost a median 20.5 ms CPU each against 17.2 ms one at a time, 48 feeds/s against 55, p99 487 ms against 240.
_COMPUTING = threading.Lock()


@dataclass(frozen=True)
class Similar:
    """An item like another one, with its cosine similarity."""

    item_id: str
    score: float
    reason: str


class Recommender:
    """Feeds, similar items and re-ranking over the item collections and the interaction aggregates."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: VectorStore,
        models: ActiveModels,
        sessions: Callable[[], Any],
        reads: Callable[[], Any],
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.sessions = sessions
        # Feeds, ranks and similar items only read: one read scope each (Database.read_scope: on
        # SQLite it takes no writer's turn, so concurrent requests do not queue behind each other
        # or the worker; the model registry's own session_scope may open inside it).
        self.reads = reads
        self.weights = weights_from(settings)
        self.served = ServedModel(sessions=sessions, reload_s=settings.model_reload_s)
        # With the embedded store this process (`sift up`) is the only one that writes items and
        # interactions, and it forgets what it changes: no age limit. Another process's writes reach
        # this one within the limit. The lambda closes over the settings, not self (a cycle would
        # keep a closed recommender and its listeners alive).
        embedded = settings.embedded_vectors
        self.points = ItemPoints(store, ttl_s=math.inf if embedded else ENTRY_TTL_S)
        reindex.on_written(self.points.forget)  # a new encoder's re-embedded points, as batch.on_done below
        self.item_reads = ItemReads(ttl_s=lambda: math.inf if embedded else settings.recommend_cache_s)
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._cache_lock = threading.Lock()
        self._refreshing: set[tuple[str, str]] = set()
        batch.on_done(self.forget_cached)  # a done item is recommendable at once, not after the cache's age
        interactions.on_recorded(self._recorded)  # new pairs and popularity count at once in this process

    def _point(self, item_id: str) -> str:
        return _point_id(item_id, self.settings.tenant)

    def feed(
        self, *, user_id: str, limit: int, kind: str | None = None, filters: Filters | None = None
    ) -> list[Scored]:
        """The user's feed: unseen items under the filters, scored, diversified, best first."""
        if kind is not None and kind not in interactions.ITEM_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(interactions.ITEM_KINDS)}, not {kind!r}")
        with _COMPUTING, self.reads() as session:  # one read transaction for the history, pairs, popularity
            profile, touches = self._profile(session, user_id)
            model, weights, x = self._learned(touches)
            kind = kind or profile.latest_kind or "product"
            collections = self._collections()
            vectors, titles = self._profile_vectors(profile, collections)
            pool: dict[str, Candidate] = {}
            for hit in self._content_candidates(profile, kind, vectors, collections[kind], filters):
                pool.setdefault(hit.item_id, hit)
            more, trending, pairs = self._neighbours_and_trending(session, profile, kind)
            more += model.top(x, exclude=profile.seen, limit=_EXTRA_PER_SOURCE) if model else []
            extra = [i for i in dict.fromkeys(more) if i not in profile.seen and i not in pool]
            for hit in self._filtered(collections[kind], kind, extra, filters):
                pool.setdefault(hit.item_id, hit)
            # A cold start is ordered by what is trending now; anyone else by the blend's all-time popularity.
            popularity = trending if profile.cold else None
            learned = (model, weights, x)
            scored, signals = self._score(
                session, list(pool.values()), profile, vectors, popularity, learned, pairs=pairs
            )
        shown = diversify(scored, limit=limit, lam=self.settings.recommend_mmr_lambda)
        return explain(shown, profile=profile, vectors=vectors, signals=signals, weights=weights, titles=titles)

    def rank(self, *, user_id: str, item_ids: Sequence[str]) -> list[Scored]:
        """The given items scored for the user with the feed's blend, best first (nothing excluded)."""
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            raise InvalidInput("item_ids must hold at least one item id")
        if len(unique) > _MAX_RANK_ITEMS:
            raise InvalidInput(f"{len(unique)} items to rank; send at most {_MAX_RANK_ITEMS}")
        with _COMPUTING, self.reads() as session:
            kinds = interactions.item_kinds(session, ids=unique)
            profile, touches = self._profile(session, user_id)
            learned = self._learned(touches)
            collections = self._collections()
            vectors, titles = self._profile_vectors(profile, collections)
            candidates = []
            for kind in interactions.ITEM_KINDS:
                ids = [i for i in unique if kinds[i] == kind]
                found = {h.item_id: h for h in self._retrieve(collections[kind], kind, ids)}
                candidates += [found.get(i) or Candidate(i, kind, None, {}) for i in ids]
            scored, signals = self._score(session, candidates, profile, vectors, None, learned)
        return explain(scored, profile=profile, vectors=vectors, signals=signals, weights=learned[1], titles=titles)

    def similar(self, *, item_id: str, limit: int, filters: Filters | None = None) -> list[Similar]:
        """Items nearest to one item, under the filters."""
        with self.reads() as session:
            kind = interactions.item_kinds(session, ids=[item_id])[item_id]
        collection = self._collections()[kind]
        found = self._retrieve(collection, kind, [item_id])
        if not found or found[0].vector is None:
            raise Conflict(f"item {item_id!r} is not processed yet; ask again when its status is done")
        title = _title(found[0].payload, item_id)
        hits = self.store.search(
            collection, found[0].vector.tolist(), limit=limit, filters=filters, exclude_ids=[self._point(item_id)]
        )
        return [Similar(str(h.payload.get("event_id")), round(h.score, 6), f"similar to “{title}”") for h in hits]

    def prefill(self, *, items: int | None = None) -> int:
        """Read each kind's item collection into the page cache (a feed's candidates are mostly
        items no request read before), the points of its most interacted items, then of its newest,
        into the item cache, and their neighbours and popularity, so that a new process's first
        feeds find most of what they read here; returns the points read."""
        if items is None:
            items = _PREFILL_ITEMS_EMBEDDED if self.settings.embedded_vectors else _PREFILL_ITEMS
        read = 0
        for kind, collection in self._collections().items():
            took = time.monotonic()
            if size := self.store.warm(collection):
                took = time.monotonic() - took
                log.info("read %s (%.0f MiB) into the page cache in %.1f s", collection, size / 2**20, took)
            with self.reads() as session:
                interacted = list(reads.most_interacted(session, kind, items))
                ids = list(dict.fromkeys([*interacted, *reads.newest(session, kind, items)]))[:items]
                per_item = self.settings.recommend_neighbours
                self.item_reads.prefill(session, ids, neighbours_of=interacted, per_item=per_item)
            for start in range(0, len(ids), 1000):
                read += len(self._retrieve(collection, kind, ids[start : start + 1000]))
        return read

    def delete_item(self, *, item_id: str) -> None:
        """Remove an item from every feed: its row, its aggregates (interactions stay) and its point."""
        with self.sessions() as session:
            kind = session.scalar(select(Event.kind).where(Event.id == item_id))
            if kind is not None and kind not in interactions.ITEM_KINDS:
                raise InvalidInput(f"{item_id!r} is a {kind} event, not an item")
            if kind is not None:
                interactions.forget_item(session, item_id=item_id)
                session.execute(delete(Event).where(Event.id == item_id))
        self.item_reads.forget([item_id])
        self.item_reads.forget_all_neighbours()
        # The point goes after the row: a worker that upserts it meanwhile finds the row gone and
        # deletes the point itself, and a retry after a crash here still deletes it (ids are fixed).
        point = self._point(item_id)
        for collection in self._collections().values():
            self.store.delete(collection, [point])
            self.points.forget(collection, [point])
        if kind is None:
            raise NotFound(f"no item with id {item_id!r}")

    # -- reading ------------------------------------------------------------------------------

    def _collections(self) -> dict[str, str]:
        return {kind: self.models.for_kind(kind).collection for kind in interactions.ITEM_KINDS}

    def _profile(self, session: Session, user_id: str) -> tuple[Profile, list[Touch]]:
        touches = interactions.history(session, user_id=user_id, limit=self.settings.recommend_history)
        return build_profile(touches, weights=self.weights), touches

    def _learned(self, touches: Sequence[Touch]) -> tuple[Ease | None, Weights, np.ndarray | None]:
        return served_blend(self.served.get(), self.weights, touches)

    def _profile_vectors(
        self, profile: Profile, collections: Mapping[str, str]
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        ids = [*profile.positives, *profile.dismissed[:_RECOMMEND_EXAMPLES]]
        vectors: dict[str, np.ndarray] = {}
        titles: dict[str, str] = {}
        for kind, collection in collections.items():
            for c in self._retrieve(collection, kind, [i for i in ids if profile.kinds.get(i) == kind]):
                titles[c.item_id] = _title(c.payload, c.item_id)
                if c.vector is not None:
                    vectors[c.item_id] = c.vector
        return vectors, titles

    def _retrieve(self, collection: str, kind: str, ids: Sequence[str]) -> list[Candidate]:
        """Those of the items that are stored, in the order of ids, with their vectors (from the
        item cache: no query when every one is there)."""
        point_ids = [self._point(i) for i in ids]
        points = self.points.get(collection, point_ids)
        return [Candidate(p.item_id, kind, p.vector, p.payload) for pid in point_ids if (p := points.get(pid))]

    def _content_candidates(
        self, profile: Profile, kind: str, vectors: Mapping[str, np.ndarray], collection: str, filters: Filters | None
    ) -> list[Candidate]:
        positive = [vectors[i] for i in profile.positives if profile.kinds[i] == kind and i in vectors]
        if not positive:
            return []
        negative = [vectors[i] for i in profile.dismissed if profile.kinds[i] == kind and i in vectors]
        hits = self.store.recommend(  # rows of one array each: no per-number conversion
            collection,
            positive=np.stack(positive[:_RECOMMEND_EXAMPLES]),
            negative=np.stack(negative[:_RECOMMEND_EXAMPLES]) if negative else [],
            limit=self.settings.recommend_candidates,
            filters=filters,
            exclude_ids=[self._point(i) for i in profile.seen],
            with_payload=False,
        )
        return self._candidates(collection, kind, hits)

    def _filtered(self, collection: str, kind: str, ids: Sequence[str], filters: Filters | None) -> list[Candidate]:
        """Those of ids that are stored and pass the filters (with filters, one filtered query on the
        indexed event id; its ranking vector is irrelevant)."""
        if not ids or not filters:
            return self._retrieve(collection, kind, ids)
        where = dict(filters)
        where["event_id"] = list(ids)
        any_vector = [1.0] + [0.0] * (self.models.for_kind(kind).encoder.dimension - 1)
        hits = self.store.search(collection, any_vector, limit=len(ids), filters=where, with_payload=False)
        return self._candidates(collection, kind, hits)

    def _candidates(self, collection: str, kind: str, hits: Sequence[Hit]) -> list[Candidate]:
        """The hits (ids and scores only) as candidates, in order, with their vectors and payloads
        from the item cache (one that was deleted since the query is left out)."""
        points = self.points.get(collection, [h.id for h in hits])
        return [Candidate(p.item_id, kind, p.vector, p.payload) for h in hits if (p := points.get(h.id))]

    def _neighbours_and_trending(
        self, session: Session, profile: Profile, kind: str
    ) -> tuple[list[str], dict[str, float], dict[tuple[str, str], float]]:
        """The strongest co-interaction neighbours of the profile, trending items (with their
        counts) and the newest items: _EXTRA_PER_SOURCE of each, or all candidates for a cold
        start; and the pairs read, which stand for every pair of the feed (the top neighbours of
        each profile item, as item-kNN keeps them)."""
        per_source = self.settings.recommend_candidates if profile.cold else _EXTRA_PER_SOURCE
        per_item = self.settings.recommend_neighbours
        pairs = self.item_reads.neighbours(session, list(profile.positives), per_item=per_item)
        trending = self._cached(("trending", kind), lambda s: reads.trending(s, kind, self.settings), session)
        newest = self._cached(
            ("newest", kind), lambda s: reads.newest(s, kind, self.settings.recommend_candidates), session
        )
        totals: dict[str, float] = defaultdict(float)
        for (other, item_id), weight in pairs.items():
            totals[other] += profile.positives[item_id] * weight
        neighbours = [k for _, k in sorted((-w, k) for k, w in totals.items())[:per_source]]  # no key calls
        ids = [*neighbours, *list(trending)[:per_source], *newest[:per_source]]
        return list(dict.fromkeys(ids)), trending, pairs

    def _score(
        self,
        session: Session,
        candidates: list[Candidate],
        profile: Profile,
        vectors: Mapping[str, np.ndarray],
        popularity: Mapping[str, float] | None,
        learned: tuple[Ease | None, Weights, np.ndarray | None],
        *,
        pairs: Mapping[tuple[str, str], float] | None = None,
    ) -> tuple[list[Scored], Signals]:
        ids = [c.item_id for c in candidates]
        max_pop = self._cached(("max", ""), reads.max_popularity, session) if popularity is None else 1.0
        if popularity is None:
            popularity = self.item_reads.popularity(session, [*ids, *profile.positives])
        if pairs is None:
            pairs = reads.pairs(session, ids, list(profile.positives))
        signals = Signals(popularity=popularity, max_popularity=max(max_pop, *popularity.values(), 1.0), pairs=pairs)
        model, weights, x = learned
        column = model.scores(x, ids) if model else None
        now = datetime.now(UTC)
        scored = score_all(
            candidates, profile=profile, vectors=vectors, signals=signals, weights=weights, now=now, learned=column
        )
        return scored, signals

    def _recorded(self, tenant: str, item_ids: set[str]) -> None:
        if tenant == self.settings.tenant:
            self.item_reads.forget(item_ids)

    def forget_cached(self, kind: str, ids: list[str]) -> None:
        """Kind's items just recorded done: forget their cached points (an item sent again may carry
        a new text or metadata), and put them at the head of the cached newest items, so they are
        in feeds at once without a read in the next request (reading the newest items again cost
        15 ms at 10,000 items, the trending scan 23 ms, and a worker records a batch every second
        or so while ingesting). Trending counts interactions, which a new item does not change."""
        if kind in interactions.ITEM_KINDS:  # an item sent again may have a new text or metadata
            self.points.forget(self._collections()[kind], [self._point(i) for i in ids])
        with self._cache_lock:
            hit = self._cache.get(("newest", kind))
            if hit is not None:
                newest = list(dict.fromkeys([*sorted(ids), *hit[1]]))[: self.settings.recommend_candidates]
                self._cache[("newest", kind)] = (hit[0], newest)

    def _cached(self, key: tuple[str, str], read: Callable[[Session], Any], session: Session) -> Any:
        """read(session)'s value, reused for SIFT_RECOMMEND_CACHE_S; once stale, it is still
        served while one background thread reads the new one (no request waits for a scan). Only
        the first read of a key (or the first after forget_cached) happens in the request."""
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                if time.monotonic() - hit[0] >= self.settings.recommend_cache_s and key not in self._refreshing:
                    self._refreshing.add(key)
                    threading.Thread(
                        target=self._refresh_quietly, args=(key, read), name="sift-recommend-cache"
                    ).start()
                return hit[1]
        return self._refresh(key, read, session)

    def _refresh(self, key: tuple[str, str], read: Callable[[Session], Any], session: Session | None = None) -> Any:
        try:
            if session is not None:
                value = read(session)
            else:
                with self.reads() as own:
                    value = read(own)
            with self._cache_lock:
                self._cache[key] = (time.monotonic(), value)
            return value
        finally:
            with self._cache_lock:
                self._refreshing.discard(key)

    def _refresh_quietly(self, key: tuple[str, str], read: Callable[[Session], Any]) -> None:
        try:
            self._refresh(key, read)
        except Exception:  # the stale value stays; the next request past the deadline tries again
            log.exception("could not refresh the recommendation cache %s", key)


@lru_cache(maxsize=65_536)
def _point_id(item_id: str, tenant: str) -> str:
    """point_id_for, remembered: a feed excludes every item of the user's history (200 UUIDs to hash)."""
    return point_id_for(item_id, tenant=tenant)


def _title(payload: Mapping[str, Any], fallback: str) -> str:
    text = payload.get("title") or payload.get("text") or fallback
    text = str(text)
    return text if len(text) <= 60 else text[:57] + "…"
