"""`sift match` and `sift feed`: questions answered by the running API (the process that owns the
vector store and the model)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.output import exit_codes
from services.config import get_settings


def match(
    text: str,
    top_k: Annotated[int | None, typer.Option(min=1, max=50, help="answers to show")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="only entries with this tag; repeat for any of several")] = None,
    locale: Annotated[str | None, typer.Option(help="only entries in this locale")] = None,
) -> None:
    """The best FAQ answers for a text, with confidence, or an honest abstain."""
    from services.cli import api_client

    body: dict[str, Any] = {"text": text, "top_k": top_k, "filters": {"tags": tag or [], "locale": locale}}
    result = exit_codes(lambda: api_client.call(get_settings().api_base_url, "POST", "/v1/match", json=body))
    # score ranks the entries against each other (docs/matching.md: relative to the candidates);
    # similarity is the query's cosine to the entry's closest paraphrase, the absolute evidence.
    table = Table("#", "faq", "score", "similarity", "question", "answer")
    for rank, item in enumerate(result["matches"], start=1):
        score, similarity = f"{item['score']:.3f}", f"{item['similarity']:.3f}"
        table.add_row(str(rank), item["faq_id"], score, similarity, item["question"], item["answer"][:80])
    Console().print(table)
    verdict = "[yellow]abstain: route to a human[/yellow]" if result["abstain"] else "[green]answer[/green]"
    calibrated = "" if result["calibrated"] else " (not calibrated yet: `sift faq calibrate`)"
    Console().print(f"confidence {result['confidence']:.3f}{calibrated}: {verdict}")


def feed(
    user: Annotated[str, typer.Argument(help="the user id")],
    limit: Annotated[int, typer.Option(min=1, max=100, help="items to show")] = 10,
    kind: Annotated[str | None, typer.Option(help="product or news (default: the kind of the user's latest)")] = None,
    category: Annotated[list[str] | None, typer.Option(help="only this category; repeat for any of several")] = None,
    in_stock: Annotated[bool | None, typer.Option("--in-stock/--any-stock", help="only items in stock")] = None,
    max_price: Annotated[float | None, typer.Option(help="only items at most this price")] = None,
    meta: Annotated[list[str] | None, typer.Option(help="key:value on a declared filterable metadata key")] = None,
) -> None:
    """A user's feed: items they have not seen, with a score and the reason for each."""
    from urllib.parse import quote, urlencode

    from services.cli import api_client

    params: dict[str, Any] = {"limit": limit, "kind": kind, "category": category or [], "meta": meta or []}
    params.update(in_stock=None if in_stock is None else str(in_stock).lower(), max_price=max_price)
    query = urlencode({k: v for k, v in params.items() if v not in (None, [])}, doseq=True)
    path = f"/v1/users/{quote(user, safe='')}/feed?{query}"
    result = exit_codes(lambda: api_client.call(get_settings().api_base_url, "GET", path))
    table = Table("#", "item", "score", "title", "why")
    for rank, item in enumerate(result["items"], start=1):
        table.add_row(str(rank), item["item_id"], f"{item['score']:.3f}", item.get("title") or "", item["reason"])
    Console().print(table)
