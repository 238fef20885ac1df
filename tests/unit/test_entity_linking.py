"""Entity linking rules: tickers, names and one-word aliases, true and false positives."""

from __future__ import annotations

import pytest

from services.alerts.watchlist import compile_watchlist, link
from services.db.models import WatchedEntity

MATCHERS = compile_watchlist(
    [
        WatchedEntity(entity="AAPL", ticker="AAPL", name="Apple", aliases=["Apple Inc"]),
        WatchedEntity(entity="NOK", ticker="NOK", name="Nokia", aliases=["Nokia Oyj"]),
        WatchedEntity(entity="GE", ticker="GE", name="General Electric", aliases=[]),
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Apple shares fell 3% after weak iPhone sales", [("AAPL", "alias")]),
        ("Apple Inc opens a store in Oulu", [("AAPL", "name")]),
        ("Buy $AAPL before the close", [("AAPL", "ticker")]),
        ("AAPL down 2 in early trade", [("AAPL", "ticker")]),
        ("general electric cuts 2,000 jobs", [("GE", "name")]),
        ("NYSE: GE slides", [("GE", "ticker")]),
        ("Nokia and Apple sign a patent deal worth EUR 2 billion", [("AAPL", "alias"), ("NOK", "alias")]),
        # false positives the rules avoid
        ("Apple pie: peel the apples, then bake", []),
        ("apple shares are a lovely snack", []),  # the one-word name is written with its capital
        ("aapl is not a ticker in lower case", []),
        ("GE is too short to trust without $ or parentheses", []),
        ("I love my old Nokia phone", []),
        ("Pineapple sales rose", []),
    ],
)
def test_links(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(x["entity"], x["method"]) for x in link(MATCHERS, text=text, title=None, producer=[])] == expected


def test_producer_entities_are_trusted_and_skip_the_text() -> None:
    found = link(MATCHERS, text="Apple shares fell", title=None, producer=["nok", "unknown"])
    assert found == [{"entity": "NOK", "method": "producer"}]


def test_the_title_counts() -> None:
    assert link(MATCHERS, text="Shares fell 4%.", title="Nokia", producer=[]) == [{"entity": "NOK", "method": "alias"}]
