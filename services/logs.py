"""One logging set-up for every Sift process, and the context that ties its lines together.

With `SIFT_LOG_FORMAT=json` (the production default) each line is one JSON object: `ts`, `level`,
`logger`, `message`, then the context bound where it was written (`request_id` in the API,
`task_id` and `task` in a worker, `batch_id` in an ingest batch) and the line's own fields
(`event_ids`, `collection`, ...). `text` (the development default) prints the same fields after the
message. To follow one event, search for its id: the API's "accepted" line, the "published" line
(the Celery task id of its message), the worker's "claimed", "upserted" and "recorded" lines (with
that task id and the batch id).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

from services.config import Settings

_context: ContextVar[Mapping[str, Any] | None] = ContextVar("sift_log_context", default=None)
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# Libraries that log every HTTP call at INFO (the Qdrant client, webhook deliveries).
_CHATTY = ("httpx", "httpx2", "httpcore")
# Libraries whose INFO lines say nothing a person acts on (each migration step, broker chatter, ONNX
# export and quantization steps): hidden below WARNING unless a person asks (--verbose, SIFT_LOG_LEVEL).
_LIBRARIES = (
    "alembic",
    "kombu",
    "celery",
    "amqp",
    "onnx",
    "onnxruntime",
    "root.onnx",
    "sentence_transformers",
    "transformers",
    "torch",
    "optimum",
    "urllib3",
    "filelock",
    "huggingface_hub",
)


def bind(**fields: Any) -> Token[Mapping[str, Any] | None]:
    """Add fields to every line logged from here in this thread or task; undo with unbind(token)."""
    return _context.set({**(_context.get() or {}), **fields})


def unbind(token: Token[Mapping[str, Any] | None]) -> None:
    """Drop what the bind() that returned token added."""
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add fields to every line logged inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def new_id() -> str:
    """A short random id (a request or a batch), for following log lines, not a secret: from
    Python's PRNG, since uuid4's os.urandom call was 8 % of the API's CPU per small request."""
    return f"{random.getrandbits(64):016x}"


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context bound when record was written, then the record's own extra fields."""
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    return {**(_context.get() or {}), **extra}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line for people, with the context and fields after the message (long id lists cut)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={_short(v)}" for k, v in fields(record).items())
        return f"{super().formatMessage(record)} [{extra}]" if extra else super().formatMessage(record)


def _short(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) > 5:
        return f"{','.join(map(str, value[:5]))},…(+{len(value) - 5})"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time: a progress bar that redirects stderr prints
    the line above itself instead of being broken mid-line."""

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def setup(settings: Settings, *, stream: IO[str] | None = None, libraries: bool = True) -> logging.Handler:
    """Send every logger's lines to stderr (or stream) as SIFT_LOG_FORMAT says, at SIFT_LOG_LEVEL;
    libraries=False keeps third-party lines below WARNING (and their Python warnings) out.
    Calling it again replaces the handler it installed before. Returns the handler."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "sift", False)]:
        root.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter(JsonFormatter() if settings.log_json else TextFormatter())
    handler.sift = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # warnings.warn() becomes a line too (logger "py.warnings")
    if root.level > logging.DEBUG:
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
    if not libraries:
        for name in _LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("kombu").setLevel(logging.ERROR)  # "No hostname was supplied" for the on-disk broker
        # kombu and celery warn about the on-disk broker's defaults on every start: nothing to act on
        warnings.filterwarnings("ignore", module=r"(kombu|celery|onnxruntime|torch)(\.|$)")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # their own handlers would bypass ours
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    return handler
