"""VectorStore adapter for a Qdrant server (or cluster) through qdrant-client. `QdrantClient(":memory:")`
runs the same calls in-process for tests (brute force, payload indexes ignored)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.errors import Conflict, DomainError, InvalidInput, NotFound, VectorStoreUnavailable
from services.vectors.base import (
    Examples,
    Filters,
    Hit,
    PayloadIndex,
    VectorPoint,
    batch_queries,
    plain_vector,
    point_ids,
    range_bounds,
    recommend_examples,
)

_SCHEMA = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
    "datetime": qm.PayloadSchemaType.DATETIME,
}

# Statuses that name the caller's mistake; any other (401, 403 "locked", 408, 429, 5xx) may pass.
_HTTP_ERRORS: dict[int, type[DomainError]] = {400: InvalidInput, 422: InvalidInput, 404: NotFound, 409: Conflict}
_GRPC_ERRORS: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
}
_STRATEGIES = {"average_vector": qm.RecommendStrategy.AVERAGE_VECTOR, "best_score": qm.RecommendStrategy.BEST_SCORE}
_UNREACHABLE = (ResponseHandlingException, httpx.HTTPError, ConnectionError, TimeoutError)


def _translate(exc: Exception, action: str) -> DomainError | None:
    """The domain error for a client failure, or None for one that is a bug of ours."""
    text = f"{action}: {exc}"
    if isinstance(exc, UnexpectedResponse):
        return _HTTP_ERRORS.get(exc.status_code or 0, VectorStoreUnavailable)(text)
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        return _GRPC_ERRORS.get(code, VectorStoreUnavailable)(text)
    if isinstance(exc, _UNREACHABLE):
        return VectorStoreUnavailable(text)
    # Local mode (":memory:" or a path) raises plain Python errors.
    if isinstance(exc, RuntimeError):  # "QdrantLocal instance is closed"
        return VectorStoreUnavailable(text)
    if isinstance(exc, ValueError) and "not found" in str(exc):
        return NotFound(text)
    if isinstance(exc, ValueError | TypeError):  # bad ids, wrong vector size; pydantic errors too
        return InvalidInput(text)
    return None


@contextmanager
def _client(action: str) -> Iterator[None]:
    """Run client calls, raising domain errors instead of transport and HTTP errors."""
    try:
        yield
    except DomainError:
        raise
    except Exception as exc:
        error = _translate(exc, action)
        if error is None:
            raise
        raise error from exc


def _condition(key: str, value: Any) -> Any:
    """One key's condition: a mapping is a range, a list means any of its values, anything else that exact value."""
    if isinstance(value, Mapping):
        bounds = range_bounds(key, value)
        kind = qm.DatetimeRange if bounds.is_datetime else qm.Range
        return qm.FieldCondition(key=key, range=kind(**bounds.bounds))
    if isinstance(value, list | tuple | set | frozenset):
        values = list(value)
        if values and all(isinstance(v, bool) for v in values):  # MatchAny takes strings or ints only
            return qm.Filter(should=[_condition(key, v) for v in dict.fromkeys(values)])
        return qm.FieldCondition(key=key, match=qm.MatchAny(any=values))
    if isinstance(value, str | int):  # bool is an int
        return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))
    raise InvalidInput(f"cannot filter {key!r} on {type(value).__name__} value {value!r}: use str, int or bool")


def server_filter(filters: Filters | None, exclude_ids: Sequence[str] = ()) -> qm.Filter | None:
    """Filters (see base.Filters) as a qdrant-client filter in which every key must hold and no excluded id may."""
    must = [_condition(key, value) for key, value in (filters or {}).items()]
    must_not: list[Any] = [qm.HasIdCondition(has_id=point_ids(exclude_ids))] if exclude_ids else []
    if not (must or must_not):
        return None
    return qm.Filter(must=must or None, must_not=must_not or None)


def _hits(points: Sequence[qm.ScoredPoint], with_vectors: bool, with_payload: bool) -> list[Hit]:
    return [
        Hit(
            str(p.id),
            float(p.score),
            dict(p.payload or {}) if with_payload else {},
            plain_vector(p.vector) if with_vectors else None,
        )
        for p in points
    ]


def _vector_size(info: qm.CollectionInfo) -> int | None:
    vectors = info.config.params.vectors
    if isinstance(vectors, dict):
        vectors = vectors.get("")
    return vectors.size if isinstance(vectors, qm.VectorParams) else None


