"""Ranking quality of the recommendation blend, leave-last-out, against the baselines, in one run:
the hand-set blend, then a `recommend` training run, then the learned model alone and the new blend.

    python bench/recommend_quality.py --movielens ../shared/data/movielens-small [--full-users 100]
    python bench/recommend_quality.py --items-csv items.csv --interactions-csv interactions.csv
    python bench/recommend_quality.py ../shared/data/banking77/train.csv [--users 1500] [--items 3000] [--seed 0]

Protocol (the one the issue names): for each user, the last item is held out; Sift stores every
other interaction; the held-out item is ranked by `Recommender.rank` (the code behind
POST /v1/users/{id}/rank) among 99 items the user never touched, drawn uniformly with a fixed
seed. HR@10 = share of users whose held-out item is in the first 10; nDCG@10 = mean of
1/log2(rank + 1) over those. Ties are broken by a fixed random order, the same for every model.
  popularity  items ordered by their number of stored interactions;
  mean-NN     cosine to the plain mean of the user's history vectors (the frozen model);
  hand-set    Sift's blend with the weights of the settings, no learned model served;
  learned     the learned model's score alone (EASE + its fitted share of transitions), after a
              `recommend` training run on the stored interactions (services/recommend/training.py:
              it fits the model and the blend's weights on the tenant's own validation split and
              promotes the version);
  blend       the new blend served after that run, through the same `rank`; its figures are
              also printed as ratios to the hand-set blend's (the reference).
Full-catalogue ranking (sampled metrics can mislead: Krichene & Rendle 2020): for --full-users
users drawn with the seed, the held-out item ranked among every item the user has not stored
an interaction with (rank is called in chunks of 1000; scores do not depend on the chunk).
And, when --tune is given, a grid search of the blend's weights on a validation split made the
same way one step earlier (the second-to-last item held out, only the items before it stored), so
the test items are never seen while tuning; the best weights are then scored on the test split.

Data: real interaction files (items CSV: item_id,text; interactions CSV: user_id,item_id[,ts]),
or, with a Banking77 CSV, a synthetic world built on its real texts: items are texts, an intent
is a topic; item popularity is Zipf (--zipf 1.1); each user prefers 1-3 topics; a history moves to the next
item by staying on the topic (p 0.5), by a co-purchase partner of the item before (--partner-p, 0.2: two
fixed partners per item, in any topic, which the text cannot reveal) or by the user's topics;
within a topic, items are drawn by popularity. Vectors are real model embeddings of the texts,
made by Sift's pipeline (SQLite + embedded Qdrant in a temporary data dir).
Prints each figure as it is measured, then one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"

from services.config import Settings  # noqa: E402
from services.db.migrate import upgrade  # noqa: E402
from services.events import accept as ingest  # noqa: E402
from services.recommend import interactions  # noqa: E402
from services.recommend.scoring import Scored, Weights  # noqa: E402
from services.runtime import Runtime, reset_runtime  # noqa: E402

Sequences = dict[str, list[str]]
START = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic(
    path: Path, *, n_items: int, n_users: int, seed: int, partner_p: float = 0.2, zipf: float = 1.1
) -> tuple[dict[str, str], Sequences]:
    """Items from the CSV's texts and user histories from the generative story in the docstring."""
    rng = np.random.default_rng(seed)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    picked = rng.choice(len(rows), size=min(n_items, len(rows)), replace=False)
    items = {f"i{n}": rows[k]["text"] for n, k in enumerate(picked)}
    ids = list(items)
    topic_of = {f"i{n}": rows[k]["category"] for n, k in enumerate(picked)}
    topics = sorted(set(topic_of.values()))
    popularity = 1.0 / np.arange(1, len(ids) + 1) ** zipf
    rng.shuffle(popularity)
    weight = dict(zip(ids, popularity, strict=True))
    by_topic: dict[str, list[str]] = defaultdict(list)
    for item in ids:
        by_topic[topic_of[item]].append(item)
    partners = {item: list(rng.choice(ids, size=2, replace=False)) for item in ids}

    def draw(topic: str) -> str:
        members = by_topic[topic]
        p = np.array([weight[m] for m in members])
        return str(members[rng.choice(len(members), p=p / p.sum())])

    sequences: Sequences = {}
    for u in range(n_users):
        liked = list(rng.choice(topics, size=int(rng.integers(1, 4)), replace=False))
        length = int(min(60, 5 + rng.geometric(1 / 15)))
        history = [draw(str(rng.choice(liked)))]
        for _ in range(20 * length):  # bounded: the liked topics may hold fewer items than the length
            if len(history) >= length:
                break
            roll, last = rng.random(), history[-1]
            if roll < 0.5:
                nxt = draw(topic_of[last])
            elif roll < 0.5 + partner_p:
                nxt = str(rng.choice(partners[last]))
            else:
                nxt = draw(str(rng.choice(liked)))
            if nxt not in history:
                history.append(nxt)
        sequences[f"u{u}"] = history
    return items, sequences


