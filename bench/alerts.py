"""Sentiment alerts: do the default rules catch negative news bursts, fast, without crying wolf?

    python bench/alerts.py ../shared/data/fpb/train.csv [--entities 20] [--hours 48] [--seed 0] [--frozen]

Financial PhraseBank is split with Sift's own split (services.training.dataset.split, holdout 0.5). The
first part trains the sentiment classifier as a training run does (services.training.tuning.fine_tuned:
fine-tuned encoder + head; --frozen: a head on the base model's embeddings, in seconds); only the
other part's texts are replayed, so the classifier never saw them (its accuracy on them
is printed). A synthetic stream is built in simulated time: N companies ("Company 07", entity
"C07"), each with calm background news at a Poisson rate (--rate per hour, texts drawn at random
with their natural sentiment mix) for --hours; the first half of the entities also get --bursts
negative bursts each, after the first 24 hours (the baseline): 8 to 12 gold-negative texts within
30 minutes. The other half is the calm stream. Links are producer-supplied, so linking errors play
no part.

The stream is replayed in time order into a real in-process Sift (SQLite): each simulated minute's
news is written as processed news events, then, as the worker does, services.alerts.rules.record_links
and services.alerts.rules.evaluate for the touched entities, with the simulated clock as `now` (so the
cooldown runs in simulated time). Default alert settings. Twice on the same stream:
  classifier  sentiment = the head's prediction (services.classify.head.prediction);
  gold (ref)  sentiment = the gold label with one-hot probabilities, which isolates classifier
              errors from the rules' behaviour.
Per rule and for any rule: bursts detected (an alert of the rule raised for the entity between the
burst's first article and 60 minutes after its last), delay from the burst's first article and
from its 8th (minutes, and burst articles seen: median/max), bursts detected within 10 minutes of
their 8th article (bar: all), and false alerts (raised outside every burst window; on calm
entities, on burst entities, overall) per entity-day (bar: < 0.05). Missed bursts and false alerts
are listed with the rules' figures. Ends with one JSON line with every figure and the wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["HF_HUB_OFFLINE"] = "1"

from services.alerts import rules as alerts  # noqa: E402
from services.alerts import watchlist  # noqa: E402
from services.classify.head import Head  # noqa: E402
from services.config import DEFAULT_TENANT, Settings  # noqa: E402
from services.db.migrate import upgrade  # noqa: E402
from services.db.models import Alert, Event, as_utc  # noqa: E402
from services.embedding.encoder import Encoder, set_threads  # noqa: E402
from services.events import accept as ingest  # noqa: E402
from services.runtime import Runtime, reset_runtime  # noqa: E402
from services.training import (  # noqa: E402
    dataset,
    heads,
    tuning,
)

T0 = datetime(2026, 1, 5, tzinfo=UTC)
BASELINE_H = 24
BURST_SIZE = (8, 12)
BURST_SPAN = timedelta(minutes=30)
MIN_GAP_S = 6 * 3600  # between the starts of an entity's bursts, when --hours leaves room
AFTER_BURST = timedelta(minutes=60)
WITHIN = timedelta(minutes=10)
BAR_FALSE_PER_DAY = 0.05
RULES = (*alerts.SEVERITY, "any")
VERSION = "bench-frozen-head"
FIGURES = ("volume", "negatives", "share", "z", "drop", "mean", "baseline_mean", "baseline_median", "baseline_mad")


@dataclass(frozen=True)
class News:
    """One synthetic article: its entity, time, replay text index, and burst (or None)."""

    id: str
    entity: str
    when: datetime
    text: int
    burst: int | None


@dataclass(frozen=True)
class Burst:
    """A negative burst: its entity and article times (sorted)."""

    id: int
    entity: str
    times: list[datetime]

    @property
    def start(self) -> datetime:
        return self.times[0]

    @property
    def until(self) -> datetime:
        return self.times[-1] + AFTER_BURST


@dataclass(frozen=True)
class Raised:
    """An alert as it was raised: entity, rule, simulated time, figures."""

    entity: str
    rule: str
    at: datetime
    figures: dict[str, Any]


@dataclass
class Stream:
    """The whole replay: news in time order, bursts, and which entities are calm."""

    news: list[News]
    bursts: list[Burst]
    calm: list[str]
    burst_entities: list[str]
    hours: float
    per_entity: dict[str, int] = field(default_factory=dict)


def load(path: Path) -> list[dataset.Example]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [dataset.Example(r["text"], r["label"]) for r in csv.DictReader(handle) if r["text"].strip()]


def classifier(
    examples: list[dataset.Example], settings: Settings, *, frozen: bool
) -> tuple[list[dataset.Example], Head, np.ndarray, dict[str, Any]]:
    """Train on the first part as a training run does (fine-tuned encoder + head; --frozen: a head on
    the base model); the other part (the replay), its probabilities and the classifier's accuracy."""
    train, replay = dataset.split(examples, holdout=0.5)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if frozen:
            encoder = Encoder.load(settings.model_path, device="cpu", max_seq_length=settings.max_seq_length)
            head = heads.fit_head(encoder.encode([e.text for e in train]), [e.label for e in train])
        else:
            encoder, head, _ = tuning.fine_tuned(
                train, unlabeled=[], out_dir=Path(tmp), settings=settings, device="cpu", progress=lambda *_: None
            )
    vectors = encoder.encode([e.text for e in replay])
    gold = [e.label for e in replay]
    result: dict[str, Any] = heads.evaluate(head, vectors, gold)
    predicted = head.predict(vectors)
    hits = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p == "negative")
    result["negative_recall"] = round(hits / max(1, gold.count("negative")), 4)
    result["negative_precision"] = round(hits / max(1, predicted.count("negative")), 4)
    result.update(train=len(train), seconds=round(time.perf_counter() - started, 1))
    return replay, head, head.probs(vectors), result


