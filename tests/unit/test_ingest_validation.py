from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from services.errors import InvalidInput
from services.events import accept as ingest

LIMITS = ingest.Limits(max_events=1000, max_text_chars=100)


def event(**fields: object) -> ingest.EventIn:
    return ingest.EventIn.model_validate({"kind": "ticket", "text": "my card is lost", **fields})


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"text": "   "}, "must not be empty"),
        ({"text": ""}, "must not be empty"),
        ({"kind": "tweet"}, "kind"),
        ({"colour": "red"}, "colour"),
        ({"id": " padded "}, "printable"),
        ({"id": "x" * 200}, "id"),
    ],
)
def test_event_shape_errors_say_what_to_fix(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        event(**fields)


def test_too_many_events_is_refused_with_the_limit() -> None:
    with pytest.raises(InvalidInput, match="at most 1000") as info:
        ingest.check_limits(events=[event()] * 1001, limits=LIMITS)
    assert info.value.details == {"max_events": 1000, "received": 1001}


def test_text_over_the_limit_and_nul_are_named_by_index() -> None:
    events = [event(), event(text="a" * 101), event(text="bad\x00byte")]
    with pytest.raises(InvalidInput) as info:
        ingest.check_limits(events=events, limits=LIMITS)
    assert [(p["index"], p["field"]) for p in info.value.details] == [(1, "text"), (2, "text")]


def test_no_events_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at least one"):
        ingest.check_limits(events=[], limits=LIMITS)


def test_point_ids_are_derived_from_the_tenant_and_the_exact_id_never_parsed() -> None:
    given = uuid.uuid4()
    spellings = [str(given), given.hex, str(given).upper(), f"{{{given}}}", given.urn, given.hex.upper()]
    points = {ingest.point_id_for(s, tenant="default") for s in spellings}
    assert len(points) == len(spellings) and str(given) not in points
    assert ingest.point_id_for("ticket-42", tenant="default") == ingest.point_id_for("ticket-42", tenant="default")
    assert ingest.point_id_for("ticket-42", tenant="default") != ingest.point_id_for("ticket-43", tenant="default")
    assert ingest.point_id_for("ticket-42", tenant="default") != ingest.point_id_for("ticket-42", tenant="acme")
    uuid.UUID(ingest.point_id_for("ticket-42", tenant="default"))


@pytest.mark.parametrize("bad", ["a/b", "/", "a\\b", ".", "..", " x", "tab\tid"])
def test_ids_that_cannot_round_trip_as_a_url_path_segment_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ingest.EventIn(id=bad, kind="ticket", text="hello")  # type: ignore[call-arg]
    assert "no / or \\" in str(refused.value)


def test_content_hash_changes_with_content_only() -> None:
    a = ingest.to_new_event(event(id="e1"))
    b = ingest.to_new_event(event(id="e1"))
    c = ingest.to_new_event(event(id="e1", text="my card is found"))
    assert a.content_hash == b.content_hash != c.content_hash


def test_naive_timestamps_are_taken_as_utc() -> None:
    new = ingest.to_new_event(event(occurred_at="2026-01-02T03:04:05"))
    assert new.occurred_at is not None and new.occurred_at.utcoffset() is not None
