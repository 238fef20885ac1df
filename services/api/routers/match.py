"""POST /v1/match: the best FAQ answers for a text, with a calibrated confidence, or abstain;
POST /v1/match:calibrate fits the confidence on held-out labeled tickets."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.api import errors
from services.api.deps import RuntimeDep
from services.matching import calibration as match_calibration

router = APIRouter(prefix="/v1", tags=["faq"])


class MatchFilters(BaseModel):
    """Only entries with one of these tags, and/or in this locale."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(default_factory=list, max_length=50)
    locale: str | None = Field(None, min_length=1, max_length=35)


class MatchIn(BaseModel):
    """A ticket's text and what to return."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=100_000)
    top_k: int | None = Field(None, ge=1, le=50, description="answers to return (default SIFT_MATCH_TOP_K)")
    filters: MatchFilters | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be empty or blank")
        if "\x00" in value:
            raise ValueError("text must not contain a NUL character")
        return value


class MatchOut(BaseModel):
    """One ranked answer."""

    faq_id: str
    question: str
    answer: str
    score: float = Field(description="the fused score the ranking uses (0 to 1; see docs/matching.md)")
    similarity: float = Field(description="cosine similarity of the entry's closest paraphrase")


class MatchResponse(BaseModel):
    """Ranked answers; confidence that the first is right; abstain when no answer is good enough."""

    matches: list[MatchOut]
    confidence: float
    abstain: bool
    calibrated: bool = Field(description="false until a calibration exists for the served models")


class CalibrationOut(BaseModel):
    """A stored calibration."""

    id: int
    encoder_version: str
    intent_version: str | None
    threshold: float
    target: float
    metrics: dict[str, float | int | str]


@router.post("/match", response_model=MatchResponse)
def post_match(body: MatchIn, runtime: RuntimeDep) -> MatchResponse:
    """Match one text against the FAQ base."""
    top_k = body.top_k or runtime.settings.match_top_k
    filters = body.filters.model_dump() if body.filters else None
    result = runtime.matcher.match_texts([body.text], top_k=top_k, filters=filters)[0]
    return MatchResponse(
        matches=[MatchOut(**vars(a)) for a in result.matches],
        confidence=result.confidence,
        abstain=result.abstain,
        calibrated=result.calibrated,
    )


@router.post("/match:calibrate", response_model=CalibrationOut, responses=errors.responses(422))
def post_calibrate(runtime: RuntimeDep) -> CalibrationOut:
    """Fit the confidence and the abstain threshold for the served models (seconds)."""
    row = match_calibration.calibrate(runtime.matcher)
    return CalibrationOut(
        id=row.id,
        encoder_version=row.encoder_version,
        intent_version=row.intent_version,
        threshold=row.threshold,
        target=row.target,
        metrics=row.metrics,
    )