def background(entity: str, hours: float, rate: float, texts: int, rng: np.random.Generator) -> list[News]:
    """Calm news for one entity: Poisson arrivals at `rate` per hour, texts drawn at random."""
    out, t = [], 0.0
    while True:
        t += float(rng.exponential(3600.0 / rate))
        if t >= hours * 3600:
            return out
        out.append(News("", entity, T0 + timedelta(seconds=round(t)), int(rng.integers(texts)), None))


def bursts_for(entity: str, first_id: int, args: argparse.Namespace, rng: np.random.Generator) -> list[Burst]:
    """args.bursts bursts after the baseline, one per equal slot (starts >= 6 h apart when the slots
    allow), each 8-12 articles within 30 minutes."""
    span = (args.hours - BASELINE_H) * 3600 - (BURST_SPAN + AFTER_BURST).total_seconds()
    width = span / args.bursts
    out = []
    for k in range(args.bursts):
        start = BASELINE_H * 3600 + k * width + float(rng.uniform(0, max(3600.0, width - MIN_GAP_S)))
        n = int(rng.integers(BURST_SIZE[0], BURST_SIZE[1] + 1))
        offsets = [0.0, *sorted(rng.uniform(0, BURST_SPAN.total_seconds() - 1, n - 1).tolist())]
        out.append(Burst(first_id + k, entity, [T0 + timedelta(seconds=round(start + o)) for o in offsets]))
    return out