def movielens(folder: Path) -> tuple[dict[str, str], Sequences]:
    """MovieLens (movies.csv, ratings.csv): an item is a movie, its text "title. genres"; every
    rating is an interaction, in time order (ties by movie id)."""
    with (folder / "movies.csv").open(newline="") as f:
        items = {row["movieId"]: f"{row['title']}. {row['genres'].replace('|', ', ')}" for row in csv.DictReader(f)}
    rows: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with (folder / "ratings.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            rows[row["userId"]].append((int(row["timestamp"]), row["movieId"]))
    sequences = {
        u: list(dict.fromkeys(m for _, m in sorted(t, key=lambda p: (p[0], int(p[1]))))) for u, t in rows.items()
    }
    return items, {u: s for u, s in sequences.items() if len(s) >= 3}


def from_files(items_csv: Path, interactions_csv: Path) -> tuple[dict[str, str], Sequences]:
    """Items and time-ordered histories (first occurrence of each item per user) from two CSVs."""
    with items_csv.open(newline="") as f:
        items = {row["item_id"]: row["text"] for row in csv.DictReader(f)}
    rows: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    with interactions_csv.open(newline="") as f:
        for n, row in enumerate(csv.DictReader(f)):
            if row["item_id"] in items:
                ts = row.get("ts") or ""
                rows[row["user_id"]].append((ts.zfill(20) if ts.isdigit() else ts, row["item_id"], n))
    sequences = {}
    for user, touched in rows.items():
        ordered = [item for _, item, _ in sorted(touched)]
        history = list(dict.fromkeys(ordered))
        if len(history) >= 3:
            sequences[user] = history
    return items, sequences


def build(runtime: Runtime, items: dict[str, str]) -> None:
    """Items through Sift's pipeline: accepted as product events, embedded, upserted."""
    events = [ingest.EventIn(id=i, kind="product", text=t) for i, t in items.items()]  # type: ignore[arg-type]
    limits = ingest.Limits(max_events=len(events), max_text_chars=20_000)
    with runtime.db.session_scope() as s:
        ingest.accept(s, events=events, limits=limits)
    ids = list(items)
    for start in range(0, len(ids), 512):
        runtime.batch.run(ids[start : start + 512], send=lambda *_: None)  # no follow-up for products


def store(runtime: Runtime, sequences: Sequences, *, upto: int) -> None:
    """Each user's history without its last `upto` items, one interaction a minute, in 1000s."""
    batch: list[interactions.InteractionIn] = []
    for user, history in sequences.items():
        for n, item in enumerate(history[: len(history) - upto]):
            ts = START + timedelta(minutes=n)
            batch.append(interactions.InteractionIn(user_id=user, item_id=item, type="view", ts=ts))
    for start in range(0, len(batch), 1000):
        with runtime.db.session_scope() as s:
            interactions.record(
                s,
                interactions=batch[start : start + 1000],
                now=datetime.now(UTC),
                pair_window=runtime.settings.recommend_pair_window,
                max_per_request=1000,
            )


def candidates(sequences: Sequences, items: list[str], *, held: int, seed: int) -> dict[str, list[str]]:
    """Per user: the held-out item first, then 99 items the user never touched."""
    rng = np.random.default_rng(seed)
    out = {}
    for user, history in sequences.items():
        touched = set(history)
        negatives: list[str] = []
        while len(negatives) < 99:
            pick = items[int(rng.integers(len(items)))]
            if pick not in touched and pick not in negatives:
                negatives.append(pick)
        out[user] = [history[len(history) - held], *negatives]
    return out


def metrics(scores: dict[str, np.ndarray], *, seed: int) -> dict[str, float]:
    """HR@10 and nDCG@10 when the first candidate is the held-out one (ties in a fixed random order)."""
    rng = np.random.default_rng(seed + 1)
    hits, gains = [], []
    for values in scores.values():
        order = rng.permutation(len(values))
        ranked = order[np.argsort(-values[order], kind="stable")]
        rank = int(np.where(ranked == 0)[0][0])
        hits.append(rank < 10)
        gains.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    return {"hr@10": round(float(np.mean(hits)), 4), "ndcg@10": round(float(np.mean(gains)), 4)}


def features(runtime: Runtime, lists: dict[str, list[str]]) -> dict[str, dict[str, Scored]]:
    """Sift's scored components for every candidate of every user (one rank call per user)."""
    rec = runtime.recommender
    return {user: {s.candidate.item_id: s for s in rec.rank(user_id=user, item_ids=ids)} for user, ids in lists.items()}


def blend(found: dict[str, dict[str, Scored]], lists: dict[str, list[str]], w: Weights) -> dict[str, np.ndarray]:
    """Scores under other weights, from the components (no dismissals or news in this data)."""
    return {
        user: np.array(
            [
                w.content * found[user][i].content
                + w.cooccurrence * found[user][i].cooccurrence
                + w.popularity * found[user][i].popularity
                for i in ids
            ]
        )
        for user, ids in lists.items()
    }


def baselines(runtime: Runtime, lists: dict[str, list[str]], sequences: Sequences, *, upto: int) -> dict[str, Any]:
    """Popularity and mean-of-history nearest neighbour, on the same candidates."""
    from sqlalchemy import select

    from services.db.models import ItemStats
    from services.events.accept import point_id_for

    with runtime.db.session_scope() as s:
        pop = {r.item_id: r.positives for r in s.execute(select(ItemStats.item_id, ItemStats.positives))}
    collection = runtime.models.for_kind("product").collection
    hits = runtime.store.retrieve(
        collection,
        [point_id_for(i, tenant=runtime.tenant) for i in itertools.chain(*sequences.values())],
        with_vectors=True,
    )
    vectors = {str(h.payload["event_id"]): np.asarray(h.vector) for h in hits}
    missing = {i for ids in lists.values() for i in ids} - vectors.keys()
    extra = runtime.store.retrieve(
        collection, [point_id_for(i, tenant=runtime.tenant) for i in missing], with_vectors=True
    )
    vectors.update({str(h.payload["event_id"]): np.asarray(h.vector) for h in extra})
    popularity, nearest = {}, {}
    for user, ids in lists.items():
        popularity[user] = np.array([pop.get(i, 0.0) for i in ids])
        history = sequences[user][: len(sequences[user]) - upto]
        mean = np.mean([vectors[i] for i in history], axis=0)
        nearest[user] = np.array([float(vectors[i] @ mean) for i in ids])
    return {"popularity": popularity, "mean-NN": nearest}


def tune(found: dict[str, dict[str, Scored]], lists: dict[str, list[str]], base: Weights, seed: int) -> Weights:
    """The grid's best weights by validation nDCG@10 (HR@10 breaks ties)."""
    best: tuple[tuple[float, float], Weights] | None = None
    for c, f, p in itertools.product([1.0], [0.0, 1.0, 3.0, 10.0, 30.0], [0.0, 0.1, 0.3, 1.0, 3.0]):
        w = replace(base, content=c, cooccurrence=f, popularity=p)
        m = metrics(blend(found, lists, w), seed=seed)
        key = (m["ndcg@10"], m["hr@10"])
        if best is None or key > best[0]:
            best = (key, w)
    assert best is not None
    return best[1]


def runtime_for(data_dir: Path, half_life: float | None) -> Runtime:
    # model_reload_s: the served learned model is looked up on every call, so the run's promotion shows at once
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "log_level": "WARNING",
        "batch_size": 512,
        "model_reload_s": 1e-3,
    }
    if half_life is not None:
        overrides["recommend_recency_half_life"] = half_life
    settings = Settings(**overrides)
    upgrade(settings.sqlalchemy_url)
    return reset_runtime(settings)


