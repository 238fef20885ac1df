"""Suggestions that follow the FAQ base: tickets sent before their FAQ entries exist get the right
suggestion once the entries are imported, without being sent again. In one run, on a real `sift up`:

    python bench/stale_suggestions.py ../shared/data/banking77/train.csv [--tickets 200] [--intents 5]

Banking77 rows, sorted by text within each intent: --intents intents (the first in name order with
enough rows) become FAQ entries (question = the first text, paraphrases = the next --paraphrases);
the next --tickets / --intents texts of each intent are tickets. The tickets are sent and processed
while the base is empty; then the entries are imported (POST /v1/faqs:bulk) and every ticket is read
(GET /v1/events/{id}) every 2 s for up to --timeout s. Printed: the share of tickets whose first
stored suggestion is their intent over time, the seconds until it reached 80 %, and the reference
measured in the same run: the share POST /v1/match gets right for the same texts (the ceiling).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--tickets", type=int, default=200)
    parser.add_argument("--intents", type=int, default=5)
    parser.add_argument("--paraphrases", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    faqs, tickets = split(args.csv, intents=args.intents, paraphrases=args.paraphrases, tickets=args.tickets)
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as (http, key):
        http.headers["Authorization"] = f"Bearer {key}"
        events = [{"id": f"t{i}", "kind": "ticket", "text": text} for i, (text, _) in enumerate(tickets)]
        assert http.post("/v1/events", json={"events": events}).status_code == 202
        wait_done(http, [e["id"] for e in events])
        started = time.monotonic()
        assert http.post("/v1/faqs:bulk", json={"faqs": faqs}).status_code == 200
        timeline, reached = follow(http, tickets, started=started, timeout_s=args.timeout)
        ceiling = sum(
            (http.post("/v1/match", json={"text": text}).json()["matches"] or [{}])[0].get("faq_id") == intent
            for text, intent in tickets
        ) / len(tickets)
    result = {"tickets": len(tickets), "faqs": len(faqs), "seconds_to_80pct": reached, "final": timeline[-1][1]}
    result |= {"reference_match_top1": round(ceiling, 4), "timeline": timeline}
    print(json.dumps(result))


def split(path: Path, *, intents: int, paraphrases: int, tickets: int) -> tuple[list[dict[str, Any]], list[Any]]:
    by_intent: dict[str, list[str]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            by_intent[row["category"]].append(row["text"].strip())
    per = tickets // intents
    chosen = [i for i in sorted(by_intent) if len(set(by_intent[i])) >= 1 + paraphrases + per][:intents]
    faqs, out = [], []
    for intent in chosen:
        texts = sorted(set(by_intent[intent]))
        faqs.append(
            {
                "id": intent,
                "question": texts[0],
                "answer": f"About {intent}.",
                "paraphrases": texts[1 : 1 + paraphrases],
            }
        )
        out += [(text, intent) for text in texts[1 + paraphrases : 1 + paraphrases + per]]
    return faqs, out


class served:
    """A `sift up` on a fresh data dir and a free port; (client, key)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __enter__(self) -> tuple[httpx.Client, str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_") or k == "SIFT_ONNX_DIR"}
        env.update(SIFT_DATA_DIR=str(self.data_dir / "sift"), SIFT_PORT=str(port))
        self.log = (self.data_dir / "up.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.app", "up"], cwd=ROOT, env=env, stdout=self.log, stderr=self.log
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if self.http.get("/readyz").status_code == 200:
                    return self.http, (self.data_dir / "sift" / "api-key").read_text().strip()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit("sift up was not ready in 300 s")

    def __exit__(self, *_: object) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.log.close()


def wait_done(http: httpx.Client, ids: list[str]) -> None:
    while any(http.get(f"/v1/events/{i}").json()["status"] != "done" for i in ids):
        time.sleep(1)


def follow(http: httpx.Client, tickets: list[Any], *, started: float, timeout_s: float) -> tuple[list[Any], Any]:
    timeline: list[tuple[float, float]] = []
    reached = None
    while True:
        right = 0
        for i, (_, intent) in enumerate(tickets):
            suggestions = http.get(f"/v1/events/t{i}").json()["suggestions"]
            right += bool(suggestions) and suggestions[0]["faq_id"] == intent
        elapsed = round(time.monotonic() - started, 1)
        timeline.append((elapsed, round(right / len(tickets), 4)))
        print(f"{elapsed:6.1f} s: {right / len(tickets):.1%} right", file=sys.stderr)
        if reached is None and right >= 0.8 * len(tickets):
            reached = elapsed
        if elapsed > timeout_s or (len(timeline) > 1 and timeline[-1][1] == timeline[-2][1] and reached is not None):
            return timeline, reached
        time.sleep(2)


if __name__ == "__main__":
    main()
