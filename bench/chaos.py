"""A chaos run: ingest for N minutes while a fault lands every 30 to 60 s, then check every promise.

    python bench/chaos.py [--minutes 10] [--gap 30 60] [--seed 0] [--json out.json]

The deployment is tests/integration/test_faults.py's: a PostgreSQL and a Redis of the run's own
(tests/private_servers.py, never the machine's shared servers), the API in this process (uvicorn,
ingest only), a `sift worker --own-store --pool=prefork --concurrency=1` and a `sift beat` in
child processes, webhooks on to a local receiver. The vector store is the embedded one (Qdrant
Edge), owned by the worker: separate processes would need a Qdrant server, which this machine
cannot run, so the API never opens the store and the worker is its one process (docs/operations.md,
"One owner"). A producer sends events with their own ids (a third of them bad news about two
watched companies) and re-sends a refused request (503, no connection) until it is accepted.

Faults, one at a time in random order: SIGKILL of the worker's pool child (the worker forks a new
one), SIGKILL of the whole worker (a new one is started), a Redis restart without persistence
(every message lost), a PostgreSQL restart (immediate stop), the vector store down for 6 s
(SIFT_VECTOR_FAULT_FILE). Recovery of a fault: from its end until every event accepted before its
end is `done`; its bound is SIFT_SWEEP_AFTER_S + SIFT_SWEEP_INTERVAL_S (4 s here) plus 60 s for a
replacement worker to start and catch up (docs/guarantees.md).

At the end: every accepted event is done, one row each and no other row, one point each and no
other point; each watched company raised one alert per rule and each delivery reached the
receiver under its idempotency key; no answer other than 202 or a 503. Prints faults injected,
events accepted, lost, duplicated, 5xx, and recovery per fault; --json writes them too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select

from services.db.models import Alert, Event, WebhookDelivery
from services.errors import Transient
from services.events.accept import point_id_for
from services.vectors import open_store
from services.vectors.schema import collection_for

# The documented bound (docs/guarantees.md, "Under each fault"): a dead process's claims are taken
# over once SIFT_SWEEP_AFTER_S old (by the next batch, or the sweep every SIFT_SWEEP_INTERVAL_S when
# the queue is idle), plus what a killed worker's replacement needs to start (process, libraries,
# model) and work through what is ahead of those events.
SWEEP_BOUND_S = 3 + 1  # the run's SIFT_SWEEP_AFTER_S + SIFT_SWEEP_INTERVAL_S
START_BOUND_S = 60  # a replacement worker's start and catch-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--gap", type=float, nargs=2, default=(30.0, 60.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--seed", type=int, default=1, help="of the fault order and gaps (1: 12 faults, every kind)")
    parser.add_argument(
        "--pace",
        type=float,
        default=1.5,
        help="seconds between requests of 10 events (keep it under the worker's rate)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("chaos needs redis-server and the PostgreSQL server binaries on this machine")
    from tests.integration.test_faults import Receiver, Stack
    from tests.private_servers import PrivatePostgres, PrivateRedis

    with tempfile.TemporaryDirectory(prefix="sift-chaos-") as tmp:
        postgres, receiver = PrivatePostgres(), Receiver()
        redis = PrivateRedis(Path(tmp))
        (Path(tmp) / "data").mkdir()
        stack = Stack(Path(tmp) / "data", postgres, redis, receiver)
        try:
            report = Chaos(stack, random.Random(args.seed), pace_s=args.pace).run(args.minutes * 60, tuple(args.gap))
        finally:
            stack.close()
            redis.close()
            receiver.close()
            postgres.close()
    report["minutes"], report["pace_s"] = args.minutes, args.pace
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


class Chaos:
    """Faults on a Stack while a producer streams events in."""

    def __init__(self, stack: Any, rng: random.Random, *, pace_s: float) -> None:
        self.stack, self.rng, self.pace_s = stack, rng, pace_s
        self.faults: list[dict[str, Any]] = []
        self.monitors: list[threading.Thread] = []

    def run(self, seconds: float, gap: tuple[float, float]) -> dict[str, Any]:
        from tests.integration.test_faults import PER_REQUEST, Producer

        stack = self.stack
        stack.setup_alerting()
        stack.spawn("beat", "beat")
        self.worker = stack.start_worker()
        warm_up = Producer(stack.api, stack.key, 0, PER_REQUEST)
        warm_up.run()  # the first batch loads the model
        stack.wait(lambda: stack.done() == PER_REQUEST, 300, "the warm-up events")
        producer = Streaming(stack.api, stack.key, PER_REQUEST, pace_s=self.pace_s)
        producer.start()
        started = self.started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(min(self.rng.uniform(*gap), max(0.0, seconds - (time.monotonic() - started))))
            if time.monotonic() - started >= seconds:
                break
            self.inject(self.rng.choice(list(FAULTS)), producer)
        producer.stop.set()
        producer.join(timeout=180)
        accepted = warm_up.accepted + producer.accepted
        return self.check(accepted, producer, warm_up)

    def inject(self, name: str, producer: Any) -> None:
        began = time.monotonic()
        self.worker = FAULTS[name](self.stack, self.worker) or self.worker
        ended = time.monotonic()
        fault = {
            "fault": name,
            "at_s": round(began - self.started, 1),
            "lasted_s": round(ended - began, 1),
            "recovery_s": None,
            # landed while an earlier fault was still recovering (the bound is for one fault at a time)
            "during_recovery": any(f["recovery_s"] is None for f in self.faults),
        }
        self.faults.append(fault)
        before = list(producer.accepted)
        monitor = threading.Thread(target=self._recovery, args=(fault, before, ended), daemon=True)
        monitor.start()
        self.monitors.append(monitor)
        print(f"{time.strftime('%H:%M:%S')} {name} ({len(before)} accepted so far)", flush=True)

    def _recovery(self, fault: dict[str, Any], ids: list[str], ended: float) -> None:
        deadline = ended + 900
        while time.monotonic() < deadline:
            try:
                with self.stack.db.session_scope() as s:
                    waiting = s.scalar(
                        select(func.count()).select_from(Event).where(Event.id.in_(ids), Event.status != "done")
                    )
                if waiting == 0:
                    fault["recovery_s"] = round(time.monotonic() - ended, 1)
                    return
            except Transient:
                pass
            time.sleep(1)

    def check(self, accepted: list[str], producer: Any, warm_up: Any) -> dict[str, Any]:
        from tests.integration.test_faults import ENTITIES, TENANT, linked, pending

        stack = self.stack
        stack.wait(lambda: stack.all_done(len(set(accepted))), 900, "every accepted event done")
        news = [e for e in accepted if int(e.split("-")[1]) % 3 == 0]
        stack.wait(lambda: linked(stack) == len(news) and not pending(stack), 300, "links recorded, webhooks sent")
        for monitor in self.monitors:
            monitor.join(timeout=60)
        time.sleep(2 * stack.settings.alert_sweep_interval_s)  # a duplicate delivery would come now
        for proc in stack.procs:
            stack.stop(proc)  # the worker releases the embedded store
        with stack.db.session_scope() as s:
            rows = Counter(s.scalars(select(Event.id)))
            alerts = Counter((a.entity, a.rule) for a in s.scalars(select(Alert)))
            keys = {d.idempotency_key: d.status for d in s.scalars(select(WebhookDelivery))}
        points = count_points(stack, accepted, news, TENANT)
        unique = set(accepted)
        report = {
            "minutes": None,
            "faults": self.faults,
            "faults_by_kind": dict(Counter(f["fault"] for f in self.faults)),
            "accepted": len(unique),
            "lost": len(unique - set(rows)),
            "extra_rows": len(set(rows) - unique),
            "duplicated_points": points["extra"],
            "missing_points": points["missing"],
            "alerts": {f"{e}/{r}": n for (e, r), n in sorted(alerts.items())},
            "deliveries": len(keys),
            "deliveries_not_delivered": sum(v != "delivered" for v in keys.values()),
            "deliveries_not_received": len(set(keys) - set(stack.receiver.keys)),
            "deliveries_received_twice": sum(n > 1 for n in stack.receiver.keys.values()),
            "refused_and_resent": dict(producer.refused + warm_up.refused),
            "unexpected_answers": producer.unexpected + warm_up.unexpected,
            "recovery_bound_s": SWEEP_BOUND_S + START_BOUND_S,
        }
        recoveries = [f["recovery_s"] for f in self.faults]
        report["recovery_max_s"] = max((r for r in recoveries if r is not None), default=None)
        report["recovery_median_s"] = statistics.median([r for r in recoveries if r is not None] or [0])
        report["ok"] = (
            report["lost"] == report["extra_rows"] == report["duplicated_points"] == report["missing_points"] == 0
            and set(e for e, _ in alerts) == set(ENTITIES)
            and max(alerts.values(), default=0) == 1
            and report["deliveries_not_delivered"] == report["deliveries_not_received"] == 0
            and not report["unexpected_answers"]
            and None not in recoveries
            and all(r <= report["recovery_bound_s"] for r in recoveries if r is not None)
        )
        return report


def count_points(stack: Any, accepted: list[str], news: list[str], tenant: str) -> dict[str, int]:
    """Points beyond one per accepted event (extra), and accepted events without their point (missing)."""
    store = open_store(qdrant_url=None, qdrant_api_key=None, vectors_dir=stack.settings.vectors_dir)
    extra = missing = 0
    try:
        news_set = set(news)
        for kind, ids in (("news", news), ("ticket", [e for e in accepted if e not in news_set])):
            collection = collection_for(kind, prefix=stack.tenant.settings.tenant_prefix)
            points = {point_id_for(i, tenant=tenant) for i in ids}
            found = {hit.id for hit in store.retrieve(collection, sorted(points))}
            missing += len(points - found)
            extra += store.count(collection) - len(found)
    finally:
        store.close()
    return {"extra": extra, "missing": missing}


class Streaming(threading.Thread):
    """The test's producer, sending until stopped instead of a fixed number of events."""

    def __init__(self, base_url: str, key: str, first: int, *, pace_s: float) -> None:
        from tests.integration.test_faults import Producer

        super().__init__(name="producer", daemon=True)
        self.inner = Producer(base_url, key, first, first)
        self.first, self.pace_s = first, pace_s
        self.stop = threading.Event()

    @property
    def accepted(self) -> list[str]:
        return self.inner.accepted

    @property
    def refused(self) -> Counter[str]:
        return self.inner.refused

    @property
    def unexpected(self) -> list[str]:
        return self.inner.unexpected

    def run(self) -> None:
        import httpx

        from tests.integration.test_faults import PER_REQUEST, event

        with httpx.Client(base_url=self.inner.base_url, timeout=30, headers=self.inner.headers) as client:
            start = self.first
            while not self.stop.is_set():
                self.inner.send(client, [event(i) for i in range(start, start + PER_REQUEST)])
                start += PER_REQUEST
                time.sleep(self.pace_s)


