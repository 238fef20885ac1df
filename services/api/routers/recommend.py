"""Recommendation feeds: POST /v1/interactions, GET /v1/users/{id}/feed, POST /v1/users/{id}/rank,
GET /v1/items/{id}/similar and DELETE /v1/items/{id}."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from services.api import errors
from services.api.deps import RuntimeDep, SessionDep
from services.recommend import interactions
from services.recommend.filters import item_filters
from services.recommend.interactions import InteractionIn
from services.recommend.scoring import Scored
from services.timestamps import Timestamp
from services.vectors.base import Filters

router = APIRouter(prefix="/v1", tags=["recommendations"])


class InteractionsIn(BaseModel):
    """A batch of interactions (1 to SIFT_MAX_INTERACTIONS_PER_REQUEST)."""

    model_config = ConfigDict(extra="forbid")

    interactions: list[InteractionIn] = Field(min_length=1)


class InteractionsOut(BaseModel):
    """The ids of the interactions, in request order; new counts those not stored before."""

    ids: list[str]
    new: int


class FeedItem(BaseModel):
    """An item for the user, with its score and why it is there."""

    item_id: str
    score: float
    reason: str
    kind: str
    title: str | None = None


class ItemsOut(BaseModel):
    """Items, best first."""

    items: list[FeedItem]


class RankIn(BaseModel):
    """Candidates to order for the user."""

    model_config = ConfigDict(extra="forbid")

    item_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=1000)


class SimilarItem(BaseModel):
    """An item like the asked one, by cosine similarity."""

    item_id: str
    score: float
    reason: str


class SimilarOut(BaseModel):
    """Similar items, most similar first."""

    items: list[SimilarItem]


class FilterParams(BaseModel):
    """Business filters of a feed or a similar-items list; every given one must hold."""

    category: list[str] = Field(default_factory=list, description="any of these categories")
    language: list[str] = Field(default_factory=list, description="any of these languages")
    in_stock: bool | None = None
    min_price: float | None = None
    max_price: float | None = None
    published_after: Timestamp | None = None
    published_before: Timestamp | None = None
    meta: list[str] = Field(default_factory=list, description="key:value on keys declared in SIFT_ITEM_FILTER_FIELDS")

    def build(self, declared: Mapping[str, str]) -> Filters:
        """The vector-store filter."""
        return item_filters(**self.model_dump(), declared=declared)


@router.post("/interactions", response_model=InteractionsOut)
def post_interactions(
    body: InteractionsIn | InteractionIn, session: SessionDep, runtime: RuntimeDep
) -> InteractionsOut:
    """Store one interaction or a batch; an unknown item refuses the whole request."""
    batch = body.interactions if isinstance(body, InteractionsIn) else [body]
    s = runtime.settings
    recorded = interactions.record(
        session,
        interactions=batch,
        now=datetime.now(UTC),
        pair_window=s.recommend_pair_window,
        max_per_request=s.max_interactions_per_request,
    )
    return InteractionsOut(ids=recorded.ids, new=recorded.new)


def _items(scored: list[Scored]) -> ItemsOut:
    return ItemsOut(
        items=[
            FeedItem(
                item_id=s.candidate.item_id,
                score=round(s.score, 6),
                reason=s.reason,
                kind=s.candidate.kind,
                title=_str_or_none(s.candidate.payload.get("title")),
            )
            for s in scored
        ]
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


@router.get("/users/{user_id}/feed", response_model=ItemsOut)
def get_feed(
    user_id: str,
    runtime: RuntimeDep,
    filters: Annotated[FilterParams, Query()],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    kind: Annotated[str | None, Query(description="product or news (default: the kind of the latest)")] = None,
) -> ItemsOut:
    """The user's feed: unseen items under the filters, with a score and a reason."""
    built = filters.build(runtime.settings.item_filter_fields)
    return _items(runtime.recommender.feed(user_id=user_id, limit=limit, kind=kind, filters=built))


@router.post("/users/{user_id}/rank", response_model=ItemsOut)
def post_rank(user_id: str, body: RankIn, runtime: RuntimeDep) -> ItemsOut:
    """The given items scored and ordered for the user, with the feed's model."""
    return _items(runtime.recommender.rank(user_id=user_id, item_ids=body.item_ids))


@router.get("/items/{item_id}/similar", response_model=SimilarOut, responses=errors.responses(409))
def get_similar(
    item_id: str,
    runtime: RuntimeDep,
    filters: Annotated[FilterParams, Query()],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SimilarOut:
    """Items most like this one, under the filters."""
    built = filters.build(runtime.settings.item_filter_fields)
    found = runtime.recommender.similar(item_id=item_id, limit=limit, filters=built)
    return SimilarOut(items=[SimilarItem(item_id=s.item_id, score=s.score, reason=s.reason) for s in found])


@router.delete("/items/{item_id}", status_code=204)
def delete_item(item_id: str, runtime: RuntimeDep) -> Response:
    """Remove an item from the catalogue and from every feed."""
    runtime.recommender.delete_item(item_id=item_id)
    return Response(status_code=204)
