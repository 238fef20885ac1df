"""The whole API fuzzed from its own OpenAPI schema (schemathesis), in-process, on the embedded
defaults (SQLite file, on-disk broker, embedded Qdrant, the packaged model): no answer is a 5xx,
and every answer is documented (its status code, content type, headers and body schema); every
operation but the probes refuses the same request without a key.

Examples per operation: SIFT_FUZZ_EXAMPLES (small by default, so `make test` stays quick;
`make fuzz` runs many more). SIFT_FUZZ_SEED replays a run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import checks
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks as openapi_checks

from services.api.app import create_app
from services.api.rate_limit import EXEMPT
from services.embedding.encoder import Encoder
from services.runtime import Runtime
from tests.conftest import api_key, open_runtime, settings_for

EXAMPLES = int(os.environ.get("SIFT_FUZZ_EXAMPLES", "10"))
SEED = os.environ.get("SIFT_FUZZ_SEED")

CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,  # input that breaks the schema is refused (4xx)
]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Iterator[Runtime]:
    with open_runtime(settings_for(tmp_path_factory.mktemp("sift-fuzz")), encoder, process_wide=False) as rt:
        rt.store  # noqa: B018 - opened before the first request, as the warm-up thread does in `sift up`
        yield rt


@pytest.fixture(scope="module")
def auth(runtime: Runtime) -> dict[str, str]:
    """An admin key of the default tenant: the fuzzer reaches every operation's code, not just the 401."""
    return {"Authorization": f"Bearer {api_key(runtime)}"}


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> Iterator[FastAPI]:
    yield create_app(runtime, warm_model=False)
    asgi.shutdown_lifespans()  # the app's lifespan (its event writer) ends before the runtime closes


def _openapi() -> dict[str, Any]:
    # The schema is needed at collection time, before any fixture; making an app opens nothing.
    with tempfile.TemporaryDirectory() as unused:
        return create_app(Runtime(settings_for(Path(unused))), warm_model=False).openapi()


def _with_array_query(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if any(p["in"] == "query" and p["schema"].get("type") == "array" for p in operation.get("parameters", []))
    }


DOCUMENT = _openapi()
# Not negative_data_rejection on these: on the wire `language=3&min_price=0.0` is both valid (one-element
# arrays, a number) and what schemathesis 4 sends for the invalid language=3 (integer) and
# min_price=[0.0] (array) together; it flags the 200 as accepting invalid data, which it is not.
# Every other check still runs on them, on positive and negative examples.
ARRAY_QUERY = _with_array_query(DOCUMENT)
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(max_examples=EXAMPLES)
if SEED:
    schema.config.seed = int(SEED)


def _negates_the_key(case: Any) -> bool:
    """A negative case one of whose mutations is the Authorization header: the test sends the key
    anyway, so what reaches the API can be valid, with undeclared query parameters at most (which
    schemathesis forgives only when they are the one mutation). Every other check still runs on it."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    for mutation in getattr(data, "mutations", None) or ():
        named = f"{mutation.parameter} {mutation.original_value} {mutation.new_value}".lower()
        if str(mutation.parameter_location.value).lower() == "header" and "authorization" in named:
            return True
    return False


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=SEED is None,  # `make test`: the same examples every run; a seed varies them
    database=None,  # no .hypothesis folder in the checkout: a failure prints its curl line and the seed replays it
)
def test_the_api_answers_every_generated_request_as_documented(case: Any, app: FastAPI, auth: dict[str, str]) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    negates_key = _negates_the_key(case)
    excluded = [openapi_checks.negative_data_rejection] if operation in ARRAY_QUERY or negates_key else []
    response = case.call_and_validate(app=app, headers=auth, checks=[c for c in CHECKS if c not in excluded])
    if case.operation.path not in EXEMPT and response.status_code != 405:  # 405: a method no route has
        # The same request without a key is refused before any work (schemathesis's own
        # ignored_auth check cannot send through the ASGI transport).
        bare = case.call(app=app, headers={"Authorization": ""})
        assert bare.status_code == 401 and bare.json()["error"]["code"] == "unauthorized", bare.text