def full_lists(sequences: Sequences, items: list[str], *, users: int, seed: int) -> dict[str, list[str]]:
    """Per drawn user: the held-out item first, then every item not in the stored history."""
    rng = np.random.default_rng(seed + 7)
    chosen = sorted(rng.choice(sorted(sequences), size=min(users, len(sequences)), replace=False).tolist())
    out = {}
    for user in chosen:
        history = sequences[user]
        stored = set(history[:-1])
        out[user] = [history[-1], *(i for i in items if i not in stored and i != history[-1])]
    return out


def features_chunked(runtime: Runtime, lists: dict[str, list[str]]) -> dict[str, dict[str, Scored]]:
    """Like features(), for lists longer than rank's 1000 items."""
    rec = runtime.recommender
    out: dict[str, dict[str, Scored]] = {}
    for user, ids in lists.items():
        found: dict[str, Scored] = {}
        for start in range(0, len(ids), 1000):
            found.update({s.candidate.item_id: s for s in rec.rank(user_id=user, item_ids=ids[start : start + 1000])})
        out[user] = found
    return out


def recommend_run(runtime: Runtime) -> dict[str, Any]:
    """A `recommend` training run on the stored interactions, as `sift train --task recommend` runs it."""
    from services.recommend.learned import TASK
    from services.training import registry

    started = time.perf_counter()
    with runtime.db.session_scope() as s:
        run_id = registry.new_run(s, task=TASK, trigger="cli", others=[TASK]).id
    outcome = runtime.trainer.execute(run_id)
    seconds = round(time.perf_counter() - started, 1)
    if not outcome.promoted:  # served anyway, so that the learned model and its blend are measured
        from services.training import runs

        with runtime.db.session_scope() as s:
            runs.activate(s, version=outcome.version, settings=runtime.settings)
    m = outcome.metrics
    keep = ("blend", "learned", "hand_set_blend", "popularity", "content", "validation")
    return {
        "version": outcome.version,
        "promoted": outcome.promoted,
        "seconds": seconds,
        "train_seconds": m.get("train_seconds"),
        "fitted_blend": m.get("weights"),
        "holdout": {k: m.get(k) for k in keep},
    }


