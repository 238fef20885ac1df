from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from services.config import DEFAULT_TENANT
from services.enqueue import CoalescingEnqueuer
from services.errors import BrokerUnavailable


class RecordingSender:
    """Stands in for the broker at the process edge: records what would be published."""

    def __init__(self, batch_size: int, fail_first: int = 0) -> None:
        self.batch_size = batch_size
        self.batches: list[list[str]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.tenants: list[str] = []

    def send(self, ids: Sequence[str], *, tenant: str = DEFAULT_TENANT) -> None:
        with self.lock:
            self.tenants.append(tenant)
            if self.fail_first:
                self.fail_first -= 1
                raise BrokerUnavailable("down")
            for start in range(0, len(ids), self.batch_size):
                self.batches.append(list(ids[start : start + self.batch_size]))


def test_single_ids_are_published_in_batches_each_once() -> None:
    sender = RecordingSender(batch_size=50)
    enqueuer = CoalescingEnqueuer(sender, wait_ms=200)  # type: ignore[arg-type]
    ids = [f"e{i}" for i in range(500)]
    for one in ids:
        enqueuer.submit([one])
    enqueuer.close()
    published = [i for batch in sender.batches for i in batch]
    assert sorted(published) == sorted(ids)
    assert len(sender.batches) <= 20  # 500 single submits, far fewer messages
    assert max(len(b) for b in sender.batches) <= 50


def test_a_lone_id_is_published_after_the_wait() -> None:
    sender = RecordingSender(batch_size=100)
    enqueuer = CoalescingEnqueuer(sender, wait_ms=30)  # type: ignore[arg-type]
    enqueuer.submit(["only"])
    deadline = time.monotonic() + 2
    while not sender.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender.batches == [["only"]]
    enqueuer.close()


def test_a_broker_outage_does_not_kill_the_publisher() -> None:
    sender = RecordingSender(batch_size=10, fail_first=1)
    enqueuer = CoalescingEnqueuer(sender, wait_ms=10)  # type: ignore[arg-type]
    enqueuer.submit(["lost-for-now"])
    time.sleep(0.1)
    enqueuer.submit(["next"])
    enqueuer.close()
    assert sender.batches == [["next"]]  # the first waits for the sweep, the thread lives on


def test_each_message_holds_one_tenant_s_ids() -> None:
    sender = RecordingSender(batch_size=100)
    enqueuer = CoalescingEnqueuer(sender, wait_ms=200)  # type: ignore[arg-type]
    for i in range(10):
        enqueuer.submit([f"a{i}"], tenant="acme")
        enqueuer.submit([f"d{i}"])
    enqueuer.close()
    sent = list(zip(sender.tenants, sender.batches, strict=True))
    assert sorted(t for t, _ in sent) == ["acme", DEFAULT_TENANT]  # gathered together, published apart
    assert {t: sorted(b) for t, b in sent} == {
        "acme": sorted(f"a{i}" for i in range(10)),
        DEFAULT_TENANT: sorted(f"d{i}" for i in range(10)),
    }
