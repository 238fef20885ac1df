"""Refuse text that no store keeps intact, anywhere in a request, before any handler runs: a NUL
character (PostgreSQL text and jsonb cannot hold one) and a lone UTF-16 surrogate such as the JSON
escape \\ud800 (not Unicode: it cannot be encoded as UTF-8, so SQLite, PostgreSQL, Qdrant and the
tokenizer all fail on it). One check here instead of one per field: path and query parameters,
and every string (keys too) of a JSON body. The answer is a 422 naming the field.

A body is only decoded a second time when its bytes hold something that could be such a character
(a \\u0000 or \\uD800-\\uDFFF escape, a raw surrogate), so ordinary requests pay one fast scan
(about 1 ms per 400 kB of escaped JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from services.errors import InvalidInput

_ESCAPED = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")  # starts with a literal: a fast scan
_RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")  # UTF-8-like bytes of U+D800..U+DFFF, which json.loads lets through


async def refuse_unstorable_text(request: Request) -> None:
    """An app-wide dependency: InvalidInput (422) for a NUL or a lone surrogate anywhere in the request."""
    for name, value in request.path_params.items():
        _check(f"path.{name}", str(value))
    for name, value in request.query_params.multi_items():
        _check(f"query.{name}", value)
    body = await request.body()
    if not _ESCAPED.search(body) and not (b"\xed" in body and _RAW_SURROGATE.search(body)):
        return
    try:
        document = json.loads(body)
    except ValueError:  # not JSON: the route's own body parsing answers that
        return
    for where, text in _strings(document, ""):
        _check(where or "body", text)


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            # the name goes into the answer, which is UTF-8: a bad character in it is spelled as an escape
            name = key.encode("utf-8", "backslashreplace").decode("utf-8")
            inner = f"{where}.{name}" if where else name
            yield f"{inner} (the key)", key
            yield from _strings(item, inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}.{index}" if where else str(index))


def _check(where: str, text: str) -> None:
    if "\x00" in text:
        problem = "contains a NUL character (\\u0000), which cannot be stored; remove it"
    else:
        try:
            text.encode("utf-8")
            return
        except UnicodeEncodeError as exc:
            bad = text[exc.start]
            problem = (
                f"contains a lone UTF-16 surrogate (\\u{ord(bad):04x} without its pair), which is not "
                "valid Unicode; send the character itself or both halves of its surrogate pair"
            )
    raise InvalidInput(f"{where}: {problem}", details=[{"field": where, "problem": problem}])