def scored_by(found: dict[str, dict[str, Scored]], lists: dict[str, list[str]], field: str) -> dict[str, np.ndarray]:
    """One component (or the score) of every candidate, per user."""
    return {u: np.array([getattr(found[u][i], field) for i in ids]) for u, ids in lists.items()}


def run(items: dict[str, str], sequences: Sequences, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"items": len(items), "users": len(sequences)}
    out["interactions"] = sum(map(len, sequences.values()))
    print(f"{out['items']} items, {out['users']} users, {out['interactions']} interactions", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="sift-recq-"))
    try:
        runtime = runtime_for(data_dir, args.half_life)
        started = time.perf_counter()
        build(runtime, items)
        out["build_s"] = round(time.perf_counter() - started, 1)
        weights = runtime.recommender.weights
        if args.tune:  # its interactions stay stored for the test split, which adds one more per user
            found, lists = split(runtime, items, sequences, held=2, seed=args.seed, out=out, name="validation")
            weights = tune(found, lists, weights, args.seed)
            out["tuned"] = {"content": weights.content, "cooccurrence": weights.cooccurrence}
            out["tuned"]["popularity"] = weights.popularity
            print(f"tuned on validation: {out['tuned']}", flush=True)
        found, lists = split(runtime, items, sequences, held=1, seed=args.seed, out=out, name="test")
        full = full_lists(sequences, list(items), users=args.full_users, seed=args.seed)
        found_full = features_chunked(runtime, full)
        sampled = baselines(runtime, lists, sequences, upto=1)
        whole = baselines(runtime, full, sequences, upto=1)
        sampled["hand-set"], whole["hand-set"] = scored_by(found, lists, "score"), scored_by(found_full, full, "score")
        if args.tune:
            sampled["hand-set-tuned"] = blend(found, lists, weights)
        out["recommend_run"] = recommend_run(runtime)
        print(f"recommend run: {json.dumps(out['recommend_run'])}", flush=True)
        found, found_full = features(runtime, lists), features_chunked(runtime, full)
        sampled["learned"], whole["learned"] = (
            scored_by(found, lists, "learned"),
            scored_by(found_full, full, "learned"),
        )
        sampled["blend"], whole["blend"] = scored_by(found, lists, "score"), scored_by(found_full, full, "score")
        out["sampled"] = {name: metrics(s, seed=args.seed) for name, s in sampled.items()}
        out["full"] = {name: metrics(s, seed=args.seed) for name, s in whole.items()}
        out["full_users"] = len(full)
        for protocol in ("sampled", "full"):
            for name, m in out[protocol].items():
                print(f"{protocol:7s} {name:14s} HR@10 {m['hr@10']:.4f}  nDCG@10 {m['ndcg@10']:.4f}", flush=True)
        out["gain_over_hand_set"] = gains(out)
        for protocol, g in out["gain_over_hand_set"].items():
            print(f"{protocol:7s} new blend / hand-set: HR@10 x{g['hr@10']:.3f}  nDCG@10 x{g['ndcg@10']:.3f}")
        runtime.close()
    finally:
        reset_runtime()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def gains(out: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The new blend's figures divided by the hand-set blend's, per protocol (the reference)."""
    return {
        protocol: {
            k: round(out[protocol]["blend"][k] / out[protocol]["hand-set"][k], 4)
            for k in ("hr@10", "ndcg@10")
            if out[protocol]["hand-set"][k]
        }
        for protocol in ("sampled", "full")
    }


def split(
    runtime: Runtime,
    items: dict[str, str],
    sequences: Sequences,
    *,
    held: int,
    seed: int,
    out: dict[str, Any],
    name: str,
) -> tuple[dict[str, dict[str, Scored]], dict[str, list[str]]]:
    """Store the histories without their last `held` items, then score every user's candidates."""
    started = time.perf_counter()
    store(runtime, sequences, upto=held)
    out[f"{name}_store_s"] = round(time.perf_counter() - started, 1)
    lists = candidates(sequences, list(items), held=held, seed=seed)
    started = time.perf_counter()
    found = features(runtime, lists)
    out[f"{name}_rank_ms_per_user"] = round(1000 * (time.perf_counter() - started) / len(lists), 2)
    return found, lists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="?", type=Path, help="a Banking77-style CSV (text,category) for synthetic data")
    parser.add_argument("--movielens", type=Path, help="a MovieLens folder (movies.csv, ratings.csv)")
    parser.add_argument("--full-users", type=int, default=100, help="users ranked against the whole catalogue")
    parser.add_argument("--items-csv", type=Path)
    parser.add_argument("--interactions-csv", type=Path)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partner-p", type=float, default=0.2, help="synthetic: chance of a co-purchase partner next")
    parser.add_argument("--zipf", type=float, default=1.1, help="synthetic: exponent of item popularity")
    parser.add_argument("--tune", action="store_true", help="grid-search the weights on a validation split first")
    parser.add_argument("--half-life", type=float, default=None, help="SIFT_RECOMMEND_RECENCY_HALF_LIFE for this run")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.movielens:
        items, sequences = movielens(args.movielens)
    elif args.items_csv and args.interactions_csv:
        items, sequences = from_files(args.items_csv, args.interactions_csv)
    elif args.texts:
        items, sequences = synthetic(
            args.texts, n_items=args.items, n_users=args.users, seed=args.seed, partner_p=args.partner_p, zipf=args.zipf
        )
    else:
        parser.error("give --movielens, --items-csv and --interactions-csv, or a texts CSV for synthetic data")
    out = run(items, sequences, args)
    out["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
