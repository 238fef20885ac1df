"""The log set-up: one JSON object per line with the bound context and the line's own fields;
text lines for people with the same fields; binding ends with its block."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services import logs
from services.config import Settings


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    logger = logging.getLogger()
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_json_lines_carry_the_context_and_the_fields(root: logging.Logger) -> None:
    out = io.StringIO()
    logs.setup(Settings(log_format="json", log_level="INFO"), stream=out)
    log = logging.getLogger("sift.test")
    with logs.bound(task_id="t-1", batch_id="b-1"):
        log.info("claimed %d events", 2, extra={"event_ids": ["a", "b"]})
        with logs.bound(batch_id="b-2"):
            log.warning("inner")
    log.info("outside")
    log.debug("below the level")
    first, inner, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "claimed 2 events" and first["level"] == "INFO" and first["logger"] == "sift.test"
    assert (first["task_id"], first["batch_id"], first["event_ids"]) == ("t-1", "b-1", ["a", "b"])
    assert first["ts"].endswith("+00:00")
    assert (inner["task_id"], inner["batch_id"]) == ("t-1", "b-2")
    assert set(outside) == {"ts", "level", "logger", "message"}


def test_exceptions_stay_on_one_line(root: logging.Logger) -> None:
    out = io.StringIO()
    logs.setup(Settings(log_format="json"), stream=out)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("sift.test").exception("failed")
    (line,) = out.getvalue().splitlines()
    assert "ValueError: bad" in json.loads(line)["exc"]


def test_text_in_development_json_in_production(root: logging.Logger) -> None:
    assert not Settings(env="development").log_json and Settings(env="production").log_json
    assert Settings(env="production", log_format="text").log_json is False
    out = io.StringIO()
    logs.setup(Settings(log_format="text"), stream=out)
    logs.setup(Settings(log_format="text"), stream=out)  # set up twice: still one handler
    with logs.bound(request_id="r-1"):
        logging.getLogger("sift.test").warning("accepted", extra={"event_ids": [f"e{i}" for i in range(8)]})
    (line,) = out.getvalue().splitlines()
    assert line.endswith("WARNING sift.test accepted [request_id=r-1 event_ids=e0,e1,e2,e3,e4,…(+3)]")
