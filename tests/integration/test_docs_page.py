"""/docs renders its operations in a real headless browser with every request to another host
refused: its JavaScript and CSS come from the installed package, not a CDN."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from services.api.app import create_app
from services.db.migrate import upgrade
from services.runtime import Runtime
from tests.browser import page
from tests.conftest import settings_for
from tests.integration.test_embedded_up import free_port


@pytest.fixture
def base_url(data_dir: Path) -> Iterator[str]:
    settings = settings_for(data_dir)
    upgrade(settings.sqlalchemy_url)
    runtime = Runtime(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime, warm_model=False), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runtime.close()


def test_docs_render_the_operations_offline(base_url: str) -> None:
    outside: list[str] = []
    with page() as tab:

        def only_local(route: object) -> None:
            url = route.request.url  # type: ignore[attr-defined]
            if url.startswith(base_url):
                route.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(url)
                route.abort()  # type: ignore[attr-defined]

        tab.route("**/*", only_local)
        tab.goto(f"{base_url}/docs")
        tab.wait_for_selector(".opblock", state="attached", timeout=30_000)
        paths = tab.locator(".opblock-summary-path").all_inner_texts()
        title = tab.locator(".info .title").first.inner_text()
    assert outside == []
    assert "Sift" in title
    assert any(p.startswith("/v1/events") for p in paths) and "/v1/match" in [p.strip() for p in paths], paths
    assert len(paths) >= 30
