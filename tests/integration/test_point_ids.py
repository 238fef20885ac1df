"""Every event id is its own point: spellings of one UUID stay apart, an id that cannot round-trip in
a URL path is refused, and points written under the old ids move to the new ones after the upgrade."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from services.api.app import create_app
from services.db.migrate import upgrade
from services.db.models import Event
from services.embedding.encoder import Encoder
from services.runtime import Runtime, reset_runtime
from services.vectors.base import VectorPoint
from tests.conftest import authorize, open_runtime, settings_for
from tests.recording import run_batch

GIVEN = uuid.UUID("abcdef12-3456-7890-abcd-ef1234567890")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPELLINGS = [GIVEN.hex, str(GIVEN), f"{{{GIVEN}}}", GIVEN.urn, str(GIVEN).upper(), GIVEN.hex.upper()]


@pytest.fixture
def runtime(data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(data_dir), encoder) as rt:
        yield rt


def test_spellings_of_one_uuid_are_distinct_rows_and_distinct_points(runtime: Runtime) -> None:
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        events = [{"id": s, "kind": "ticket", "text": f"my card {n} is lost"} for n, s in enumerate(SPELLINGS)]
        assert client.post("/v1/events", json={"events": events}).status_code == 202
        assert run_batch(SPELLINGS) == {"done": len(SPELLINGS), "failed": 0}
        for spelling in SPELLINGS:
            read = client.get(f"/v1/events/{spelling}")
            assert read.status_code == 200 and read.json()["id"] == spelling
    store = runtime.store
    assert store.count("sift_ticket") == len(SPELLINGS)
    with runtime.db.session_scope() as s:
        points = dict(s.execute(select(Event.id, Event.point_id)).all())
    assert len(set(points.values())) == len(SPELLINGS)
    for spelling, point in points.items():
        assert store.retrieve("sift_ticket", [point])[0].payload["event_id"] == spelling


@pytest.mark.parametrize("bad", ["a/b", "..", "a\\b"])
def test_an_id_that_cannot_be_a_url_path_segment_is_refused_with_the_rule(runtime: Runtime, bad: str) -> None:
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        refused = client.post("/v1/events", json={"events": [{"id": bad, "kind": "ticket", "text": "hi"}]})
    assert refused.status_code == 422
    assert "no / or \\" in refused.json()["error"]["message"]
    with runtime.db.session_scope() as s:
        assert s.scalar(select(Event.id)) is None


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_points_under_the_old_ids_move_to_the_new_ones_and_shared_ones_are_processed_again(
    data_dir: Path, encoder: Encoder, database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    settings = settings_for(data_dir, database_url=url)
    upgrade(settings.sqlalchemy_url, "0006")
    rt = reset_runtime(settings)
    rt._made["encoder"] = encoder
    try:
        ids = ["plain-1", str(GIVEN), GIVEN.hex]  # the last two shared one point under the old scheme
        with rt.db.session_scope() as s:
            for n, event_id in enumerate(ids):
                s.execute(
                    Event.__table__.insert().values(  # type: ignore[attr-defined]
                        id=event_id,
                        point_id=old_point_id(event_id),
                        kind="ticket",
                        text=f"text {n}",
                        metadata={},
                        entities=[],
                        content_hash=str(n),
                        received_at=NOW,
                        enqueued_at=NOW,
                        status="done",
                        attempts=1,
                        predictions={},
                    )
                )
        old_store_points(data_dir, encoder, ids)
        upgrade(settings.sqlalchemy_url)
        store = rt.store  # opening the tenant's store moves the points
        with rt.db.session_scope() as s:
            rows = {e.id: (e.point_id, e.moved_from_point, e.status) for e in s.scalars(select(Event))}
        assert all(moved is None for _, moved, _ in rows.values())
        assert rows["plain-1"][2] == "done" and {rows[i][2] for i in ids[1:]} == {"queued"}
        moved = store.retrieve("sift_ticket", [rows["plain-1"][0]], with_vectors=True)
        assert moved[0].payload["event_id"] == "plain-1" and moved[0].vector is not None
        assert store.count("sift_ticket") == 1  # the old points are gone; the shared one is re-made by processing
        with rt.db.session_scope() as s:
            s.execute(update(Event).values(enqueued_at=NOW))
        assert run_batch(ids[1:]) == {"done": 2, "failed": 0}
        assert store.count("sift_ticket") == 3
    finally:
        rt.close()
        reset_runtime()


def old_point_id(event_id: str) -> str:
    """The point id before migration 0007: the id parsed as a UUID, else a uuid5 of it."""
    try:
        return str(uuid.UUID(event_id))
    except ValueError:
        return str(uuid.uuid5(uuid.UUID("6f1c1a52-5b1e-4d4e-9a43-6a8f3f0b2f11"), event_id))


def old_store_points(data_dir: Path, encoder: Encoder, ids: list[str]) -> None:
    """The store as the old code left it: one point per old id, the last written event's payload."""
    from services.vectors import open_store
    from services.vectors.schema import ensure_collections

    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=data_dir / "qdrant")
    try:
        ensure_collections(store, prefix="sift_", dimension=encoder.dimension)
        vectors = encoder.encode([f"text {n}" for n in range(len(ids))])
        points = [
            VectorPoint(old_point_id(i), vectors[n].tolist(), {"event_id": i, "kind": "ticket"})
            for n, i in enumerate(ids)
        ]
        store.upsert("sift_ticket", points)
        assert store.count("sift_ticket") == 2
    finally:
        store.close()