def build(replay: list[dataset.Example], args: argparse.Namespace) -> Stream:
    """The stream: background for every entity, bursts for the first half, ids in time order."""
    rng = np.random.default_rng(args.seed)
    entities = [f"C{i:02d}" for i in range(args.entities)]
    burst_entities = entities[: args.entities // 2]
    negatives = [i for i, e in enumerate(replay) if e.label == "negative"]
    items: list[News] = []
    bursts: list[Burst] = []
    for entity in entities:
        items += background(entity, args.hours, args.rate, len(replay), rng)
        if entity in burst_entities:
            bursts += bursts_for(entity, len(bursts), args, rng)
    for burst in bursts:
        items += [
            News("", burst.entity, t, negatives[int(rng.integers(len(negatives)))], burst.id) for t in burst.times
        ]
    items.sort(key=lambda n: (n.when, n.entity, n.burst is not None))
    counts: dict[str, int] = defaultdict(int)
    news = []
    for item in items:
        counts[item.entity] += 1
        news.append(News(f"{item.entity}-{counts[item.entity]:05d}", item.entity, item.when, item.text, item.burst))
    calm = [e for e in entities if e not in burst_entities]
    return Stream(news, bursts, calm, burst_entities, args.hours, dict(counts))


def gold_sentiment(label: str) -> dict[str, Any]:
    probs = {k: 1.0 if k == label else 0.0 for k in ("negative", "neutral", "positive")}
    return {"label": label, "probs": probs, "model_version": "gold", "zero_shot": False}


def event_row(item: News, sentiment: dict[str, Any]) -> Event:
    return Event(
        id=item.id,
        point_id=ingest.point_id_for(item.id, tenant=DEFAULT_TENANT),
        kind="news",
        text=f"{item.entity} news {item.id}",
        entities=[item.entity],
        content_hash=item.id,
        occurred_at=item.when,
        received_at=item.when,
        enqueued_at=item.when,
        status="done",
        processed_at=item.when,
        model_version=sentiment["model_version"],
        predictions={"sentiment": sentiment, "entity_links": [{"entity": item.entity, "method": "producer"}]},
    )


def start_sift(workdir: Path, entities: list[str]) -> Runtime:
    settings = Settings(data_dir=workdir, log_level="WARNING")
    upgrade(settings.sqlalchemy_url)
    rt = reset_runtime(settings)
    with rt.db.session_scope() as s:
        for entity in entities:
            body = watchlist.WatchIn(name=f"Company {entity[1:]}", ticker=entity)
            watchlist.put(s, entity=entity, body=body, now=T0)
    return rt


def replay(rt: Runtime, stream: Stream, sentiments: list[dict[str, Any]]) -> list[Raised]:
    """Write each simulated minute's news, then record links and evaluate as the worker does."""
    minutes: dict[int, list[News]] = defaultdict(list)
    for item in stream.news:
        minutes[int((item.when - T0).total_seconds()) // 60].append(item)
    raised: list[Raised] = []
    for minute in sorted(minutes):
        now = T0 + timedelta(minutes=minute + 1)
        with rt.db.session_scope() as s:
            s.add_all([event_row(item, sentiments[item.text]) for item in minutes[minute]])
            s.flush()
            ids = [item.id for item in minutes[minute]]
            touched = alerts.record_links(s, event_ids=ids, settings=rt.settings, now=now)
            for entity in sorted(touched):
                for change in alerts.evaluate(s, entity=entity, settings=rt.settings, now=now):
                    alert = s.get(Alert, change.alert_id)
                    if change.event_type == "alert.raised" and alert is not None:
                        raised.append(Raised(alert.entity, alert.rule, now, dict(alert.figures)))
    return raised


def median_max(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(float(statistics.median(values)), 2), "max": round(float(max(values)), 2)}


def detection(burst: Burst, raised: list[Raised], rule: str) -> Raised | None:
    """The first alert of the rule (any rule: of any) raised for the burst's entity in its window."""
    hits = [
        r
        for r in raised
        if r.entity == burst.entity and (rule == "any" or r.rule == rule) and burst.start <= r.at <= burst.until
    ]
    return min(hits, key=lambda r: r.at) if hits else None


def is_false(alert: Raised, bursts: list[Burst]) -> bool:
    return not any(b.entity == alert.entity and b.start <= alert.at <= b.until for b in bursts)


def rule_figures(stream: Stream, raised: list[Raised], rule: str) -> dict[str, Any]:
    """Detections, delays, within-10-minutes and false alerts of one rule (or of any)."""
    delays: dict[str, list[float]] = defaultdict(list)
    within = 0
    for burst in stream.bursts:
        hit = detection(burst, raised, rule)
        if hit is None:
            continue
        seen = sum(1 for t in burst.times if t <= hit.at)
        delays["start_min"].append((hit.at - burst.start).total_seconds() / 60)
        delays["start_articles"].append(seen)
        delays["eighth_min"].append((hit.at - burst.times[7]).total_seconds() / 60)
        delays["eighth_articles"].append(seen - 8)
        within += hit.at <= burst.times[7] + WITHIN
    false = [r for r in raised if (rule == "any" or r.rule == rule) and is_false(r, stream.bursts)]
    calm_false = sum(1 for r in false if r.entity in stream.calm)
    warmup = sum(1 for r in false if r.at < T0 + timedelta(hours=BASELINE_H))
    days = entity_days(stream)
    return {
        "bursts": len(stream.bursts),
        "detected": len(delays["start_min"]),
        "within_10_min_of_8th": within,
        **{
            f"delay_{k}": median_max(delays[k])
            for k in ("start_min", "start_articles", "eighth_min", "eighth_articles")
        },
        "false_calm": calm_false,
        "false_burst_entities": len(false) - calm_false,
        "false_in_first_24h": warmup,
        "false_calm_per_entity_day": round(calm_false / days["calm"], 4) if days["calm"] else None,
        "false_burst_entities_per_entity_day": round((len(false) - calm_false) / days["burst"], 4)
        if days["burst"]
        else None,
        "false_per_entity_day": round(len(false) / (days["calm"] + days["burst"]), 4),
    }


def entity_days(stream: Stream) -> dict[str, float]:
    """Entity-days watched: calm entities whole; burst entities less their burst windows."""
    windows = sum((b.until - b.start).total_seconds() for b in stream.bursts) / 86400
    return {
        "calm": len(stream.calm) * stream.hours / 24,
        "burst": len(stream.burst_entities) * stream.hours / 24 - windows,
    }


def fmt(mm: dict[str, float | None]) -> str:
    return "-" if mm["median"] is None else f"{mm['median']:g}/{mm['max']:g}"


def print_table(name: str, figures: dict[str, dict[str, Any]]) -> None:
    for rule in RULES:
        f = figures[rule]
        rate = f["false_per_entity_day"]
        print(
            f"{name:<12}{rule:<16}{f['detected']:>4}/{f['bursts']:<4}{f['within_10_min_of_8th']:>6}"
            f"{fmt(f['delay_start_min']):>14}{fmt(f['delay_start_articles']):>10}{fmt(f['delay_eighth_min']):>14}"
            f"{fmt(f['delay_eighth_articles']):>10}{f['false_calm']:>8}{f['false_burst_entities']:>8}{f['false_in_first_24h']:>6}"
            f"{rate:>10.4f}{'  ok' if rate < BAR_FALSE_PER_DAY else '  OVER'}",
            flush=True,
        )


def short(figures: dict[str, Any]) -> str:
    return " ".join(f"{k}={figures[k]}" for k in FIGURES if k in figures and figures[k] is not None)


def hours_of(when: datetime) -> str:
    return f"{(when - T0).total_seconds() / 3600:.2f}h"


def peak(rt: Runtime, burst: Burst, rule: str) -> dict[str, Any]:
    """The rule's verdicts while a missed burst lasted: the strongest figures, whether it ever held,
    and the alerts of the rule for the entity that were open or closing then (cooldown)."""
    best: dict[str, Any] = {}
    held = False
    with rt.db.session_scope() as s:
        for t in [*burst.times, burst.times[-1] + BURST_SPAN]:
            for fired in alerts.judge(s, entity=burst.entity, as_of=t, settings=rt.settings):
                if fired.rule != rule:
                    continue
                held = held or fired.holds
                for key in ("volume", "negatives", "share", "z", "drop"):
                    if isinstance(fired.figures.get(key), int | float):
                        best[key] = max(best.get(key, fired.figures[key]), fired.figures[key])
        since = burst.start - timedelta(seconds=rt.settings.alert_cooldown_s)
        earlier = [
            f"#{a.id} {a.state} raised {hours_of(as_utc(a.created_at))}"
            + (f" closed {hours_of(as_utc(a.closed_at))}" if a.closed_at else "")
            for a in s.query(Alert).filter(Alert.entity == burst.entity, Alert.rule == rule)
            if as_utc(a.created_at) < burst.start and (a.closed_at is None or as_utc(a.closed_at) >= since)
        ]
    return {"held": held, "peak": best, "blocked_by": earlier}


def misses(rt: Runtime, stream: Stream, raised: list[Raised], name: str) -> list[dict[str, Any]]:
    """Print and return every (burst, rule) not detected within 10 minutes of the burst's 8th
    article (missed, or late), with the rule's peak figures over the burst."""
    out = []
    for burst in stream.bursts:
        for rule in alerts.SEVERITY:
            hit = detection(burst, raised, rule)
            if hit is not None and hit.at <= burst.times[7] + WITHIN:
                continue
            late = None if hit is None else round((hit.at - burst.times[7]).total_seconds() / 60, 2)
            info = {"run": name, "burst": burst.id, "entity": burst.entity, "rule": rule, **peak(rt, burst, rule)}
            info.update(start=hours_of(burst.start), articles=len(burst.times), min_after_8th=late)
            out.append(info)
            what = "missed" if hit is None else f"late (+{late} min after 8th)"
            print(
                f"  {what} {name} burst {burst.id} {burst.entity} at {info['start']} ({len(burst.times)} articles) "
                f"{rule}: held={info['held']} peak {short(info['peak'])} {'; '.join(info['blocked_by'])}",
                flush=True,
            )
    return out


def false_alerts(stream: Stream, raised: list[Raised], name: str, limit: int = 40) -> list[dict[str, Any]]:
    """Print and return the alerts raised outside every burst window."""
    out = []
    for r in raised:
        if not is_false(r, stream.bursts):
            continue
        kind = "calm" if r.entity in stream.calm else "burst-entity"
        out.append({"run": name, "entity": r.entity, "kind": kind, "rule": r.rule, "at": hours_of(r.at), **r.figures})
        if len(out) <= limit:
            print(f"  false {name} {r.entity} ({kind}) {r.rule} at {hours_of(r.at)}: {short(r.figures)}", flush=True)
    if len(out) > limit:
        print(f"  ... {len(out) - limit} more false alerts in {name} (all in the JSON line)", flush=True)
    return out


def run_one(name: str, stream: Stream, sentiments: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """One replay into a fresh Sift; its figures, misses and false alerts."""
    started = time.perf_counter()
    rt = start_sift(workdir, [*stream.burst_entities, *stream.calm])
    try:
        raised = replay(rt, stream, sentiments)
        seconds = round(time.perf_counter() - started, 1)
        figures = {rule: rule_figures(stream, raised, rule) for rule in RULES}
        print(f"# {name}: replayed {len(stream.news)} news in {seconds:.1f} s, {len(raised)} alerts raised", flush=True)
        missed = misses(rt, stream, raised, name)
        false = false_alerts(stream, raised, name)
    finally:
        rt.close()
        reset_runtime()
    return {"figures": figures, "missed": missed, "false_alerts": false, "replay_s": seconds, "raised": len(raised)}


def alert_settings(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in settings.model_dump().items() if k.startswith("alert_")}


def describe(stream: Stream, replay_set: list[dataset.Example]) -> dict[str, Any]:
    labels = [replay_set[n.text].label for n in stream.news if n.burst is None]
    mix = {k: round(labels.count(k) / max(1, len(labels)), 3) for k in ("negative", "neutral", "positive")}
    return {
        "news": len(stream.news),
        "background": len(labels),
        "background_gold_mix": mix,
        "bursts": len(stream.bursts),
        "burst_articles": sum(len(b.times) for b in stream.bursts),
        "calm_entities": len(stream.calm),
        "burst_entities": len(stream.burst_entities),
        "entity_days": {k: round(v, 2) for k, v in entity_days(stream).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="Financial PhraseBank train.csv (text, label)")
    parser.add_argument("--entities", type=int, default=20)
    parser.add_argument("--hours", type=float, default=48.0, help="simulated hours (the first 24 are baseline)")
    parser.add_argument("--rate", type=float, default=4.0, help="calm news per entity per hour (Poisson mean)")
    parser.add_argument("--bursts", type=int, default=2, help="bursts per burst entity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frozen", action="store_true", help="a head on the base model, no fine-tuning (fast)")
    args = parser.parse_args()
    if args.hours < BASELINE_H + 2 or args.entities < 2:
        parser.error(f"need --hours >= {BASELINE_H + 2} and --entities >= 2")
    started = time.perf_counter()
    settings = Settings()
    set_threads(settings.threads_for_this_process())
    print("# alert settings (defaults): " + json.dumps(alert_settings(settings)), flush=True)
    examples = load(args.data)
    replay_set, head, probs, accuracy = classifier(examples, settings, frozen=args.frozen)
    print(
        f"# sentiment classifier accuracy on the replayed news: {accuracy['accuracy']:.4f} "
        f"(macro-F1 {accuracy['macro_f1']:.4f}, n={accuracy['n']}, head fit on {accuracy['train']} other texts; "
        f"negative recall {accuracy['negative_recall']:.4f}, precision {accuracy['negative_precision']:.4f})",
        flush=True,
    )
    stream = build(replay_set, args)
    shape = describe(stream, replay_set)
    print("# stream: " + json.dumps(shape), flush=True)
    predicted = [head.prediction(head, p, version=VERSION, zero_shot=False) for p in probs]
    gold = [gold_sentiment(e.label) for e in replay_set]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sentiments in (("classifier", predicted), ("gold (ref)", gold)):
            runs[name] = run_one(name, stream, sentiments, Path(tmp) / name.split()[0])
    report(runs, args, settings, accuracy, shape, started)


def report(
    runs: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    settings: Settings,
    accuracy: dict[str, Any],
    shape: dict[str, Any],
    started: float,
) -> None:
    """The table (classifier, then the gold-label reference), the bars, and the JSON line."""
    print()
    print(
        f"{'run':<12}{'rule':<16}{'detected':>9}{'<=10m':>6}{'start min':>14}{'start art':>10}"
        f"{'8th min':>14}{'8th art':>10}{'F calm':>8}{'F burst':>8}{'F<24h':>6}{'F/ent-day':>10}"
    )
    print("# delays are median/max; 'art' = burst articles seen at detection (8th: minus 8)")
    print("# F = false alerts on calm entities, on burst entities (outside bursts), in the first 24 h (of both)")
    for name, result in runs.items():
        print_table(name, result["figures"])
    bars = {}
    for name, result in runs.items():
        f = result["figures"]["any"]
        bars[name] = {
            "all_bursts_within_10_min_of_8th": f["within_10_min_of_8th"] == f["bursts"],
            "false_per_entity_day_below_0.05": f["false_per_entity_day"] < BAR_FALSE_PER_DAY,
        }
        print(f"# bars ({name}, any rule): {json.dumps(bars[name])}")
    out = {
        "args": vars(args) | {"data": str(args.data)},
        "alert_settings": alert_settings(settings),
        "classifier": accuracy,
        "stream": shape,
        "runs": runs,
        "bars": bars,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
