"""Hostile input on every resource that stores text (events, labels, FAQs, watchlist, webhooks,
interactions), on SQLite and PostgreSQL: odd but valid Unicode (zero-width, RTL marks, combining
marks, astral characters, control characters) is stored intact and reads back the same; what no
store can keep (NUL, a lone surrogate such as the JSON escape \\ud800, bytes that are not UTF-8)
and what is too big or empty is refused with a 4xx JSON error; never a 5xx, never half a batch.
Also: webhook URLs that reach loopback, private or link-local addresses in disguise, and redirects."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.alerts import targets, webhooks
from services.api.app import create_app
from services.db.models import Alert, Event, WebhookDelivery
from services.embedding.encoder import Encoder
from services.errors import InvalidInput
from services.runtime import Runtime
from tests.conftest import authorize, open_runtime, settings_for

ODD = {
    "zero-width": "a\u200bb\u200cc\u200dd\u2060e\ufeffz",
    "rtl": "x\u200f\u0645\u0631\u062d\u0628\u0627\u202e abc \u202c\u2067\u05e9\u05dc\u05d5\u05dd\u2069y",
    "combining": "e\u0301 n\u0303 Z\u0351\u0352\u0353 \u1100\u1161\u11a8",
    "astral": "\U0001f600 \U0001d518\U0001d52b \U0010fffd",
    "controls": "tab\there\r\nbell\x07 esc\x1b del\x7f",
}
SECRET = "a-webhook-secret-of-some-length"
TABLES = ("events", "labels", "faqs", "watchlist", "webhooks", "interactions")


# What a database could get wrong (storing, reading back, an id in a query) runs on both; what is
# refused before any database sees it runs on SQLite only.
BOTH = pytest.mark.parametrize("runtime", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def runtime(request: pytest.FixtureRequest, data_dir: Path, encoder: Encoder) -> Iterator[Runtime]:
    backend = getattr(request, "param", "sqlite")
    url = None if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    with open_runtime(
        settings_for(data_dir, database_url=url, webhook_allow_private=True, max_body_bytes=200_000),
        encoder,
        process_wide=False,
    ) as rt:
        yield rt


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, warm_model=False), raise_server_exceptions=False) as c:
        authorize(c, runtime)
        yield c


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.db.session_scope() as s:
        return {t: int(s.scalar(sa.text(f"SELECT count(*) FROM {t}")) or 0) for t in TABLES}


def stored_event(runtime: Runtime, event_id: str) -> Event:
    with runtime.db.session_scope() as s:
        row = s.get(Event, event_id)
        assert row is not None
        s.expunge(row)
        return row


def send_raw(client: TestClient, method: str, url: str, body: bytes | str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return client.request(method, url, content=content, headers={"content-type": "application/json"})


def assert_refused(response: httpx.Response, *says: str) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    for text in says:
        assert text in error["message"], error
    return error


@BOTH
def test_odd_unicode_round_trips_through_every_resource(client: TestClient, runtime: Runtime) -> None:
    for name, odd in ODD.items():
        _round_trip(client, runtime, name, odd)


def _round_trip(client: TestClient, runtime: Runtime, name: str, odd: str) -> None:
    event_id = f"ev-\u00e9\U0001f600-{name}"  # printable non-ASCII ids work in paths too
    event = {"id": event_id, "kind": "news", "text": odd, "title": odd, "metadata": {odd: odd}, "entities": [odd]}
    assert client.post("/v1/events", json={"events": [event]}).status_code == 202
    assert client.get(f"/v1/events/{event_id}").json()["id"] == event_id
    row = stored_event(runtime, event_id)
    assert (row.text, row.title, row.meta, row.entities) == (odd, odd, {odd: odd}, [odd])

    labeled = client.post("/v1/labels", json={"labels": [{"text": odd, "task": "sentiment", "label": "positive"}]})
    assert labeled.status_code == 201, labeled.text
    assert stored_event(runtime, labeled.json()["new_event_ids"][0]).text == odd

    faq = {"question": odd, "answer": odd, "paraphrases": [odd, f"{odd}?"], "tags": [odd.strip()[:60]]}
    put = client.put(f"/v1/faqs/faq-{name}-\u00fc", json=faq)
    assert put.status_code == 200, put.text
    got = client.get(f"/v1/faqs/faq-{name}-\u00fc").json()
    assert {k: got[k] for k in faq} == faq

    watch = {"name": odd, "aliases": [odd]}
    assert client.put("/v1/watchlist/ACME", json=watch).status_code == 200
    assert {k: client.get("/v1/watchlist/ACME").json()[k] for k in watch} == watch

    url = f"http://127.0.0.1:9/hook/{odd.strip()}?q={odd.strip()}"
    hook = client.put("/v1/webhooks/ops", json={"url": url, "secret": SECRET})
    if hook.status_code == 200:  # a URL is either kept as sent, or refused as not a URL
        assert client.get("/v1/webhooks/ops").json()["url"] == url
    else:
        assert_refused(hook, "URL")

    product = {"id": f"item-{name}-\u00e9", "kind": "product", "text": "a red lamp"}
    assert client.post("/v1/events", json={"events": [product]}).status_code == 202
    user = f"user-{name}-{odd}"
    seen = client.post("/v1/interactions", json={"user_id": user, "item_id": product["id"], "type": "view"})
    assert seen.status_code == 200, seen.text
    assert client.get(f"/v1/users/{quote(user, safe='')}/feed").status_code == 200


# (method, path, raw JSON with a placeholder X for the hostile string escape)
WRITES = [
    (
        "POST",
        "/v1/events",
        '{"events": [{"id": "good", "kind": "news", "text": "fine"}, {"kind": "news", "text": "X"}]}',
    ),
    ("POST", "/v1/events", '{"events": [{"kind": "ticket", "text": "t", "metadata": {"X": 1}}]}'),
    ("POST", "/v1/events", '{"events": [{"kind": "news", "text": "t", "entities": ["X"]}]}'),
    (
        "POST",
        "/v1/labels",
        '{"labels": [{"text": "ok", "task": "sentiment", "label": "positive"}, '
        '{"text": "X", "task": "sentiment", "label": "positive"}]}',
    ),
    ("PUT", "/v1/faqs/f1", '{"question": "q", "answer": "a", "paraphrases": ["X"]}'),
    (
        "POST",
        "/v1/faqs:bulk",
        '{"faqs": [{"id": "f2", "question": "q", "answer": "a"}, {"id": "f3", "question": "X", "answer": "a"}]}',
    ),
    ("PUT", "/v1/watchlist/ACME", '{"name": "Acme", "aliases": ["X"]}'),
    ("PUT", "/v1/webhooks/ops", '{"url": "http://127.0.0.1:9/X", "secret": "' + SECRET + '"}'),
    ("POST", "/v1/interactions", '{"user_id": "X", "item_id": "i", "type": "view"}'),
    ("POST", "/v1/match", '{"text": "X"}'),
]
HOSTILE = {
    "lone high surrogate": ("a\\ud800b", "lone UTF-16 surrogate"),
    "lone low surrogate": ("\\udfff", "lone UTF-16 surrogate"),
    "reversed pair": ("\\ude00\\ud83d", "lone UTF-16 surrogate"),
    "NUL": ("a\\u0000b", "NUL character"),
}


@BOTH
@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(WRITES)])
def test_nul_and_lone_surrogates_are_refused_and_nothing_is_written(
    client: TestClient, runtime: Runtime, method: str, path: str, body: str
) -> None:
    before = counts(runtime)
    for escape, says in HOSTILE.values():
        response = send_raw(client, method, path, body.replace("X", escape))
        error = assert_refused(response, says)
        assert response.status_code == 422 and error["details"][0]["field"]
    assert counts(runtime) == before


def test_a_valid_surrogate_pair_is_one_character(client: TestClient, runtime: Runtime) -> None:
    body = '{"events": [{"id": "pair", "kind": "news", "text": "smile \\ud83d\\ude00"}]}'
    assert send_raw(client, "POST", "/v1/events", body).status_code == 202
    assert stored_event(runtime, "pair").text == "smile \U0001f600"


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": [{"kind": "news", "text": "\xff\xfe bad bytes"}]}',  # not UTF-8
        b'{"events": [{"kind": "news", "text": "\xed\xa0\x80"}]}',  # a surrogate encoded as if it were UTF-8
        b'{"events": [{"kind": "news", "text": "raw \x00 NUL"}]}',  # a raw control character in a JSON string
        b"",
        b"null",
        b"[]",
        b'{"events": [{"kind": "news", "text": "x", "metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001 + b"]}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["not utf-8", "raw surrogate", "raw NUL", "empty", "null", "array", "deep metadata", "deep array"],
)
def test_bodies_that_are_not_text_or_not_json_are_a_4xx(client: TestClient, runtime: Runtime, body: bytes) -> None:
    assert_refused(send_raw(client, "POST", "/v1/events", body))
    assert counts(runtime)["events"] == 0


PARAMETERS = [
    ("GET", "/v1/events/a%00b"),
    ("GET", "/v1/faqs/a%00b"),
    ("DELETE", "/v1/watchlist/a%00b"),
    ("GET", "/v1/webhooks/a%00b"),
    ("GET", "/v1/users/a%00b/feed"),
    ("GET", "/v1/items/a%00b/similar"),
    ("GET", "/v1/alerts?entity=a%00b"),
    ("GET", "/v1/models?task=a%00b"),
    ("GET", "/v1/faqs?tag=a%00b"),
    ("GET", "/v1/training/runs/a%00b"),
]


@BOTH
def test_nul_in_a_path_or_query_parameter_is_a_422(client: TestClient) -> None:
    for method, path in PARAMETERS:
        response = client.request(method, path)
        assert response.status_code == 422 and "NUL character" in assert_refused(response)["message"], path


@pytest.mark.parametrize(
    ("method", "path", "body", "says"),
    [
        ("POST", "/v1/events", {"events": [{"kind": "news", "text": ""}]}, "events.0.text"),
        ("POST", "/v1/events", {"events": [{"kind": "news", "text": "\u200b \u00a0\n"}]}, "must not be empty"),
        ("POST", "/v1/events", {"events": [{"kind": "news", "text": "y" * 150_000}]}, "longer than 20000"),
        ("POST", "/v1/labels", {"labels": [{"text": "", "task": "sentiment", "label": "positive"}]}, "labels.0"),
        ("POST", "/v1/labels", {"labels": [{"text": "t", "task": "sentiment", "label": ""}]}, "labels.0.label"),
        ("PUT", "/v1/faqs/f", {"question": "", "answer": "a"}, "question"),
        ("PUT", "/v1/faqs/f", {"question": "q", "answer": "a", "paraphrases": [" "]}, "paraphrase"),
        ("PUT", "/v1/faqs/f", {"question": "q", "answer": "a" * 30_000}, "longer than 20000"),
        ("PUT", "/v1/watchlist/ACME", {"name": ""}, "name"),
        ("PUT", "/v1/watchlist/ACME", {"name": "n" * 201}, "name"),
        ("PUT", "/v1/webhooks/ops", {"url": "", "secret": SECRET}, "url"),
        ("PUT", "/v1/webhooks/ops", {"url": "http://127.0.0.1/" + "p" * 2000, "secret": SECRET}, "url"),
        ("POST", "/v1/interactions", {"user_id": "", "item_id": "i", "type": "view"}, "user_id"),
        ("POST", "/v1/interactions", {"user_id": "u" * 129, "item_id": "i", "type": "view"}, "user_id"),
        ("POST", "/v1/match", {"text": ""}, "text"),
    ],
)
def test_empty_and_huge_fields_are_refused(
    client: TestClient, runtime: Runtime, method: str, path: str, body: dict[str, Any], says: str
) -> None:
    before = counts(runtime)
    assert says in json.dumps(assert_refused(client.request(method, path, json=body)))
    assert counts(runtime) == before


def test_zero_width_and_rtl_ids_are_refused_not_stored_as_lookalikes(client: TestClient, runtime: Runtime) -> None:
    for event_id in ("card\u200b", "card\u202e", "card\u200f"):
        response = client.post("/v1/events", json={"events": [{"id": event_id, "kind": "news", "text": "t"}]})
        assert_refused(response, "events.0.id")
    assert client.put("/v1/watchlist/AC\u200bME", json={"name": "Acme"}).status_code == 422
    assert client.put("/v1/faqs/f\u202e", json={"question": "q", "answer": "a"}).status_code == 422
    assert counts(runtime)["events"] == 0


# --- webhook URLs: loopback, private and link-local addresses in disguise -----------------------------------------

DISGUISED = [
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one decimal number
    ("http://0x7f000001/", "loopback"),  # ... in hex
    ("http://017700000001/", "loopback"),  # ... in octal
    ("http://0x7f.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127\u30020\u30020\u30021/", "loopback"),  # ideographic full stops, normalised by IDNA
    ("http://LOCALHOST:8080/", "loopback"),
    ("http://[::1]:8080/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),  # IPv4-mapped
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://[::ffff:169.254.169.254]/", "link-local"),  # the cloud metadata address, mapped
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00::1]/", "private"),
    ("http://[::ffff:a00:1]/", "private"),
    ("http://0/", "unspecified"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
]


@pytest.mark.parametrize(("url", "kind"), DISGUISED, ids=[u for u, _ in DISGUISED])
def test_disguised_non_public_webhook_urls_are_refused(url: str, kind: str) -> None:
    with pytest.raises(InvalidInput, match="refused") as caught:
        targets.check_url(url, allow_private=False)
    assert caught.value.details["problem"] == kind


@pytest.mark.parametrize("url", ["http://0177.0.0.1/", "http://127.0.0.1:80@/", "http://\u2460\u2461\u2466.0.0.1/"])
def test_urls_that_are_not_valid_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        targets.check_url(url, allow_private=False)


def test_the_api_refuses_a_disguised_loopback_url(runtime: Runtime) -> None:
    runtime.settings.webhook_allow_private = False
    with TestClient(create_app(runtime, warm_model=False)) as client:
        authorize(client, runtime)
        for url, kind in DISGUISED[:3]:
            response = client.put("/v1/webhooks/ops", json={"url": url, "secret": SECRET})
            assert_refused(response, f"({kind} address)", "SIFT_WEBHOOK_ALLOW_PRIVATE")
    assert counts(runtime)["webhooks"] == 0


class Redirector:
    """A real HTTP server on 127.0.0.1 that answers POST with 307 to `target` (or 200 when it has none)."""

    def __init__(self, target: str | None = None) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.hits += 1
                self.send_response(307 if target else 200)
                if target:
                    self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_redirect_is_never_followed(runtime: Runtime) -> None:
    inner = Redirector()  # stands for an internal service the redirect points at
    outer = Redirector(target=inner.url)
    now = datetime.now(UTC)
    try:
        with runtime.db.session_scope() as session:
            body = webhooks.WebhookIn(url=outer.url, secret=SECRET)
            webhooks.put_webhook(session, webhook_id="ops", body=body, allow_private=True, now=now)
            alert = Alert(
                entity="ACME",
                rule="negative_share",
                severity="high",
                state="open",
                window_start=now - timedelta(hours=1),
                window_end=now,
                figures={},
                event_ids=[],
                created_at=now,
                updated_at=now,
            )
            session.add(alert)
            session.flush()
            (delivery_id,) = webhooks.queue_deliveries(session, alert=alert, event_type="alert.raised", now=now)
        with httpx.Client(follow_redirects=True) as http:  # even a client that would follow is not let to
            status = webhooks.deliver(
                runtime.db.session_scope, delivery_id=delivery_id, settings=runtime.settings, client=http, now=now
            )
        assert status == "pending" and (outer.hits, inner.hits) == (1, 0)
        with runtime.db.session_scope() as session:
            row = session.get(WebhookDelivery, delivery_id)
            assert row is not None and row.last_status == 307 and row.delivered_at is None
    finally:
        outer.close()
        inner.close()