def kill_child(stack: Any, worker: Any) -> None:
    deadline = time.monotonic() + 30  # mid-batch when one comes within 30 s, else whenever
    while stack.statuses().get("processing", 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(stack.pool_child(worker), signal.SIGKILL)


def kill_worker(stack: Any, worker: Any) -> Any:
    stack.stop(worker, signal.SIGKILL)
    return stack.start_worker()


def vectors_down(stack: Any, worker: Any) -> None:
    stack.fault_file.touch()
    try:
        time.sleep(6)
    finally:
        stack.fault_file.unlink()


FAULTS: dict[str, Callable[[Any, Any], Any]] = {
    "sigkill-pool-child": kill_child,
    "sigkill-worker": kill_worker,
    "redis-restart": lambda stack, worker: stack.redis.restart(down_s=2),
    "postgres-restart": lambda stack, worker: stack.postgres.restart(down_s=3),
    "vectors-down": vectors_down,
}


def print_report(report: dict[str, Any]) -> None:
    print("\nfault                 lasted s  recovery s")
    for fault in report["faults"]:
        during = "  (during an earlier fault's recovery)" if fault["during_recovery"] else ""
        print(f"{fault['fault']:<22}{fault['lasted_s']:>8}  {fault['recovery_s']}{during}")
    keys = ("accepted", "lost", "extra_rows", "duplicated_points", "missing_points", "deliveries",
            "deliveries_not_received", "deliveries_received_twice", "refused_and_resent", "unexpected_answers",
            "recovery_median_s", "recovery_max_s", "recovery_bound_s", "alerts", "faults_by_kind", "ok")  # fmt: skip
    for key in keys:
        print(f"{key}: {report[key]}")


if __name__ == "__main__":
    main()