class QdrantServerStore:
    """A Qdrant server through qdrant-client."""

    def __init__(self, client: QdrantClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, url: str, api_key: str | None = None) -> QdrantServerStore:
        """A store on the server at url; ":memory:" gives qdrant-client's in-process local mode."""
        if url == ":memory:":
            return cls(QdrantClient(":memory:"))
        return cls(QdrantClient(url=url, api_key=api_key, timeout=10))

    def ensure_collection(self, name: str, *, dimension: int, indexes: Sequence[PayloadIndex]) -> None:
        """Create the collection, then its payload indexes before any upload (qdrant-client #408)."""
        unknown = sorted({index.kind for index in indexes} - _SCHEMA.keys())
        if unknown:
            raise InvalidInput(f"unknown payload index kind(s) {unknown}; use one of {sorted(_SCHEMA)}")
        with _client(f"cannot prepare collection {name!r}"):
            if not self.client.collection_exists(name):
                self._create(name, dimension)
            info = self.client.get_collection(name)
            size = _vector_size(info)
            if size != dimension:
                raise Conflict(f"collection {name!r} holds {size}-d vectors, not {dimension}-d")
            existing = set(info.payload_schema or {})
            for index in indexes:
                if index.field not in existing:
                    self.client.create_payload_index(name, index.field, field_schema=_SCHEMA[index.kind], wait=True)

    def _create(self, name: str, dimension: int) -> None:
        vectors = qm.VectorParams(size=dimension, distance=qm.Distance.COSINE)
        try:
            self.client.create_collection(name, vectors_config=vectors)
        except UnexpectedResponse as exc:
            if exc.status_code != 409:  # 409: another process created it first
                raise

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None:
        """One request for the batch, answered once the server has applied it (wait=True)."""
        if not points:
            return
        with _client(f"cannot upsert into {name!r}"):
            batch = [qm.PointStruct(id=p.id, vector=[float(x) for x in p.vector], payload=p.payload) for p in points]
            self.client.upsert(name, points=batch, wait=True)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Remove points by id; unknown ids are ignored."""
        if not ids:
            return
        with _client(f"cannot delete from {name!r}"):
            self.client.delete(name, points_selector=qm.PointIdsList(points=list(ids)), wait=True)

    def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        filters: Filters | None = None,
        exclude_ids: Sequence[str] = (),
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        """Nearest points by cosine similarity, best first, leaving out exclude_ids."""
        action = f"cannot search {name!r}"
        with _client(action):
            query = [float(x) for x in vector]
        return self._query(name, query, action, limit, filters, exclude_ids, with_vectors, with_payload)

    def search_batch(
        self, name: str, vectors: Examples, *, limit: int, filters: Sequence[Filters | None] | None = None
    ) -> list[list[Hit]]:
        """One search per vector, in one request."""
        queries = batch_queries(vectors, filters)
        if not queries:
            return []
        with _client(f"cannot search {name!r}"):
            requests = [
                qm.QueryRequest(query=row, filter=server_filter(f), limit=limit, with_payload=True)
                for row, f in queries
            ]
            results = self.client.query_batch_points(name, requests=requests)
        return [_hits(result.points, False, True) for result in results]

    def recommend(
        self,
        name: str,
        *,
        positive: Examples,
        negative: Examples = (),
        limit: int,
        filters: Filters | None = None,
        exclude_ids: Sequence[str] = (),
        strategy: str = "average_vector",
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        """Points like the positive examples and unlike the negative ones, best first."""
        action = f"cannot recommend from {name!r}"
        with _client(action):
            positives, negatives = recommend_examples(positive=positive, negative=negative, strategy=strategy)
            examples = qm.RecommendInput(
                positive=positives.tolist(), negative=negatives.tolist(), strategy=_STRATEGIES[strategy]
            )
            query = qm.RecommendQuery(recommend=examples)
        return self._query(name, query, action, limit, filters, exclude_ids, with_vectors, with_payload)

    def _query(  # search's and recommend's options, passed on positionally
        self,
        name: str,
        query: list[float] | qm.RecommendQuery,
        action: str,
        limit: int,
        filters: Filters | None,
        exclude_ids: Sequence[str],
        with_vectors: bool,
        with_payload: bool,
        /,
    ) -> list[Hit]:
        with _client(action):
            query_filter = server_filter(filters, exclude_ids)
            result = self.client.query_points(
                name,
                query=query,
                query_filter=query_filter,
                limit=limit,
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
        return _hits(result.points, with_vectors, with_payload)

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
        """Points by id (score 1.0); unknown ids are left out."""
        if not ids:
            return []
        with _client(f"cannot retrieve from {name!r}"):
            records = self.client.retrieve(name, ids=list(ids), with_payload=True, with_vectors=with_vectors)
        return [
            Hit(str(r.id), 1.0, dict(r.payload or {}), plain_vector(r.vector) if with_vectors else None)
            for r in records
        ]

    def count(self, name: str, *, filters: Filters | None = None) -> int:
        """Exact number of points matching filters."""
        with _client(f"cannot count {name!r}"):
            return int(self.client.count(name, count_filter=server_filter(filters), exact=True).count)

    def build_indexes(self, *, min_unindexed: int) -> dict[str, int]:
        """Nothing to do: a Qdrant server builds its indexes in the background."""
        return {}

    def warm(self, name: str) -> int:
        """Nothing to read here: the server keeps its own storage warm."""
        return 0

    def ping(self) -> None:
        """Raise VectorStoreUnavailable unless the server answers."""
        try:
            self.client.get_collections()
        except Exception as exc:  # whatever the reason, a server that does not answer is unavailable
            raise VectorStoreUnavailable(f"Qdrant does not answer: {exc}") from exc

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
