"""Recommendation feeds at catalogue size: feed, rank and similar-items latency of a real `sift up`.

    python bench/recommend.py [--items 100000] [--users 5000] [--history 30] [--requests 400]
                              [--cache DIR] [--keep DIR] [--seed 0] [--warm-up N]

Catalogue: --items products, deterministic from --seed. The texts are templated English product
descriptions ("<adjective> <material> <product> for <use>, <colour>, <feature>.") over 40
categories, each with its own products, uses and price range; metadata holds category, price
(log-uniform in the category's range), in_stock (85%), language (a market label: en 70%, de, fr,
es 10% each; the text is English in all) and brand. The vectors are REAL MODEL EMBEDDINGS of
those templated texts: the items go in as `product` events through services.events.accept.accept and
are processed by Sift's own pipeline (the batch use case, Runtime.batch.run, at most 512 ids a call), which
encodes them with the packaged model (all-MiniLM-L6-v2, 384 dimensions) and upserts them into
embedded Qdrant; nothing is synthetic about the vectors but the texts they embed. The build
prints its rate (items/s through the batch use case: encode + upsert + record) beside the reference rate
of the bare encoder (Encoder.encode, same model and threads) on the last 1024 texts, in this run.
--vectors DIR: the same encoder embeds the distinct passages first, in calls of 20,000 texts kept in
DIR as .npy (resumed and reused by later builds), while the pipeline takes the items through all its
steps but the forward pass, looking their vectors up (bench/catalogue_vectors.py); --build-only
stops after the build (and its --cache), so that a build can run under nice apart from the timings.

Users: --users users, each with a history of about --history interactions (uniform between half
and one and a half times it), over the last 28 days, concentrated on 1-3 categories (the first
gets most; categories chosen with a Zipf skew, exponent 0.8), items within a category drawn with
a Zipf skew (exponent 1.0 over a random popularity order), so co-interaction pairs and trending
items exist. Types: view 74%, click 8%, like 7%, purchase 7%, dismiss 4%. They are written with
services.recommend.interactions.record in chunks of 1000, in global time order (as a stream would arrive:
a chunk holds many users), each chunk in one session; the write rate (interactions/s, pairs and
popularity updates included) is reported.

Latency, embedded mode (SQLite, Qdrant Edge, on-disk broker), after the build:
  in_process   Recommender.feed in this process, one call at a time (the reference: no HTTP);
  then this process closes its runtime and starts `sift up` (API + worker + beat in one process)
  on the same data dir, waits for /readyz, warms up with 20 feed requests (plus --warm-up N feeds of
other random requests, drawn apart, for a process that has served a while: its caches of items'
vectors and of trending items hold what earlier users' feeds read), then over a real socket:
  feed_seq     GET /v1/users/{id}/feed?limit=10, one request at a time, --requests requests;
  feed_conc8   as many requests of their own draw (mostly other users than feed_seq just asked for,
               whose reads a cache would still hold) from 8 concurrent clients (threads, one httpx.Client each);
  rank_100     POST /v1/users/{id}/rank with 100 item ids, one at a time (--requests / 2);
  similar      GET /v1/items/{id}/similar?limit=10, one at a time (--requests / 2).
The feed requests mix: 80% users with a history, 10% such users with a filter
(category=<one of theirs>&max_price=<category median price>&in_stock=true), 10% cold-start
users that have no history. p50/p90/p99/max (np.percentile over every measured request) in ms
and requests/s. The client and the server share this machine's cores (--server-cpus 1: once
ready, `sift up` runs on CPU 1 and the clients on the others, or on --client-cpus). The bar: feed p99 <= 50 ms
with 100,000 items, one request at a time. Checks on every feed answer: seen items returned,
filter violations, short feeds (< 10 items), non-200 answers.

--cache DIR keeps the whole built data dir under DIR, keyed by (items, users, history, seed);
a later run with the same key copies it back instead of building. Interaction times stay those of
the original build (its age is printed): as the cache ages, fewer of them fall in the 7-day trending
window, and past 28 days none do (trending falls back to all-time counts). The key does not cover
the code or the model: remove the cache after changing either.
Prints each figure as it is measured, then one JSON line with all of them and each phase's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

os.environ["HF_HUB_OFFLINE"] = "1"

import catalogue_vectors  # noqa: E402
import request_profile  # noqa: E402
from apikey import bearer, saved_key  # noqa: E402  (bench/ is not a package)
from clients import run_clients  # noqa: E402

from services.config import Settings  # noqa: E402
from services.db.migrate import upgrade  # noqa: E402
from services.events import accept as ingest  # noqa: E402
from services.events.pipeline import text_to_embed  # noqa: E402  (an EventIn has its title and text)
from services.recommend import interactions  # noqa: E402
from services.recommend.filters import item_filters  # noqa: E402
from services.recommend.interactions import InteractionIn  # noqa: E402
from services.runtime import Runtime, reset_runtime  # noqa: E402

GENERATOR_VERSION = 1  # part of the cache key: bump when the catalogue or the histories change
BATCH = 512  # ids per batch (= SIFT_BATCH_SIZE of the build)
INTERACTION_CHUNK = 1000
HISTORY_DAYS = 28
CLIENTS = 8
REFERENCE_TEXTS = 1024  # texts the bare encoder encodes once, for the pipeline's reference rate
WARM_UP = 20
RANK_ITEMS = 100
BAR_P99_MS = 50.0
PHASES: dict[str, float] = {}

# fmt: off
ADJECTIVES = (
    "lightweight", "durable", "compact", "premium", "classic", "modern", "ergonomic", "foldable", "waterproof",
    "eco-friendly", "handmade", "vintage", "minimalist", "heavy-duty", "portable", "soft", "slim", "adjustable",
    "insulated", "breathable", "quick-dry", "non-slip", "reusable", "stackable", "cordless", "rechargeable",
    "quiet", "stylish", "rugged", "travel-size",
)
MATERIALS = (
    "cotton", "wool", "leather", "bamboo", "stainless steel", "aluminium", "recycled plastic", "oak", "glass",
    "ceramic", "silicone", "linen", "carbon fibre", "canvas", "merino", "cast iron",
)
COLOURS = (
    "black", "white", "navy", "grey", "red", "forest-green", "sand", "olive", "burgundy", "sky-blue", "charcoal",
    "mustard",
)
FEATURES = (
    "with a two-year warranty", "in a recyclable gift box", "with free returns", "made in Portugal",
    "with a lifetime guarantee", "designed in Sweden", "machine washable", "dishwasher safe",
    "with spare parts available", "rated best in its class", "certified fair trade", "with a carrying pouch",
    "easy to assemble", "for left and right hands", "in a limited edition", "with replaceable batteries",
    "tested by professionals", "with a matte finish", "with reinforced seams", "sold as a set of two",
)
BRANDS = (
    "Acme", "Zenith", "Nordvik", "Halden", "Kestrel", "Orbis", "Lumen", "Vantage", "Brio", "Cobalt", "Fjord",
    "Tamarind", "Quill", "Arbor", "Helix", "Saffron", "Meridian", "Polar", "Juniper", "Ember", "Tidal", "Granite",
    "Willow", "Summit", "Atlas", "Pico", "Verve", "Nimbus", "Oriel", "Basalt",
)
# fmt: on
LANGUAGES = (("en", "de", "fr", "es"), (0.7, 0.1, 0.1, 0.1))
# category: (products, uses, (min price, max price))
# fmt: off
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[float, float]]] = {
    "running": (
        ("running shoes", "running shorts", "running jacket", "sports watch", "hydration vest", "running socks"),
        ("marathon training", "trail runs", "interval sessions", "winter jogging"), (10, 300),
    ),
    "cycling": (
        ("bike helmet", "cycling gloves", "bike light", "saddle bag", "cycling jersey", "bike lock"),
        ("commuting to work", "mountain trails", "long road rides", "night riding"), (15, 250),
    ),
    "hiking": (
        ("hiking boots", "trekking poles", "daypack", "rain poncho", "hiking map case", "trail gaiters"),
        ("alpine hikes", "weekend treks", "rainy trails", "desert walks"), (10, 280),
    ),
    "camping": (
        ("tent", "sleeping bag", "camping stove", "folding chair", "lantern", "cooler box"),
        ("family camping", "festival weekends", "wild camping", "car camping"), (12, 450),
    ),
    "swimming": (
        ("swim goggles", "swimsuit", "swim cap", "kickboard", "pool towel", "ear plugs"),
        ("lap swimming", "open water", "swim lessons", "triathlon training"), (5, 120),
    ),
    "yoga": (
        ("yoga mat", "yoga block", "meditation cushion", "yoga strap", "yoga leggings", "bolster"),
        ("morning stretching", "hot yoga", "home practice", "pilates classes"), (8, 140),
    ),
    "fitness": (
        ("dumbbell set", "kettlebell", "resistance bands", "pull-up bar", "foam roller", "skipping rope"),
        ("home workouts", "strength training", "recovery days", "cardio sessions"), (8, 400),
    ),
    "football": (
        ("football boots", "match ball", "goalkeeper gloves", "shin guards", "training bib", "corner flags"),
        ("club matches", "five-a-side games", "youth training", "park kickabouts"), (6, 220),
    ),
    "tennis": (
        ("tennis racket", "tennis balls", "racket grip", "tennis bag", "sweatband", "ball hopper"),
        ("club tournaments", "clay courts", "doubles practice", "coaching sessions"), (5, 260),
    ),
    "winter sports": (
        ("ski goggles", "snowboard", "ski gloves", "thermal base layer", "ski helmet", "avalanche beacon"),
        ("powder days", "ski touring", "slope holidays", "cold mornings"), (20, 700),
    ),
    "cookware": (
        ("frying pan", "saucepan", "stock pot", "wok", "dutch oven", "griddle"),
        ("everyday cooking", "induction hobs", "searing steaks", "slow stews"), (15, 320),
    ),
    "knives": (
        ("chef's knife", "bread knife", "paring knife", "knife block", "sharpening stone", "cleaver"),
        ("slicing vegetables", "carving roasts", "precise prep work", "professional kitchens"), (10, 300),
    ),
    "baking": (
        ("baking tray", "cake tin", "stand mixer", "rolling pin", "proofing basket", "piping set"),
        ("sourdough bread", "birthday cakes", "holiday cookies", "weekend pastries"), (6, 500),
    ),
    "coffee": (
        ("espresso machine", "coffee grinder", "pour-over dripper", "milk frother", "french press", "travel mug"),
        ("morning espresso", "cold brew", "latte art", "office breaks"), (8, 900),
    ),
    "tea": (
        ("teapot", "tea infuser", "matcha whisk", "tea caddy", "kettle", "tea cups"),
        ("green tea", "afternoon tea", "herbal infusions", "tea ceremonies"), (5, 150),
    ),
    "tableware": (
        ("dinner plates", "wine glasses", "cutlery set", "serving bowl", "table runner", "salt grinder"),
        ("dinner parties", "everyday meals", "outdoor dining", "holiday feasts"), (6, 200),
    ),
    "food storage": (
        ("storage jars", "lunch box", "vacuum sealer", "spice rack", "bread bin", "freezer bags"),
        ("meal prep", "pantry organisation", "school lunches", "bulk buying"), (4, 160),
    ),
    "furniture": (
        ("sofa", "armchair", "bookshelf", "coffee table", "dining chair", "bed frame"),
        ("small living rooms", "family homes", "reading corners", "studio flats"), (40, 1500),
    ),
    "lighting": (
        ("floor lamp", "desk lamp", "pendant light", "string lights", "wall sconce", "smart bulb"),
        ("cosy evenings", "home offices", "garden parties", "reading at night"), (8, 350),
    ),
    "bedding": (
        ("duvet cover", "pillow", "mattress topper", "weighted blanket", "fitted sheet", "throw"),
        ("restful sleep", "guest rooms", "cold winters", "hot summer nights"), (10, 300),
    ),
    "bathroom": (
        ("bath towel", "shower curtain", "bath mat", "soap dispenser", "towel rail", "bathroom scale"),
        ("spa evenings", "family bathrooms", "small en-suites", "guest washrooms"), (6, 180),
    ),
    "cleaning": (
        ("vacuum cleaner", "steam mop", "microfibre cloths", "laundry basket", "ironing board", "dish brush"),
        ("pet hair", "spring cleaning", "hard floors", "quick tidy-ups"), (4, 600),
    ),
    "garden": (
        ("garden hose", "pruning shears", "raised bed", "watering can", "compost bin", "garden kneeler"),
        ("vegetable patches", "balcony gardens", "lawn care", "growing herbs"), (6, 400),
    ),
    "tools": (
        ("cordless drill", "tool box", "spirit level", "screwdriver set", "tape measure", "workbench"),
        ("home repairs", "furniture assembly", "woodworking projects", "weekend DIY"), (6, 450),
    ),
    "laptops": (
        ("laptop", "laptop stand", "laptop sleeve", "docking station", "cooling pad", "privacy screen"),
        ("remote work", "university studies", "video editing", "business travel"), (15, 2500),
    ),
    "phones": (
        ("smartphone", "phone case", "screen protector", "wireless charger", "phone grip", "car mount"),
        ("everyday calls", "mobile photography", "navigation", "long battery life"), (5, 1300),
    ),
    "audio": (
        ("noise-cancelling headphones", "earbuds", "bluetooth speaker", "soundbar", "turntable", "headphone amp"),
        ("commuting", "home cinema", "vinyl listening", "podcasts"), (15, 900),
    ),
    "cameras": (
        ("mirrorless camera", "camera lens", "tripod", "camera bag", "memory card", "action camera"),
        ("travel photography", "wildlife shots", "vlogging", "portrait sessions"), (10, 2800),
    ),
    "gaming": (
        ("game controller", "gaming headset", "mechanical keyboard", "gaming mouse", "gaming chair", "console"),
        ("competitive play", "streaming", "couch co-op", "long sessions"), (15, 700),
    ),
    "smart home": (
        ("smart speaker", "video doorbell", "smart thermostat", "security camera", "smart plug", "motion sensor"),
        ("home automation", "saving energy", "home security", "voice control"), (10, 350),
    ),
    "books fiction": (
        ("crime novel", "science fiction novel", "fantasy saga", "historical novel", "short story collection"),
        ("long train journeys", "beach holidays", "book clubs", "bedtime reading"), (5, 40),
    ),
    "books nonfiction": (
        ("cookbook", "travel guide", "biography", "history book", "popular science book", "self-help book"),
        ("curious minds", "trip planning", "learning new skills", "gift giving"), (6, 60),
    ),
    "toys": (
        ("building blocks", "plush bear", "wooden train set", "puzzle", "doll house", "remote control car"),
        ("toddlers", "rainy afternoons", "birthday presents", "creative play"), (5, 200),
    ),
    "baby": (
        ("baby carrier", "stroller", "high chair", "baby monitor", "changing bag", "swaddle blanket"),
        ("newborns", "family outings", "night feeds", "first steps"), (10, 900),
    ),
    "pets": (
        ("dog bed", "cat scratching post", "dog lead", "pet carrier", "aquarium filter", "bird feeder"),
        ("large dogs", "indoor cats", "long walks", "travel with pets"), (5, 250),
    ),
    "beauty": (
        ("face serum", "moisturiser", "hair dryer", "makeup brush set", "sunscreen", "lip balm"),
        ("sensitive skin", "daily routines", "summer holidays", "evening glam"), (4, 250),
    ),
    "men's clothing": (
        ("rain jacket", "wool jumper", "chinos", "oxford shirt", "denim jeans", "puffer vest"),
        ("office days", "weekend outings", "autumn walks", "smart casual evenings"), (15, 400),
    ),
    "women's clothing": (
        ("summer dress", "trench coat", "knit cardigan", "wide-leg trousers", "silk blouse", "ankle boots"),
        ("work meetings", "summer weddings", "city breaks", "cosy weekends"), (15, 450),
    ),
    "bags": (
        ("backpack", "tote bag", "suitcase", "weekend holdall", "crossbody bag", "laptop backpack"),
        ("business trips", "daily commutes", "long-haul flights", "city shopping"), (12, 600),
    ),
    "stationery": (
        ("fountain pen", "notebook", "desk organiser", "watercolour set", "planner", "sketchbook"),
        ("journaling", "art classes", "exam revision", "office desks"), (3, 180),
    ),
}
# fmt: on


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time a phase into PHASES."""
    started = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name] = round(time.perf_counter() - started, 1)
        print(f"# phase {name}: {PHASES[name]:.1f} s", flush=True)


# -- the catalogue and the users ------------------------------------------------------------------


@dataclass
class Catalogue:
    """The items: ids, texts, metadata, and per category the item indexes in popularity order."""

    ids: list[str]
    categories: list[str]
    events: list[ingest.EventIn]
    prices: np.ndarray
    in_stock: np.ndarray
    by_category: dict[str, np.ndarray]  # category -> item indexes, most popular first


def catalogue(n: int, rng: np.random.Generator) -> Catalogue:
    """n templated products, spread evenly over the categories (deterministic from rng)."""
    names = list(CATEGORIES)
    events: list[ingest.EventIn] = []
    ids, cats, prices, stock = [], [], np.zeros(n), np.zeros(n, dtype=bool)
    for i in range(n):
        category = names[i % len(names)]
        products, uses, (low, high) = CATEGORIES[category]
        adjective = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        material = MATERIALS[rng.integers(len(MATERIALS))]
        product = products[rng.integers(len(products))]
        use = uses[rng.integers(len(uses))]
        colour = COLOURS[rng.integers(len(COLOURS))]
        feature = FEATURES[rng.integers(len(FEATURES))]
        brand = BRANDS[rng.integers(len(BRANDS))]
        price = round(float(np.exp(rng.uniform(np.log(low), np.log(high)))), 0) - 0.01
        in_stock = bool(rng.random() < 0.85)
        language = str(rng.choice(LANGUAGES[0], p=LANGUAGES[1]))
        item_id = f"p{i:07d}"
        text = f"{adjective} {material} {product} for {use}, {colour}, {feature}."
        meta = {"category": category, "price": price, "in_stock": in_stock, "language": language, "brand": brand}
        events.append(ingest.EventIn(id=item_id, kind="product", text=text, title=f"{brand} {product}", metadata=meta))
        ids.append(item_id)
        cats.append(category)
        prices[i], stock[i] = price, in_stock
    members: dict[str, list[int]] = {c: [] for c in names}
    for i, category in enumerate(cats):
        members[category].append(i)
    by_category = {c: rng.permutation(np.array(m, dtype=np.int64)) for c, m in members.items() if m}
    return Catalogue(ids, cats, events, prices, stock, by_category)


@dataclass
class Users:
    """Histories: per user, its categories, and its interactions (item index, type, ts)."""

    ids: list[str]
    categories: list[list[str]]
    history: list[list[tuple[int, str, datetime]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(h) for h in self.history)


TYPES = (("view", "click", "like", "purchase", "dismiss"), (0.74, 0.08, 0.07, 0.07, 0.04))


def zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return np.cumsum(weights / weights.sum())


def users(n: int, history: int, cat: Catalogue, rng: np.random.Generator, now: datetime) -> Users:
    """n users with histories concentrated on 1-3 categories, Zipf-skewed within each."""
    names = [c for c in CATEGORIES if c in cat.by_category]
    cat_weights = 1.0 / np.arange(1, len(names) + 1) ** 0.8
    cat_order = rng.permutation(len(names))  # which categories are the popular ones
    cat_p = np.empty(len(names))
    cat_p[cat_order] = cat_weights / cat_weights.sum()
    cdfs = {c: zipf_cdf(len(cat.by_category[c]), 1.0) for c in names}
    out = Users(ids=[f"u{u:06d}" for u in range(n)], categories=[])
    span_s = HISTORY_DAYS * 86_400
    for _ in range(n):
        k = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        chosen = [names[j] for j in rng.choice(len(names), size=min(k, len(names)), replace=False, p=cat_p)]
        share = np.array([0.6, 0.3, 0.1][: len(chosen)])
        length = int(rng.integers(max(1, history // 2), history * 3 // 2 + 1))
        counts = rng.multinomial(length, share / share.sum())
        items: list[int] = []
        for category, count in zip(chosen, counts, strict=True):
            ranks = np.searchsorted(cdfs[category], rng.random(count), side="right")
            ranks = np.minimum(ranks, len(cat.by_category[category]) - 1)
            items += [int(x) for x in cat.by_category[category][ranks]]
        rng.shuffle(items)
        ages = np.sort(rng.uniform(0, span_s, size=len(items)))[::-1]  # oldest first
        types = rng.choice(TYPES[0], size=len(items), p=TYPES[1])
        out.categories.append(chosen)
        out.history.append(
            [
                (item, str(kind), now - timedelta(seconds=float(age)))
                for item, kind, age in zip(items, types, ages, strict=True)
            ]
        )
    return out


# -- building the data dir ---------------------------------------------------------------------


def settings_for(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, log_level="WARNING", device="cpu", batch_size=BATCH)


def ingest_items(rt: Runtime, cat: Catalogue, vectors: Path | None = None) -> dict[str, Any]:
    """Every item through ingest.accept and the batch use case, BATCH ids at a time. With vectors
    (a folder), the distinct passages are encoded first in big calls (or read back from there) and
    the pipeline's encoder answers from them (bench/catalogue_vectors.py)."""
    sample = [e.text for e in cat.events[-REFERENCE_TEXTS:]]
    rt.encoder.encode(sample[:32])  # load and warm the model outside the clock
    t0 = time.perf_counter()
    rt.encoder.encode(sample)
    raw_rate = len(sample) / (time.perf_counter() - t0)
    print(f"#   reference: the bare encoder on {len(sample)} of the texts: {raw_rate:.1f} texts/s", flush=True)
    reference = {"reference_encoder_texts_per_s": round(raw_rate, 1), "reference_texts": len(sample)}
    if vectors is None:
        return {**_items_through_pipeline(rt, cat), **reference}
    passages = [text_to_embed(e) for e in cat.events]  # type: ignore[arg-type]
    table = catalogue_vectors.Table(list(dict.fromkeys(passages)), rt.encoder.dimension)
    filling = threading.Thread(
        target=table.fill, args=(rt.encoder.encode, vectors, rt.encoder.version), name="bench-encode", daemon=True
    )
    filling.start()  # the encoder's own threads do the work; this one waits on them
    with catalogue_vectors.looked_up(rt.encoder, table) as counts:
        out = _items_through_pipeline(rt, cat)
    filling.join()
    if table.error is not None:
        raise SystemExit(f"encoding the passages failed: {table.error!r}")
    print(f"#   vectors: {json.dumps(table.report)}; looked up in the pipeline: {counts}", flush=True)
    return {**out, **reference, "vectors": table.report, "pipeline_encoder": counts}


def _items_through_pipeline(rt: Runtime, cat: Catalogue) -> dict[str, Any]:
    limits = ingest.Limits(max_events=BATCH, max_text_chars=rt.settings.max_text_chars)
    n = len(cat.events)
    step = min(10_000, max(BATCH, n // 10))
    accept_s = process_s = 0.0
    done = failed = 0
    next_report = step
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        chunk = cat.events[start : start + BATCH]
        t0 = time.perf_counter()
        with rt.db.session_scope() as session:
            ingest.accept(session, events=chunk, limits=limits)
        t1 = time.perf_counter()
        result = rt.batch.run([e.id for e in chunk if e.id], send=lambda *_: None)
        t2 = time.perf_counter()
        accept_s += t1 - t0
        process_s += t2 - t1
        done += result["done"]
        failed += result["failed"]
        if done + failed >= next_report or start + BATCH >= n:
            elapsed = time.perf_counter() - started
            print(
                f"#   items {done + failed:>7}/{n} processed ({failed} failed), {elapsed:6.1f} s, "
                f"{(done + failed) / elapsed:6.1f} items/s overall, {(done + failed) / process_s:6.1f} items/s "
                "in the batch use case (encode + upsert + record)",
                flush=True,
            )
            next_report += step
    if done != n:
        raise SystemExit(f"only {done} of {n} items processed ({failed} failed)")
    total = time.perf_counter() - started
    return {
        "items": done,
        "failed": failed,
        "accept_s": round(accept_s, 1),
        "run_batch_s": round(process_s, 1),
        "items_per_s_run_batch": round(done / process_s, 1),
        "items_per_s_overall": round(done / total, 1),
        "model": rt.encoder.version,
        "dimension": rt.encoder.dimension,
    }


def write_interactions(rt: Runtime, cat: Catalogue, us: Users, now: datetime) -> dict[str, Any]:
    """Every history through services.recommend.interactions.record, INTERACTION_CHUNK at a time, in time order."""
    stream = sorted(
        ((ts, user, cat.ids[item], kind) for user, h in zip(us.ids, us.history, strict=True) for item, kind, ts in h),
        key=lambda row: (row[0], row[1]),
    )
    rows = [InteractionIn(user_id=u, item_id=i, type=k, ts=ts) for ts, u, i, k in stream]
    window = rt.settings.recommend_pair_window
    new, started, chunk_s = 0, time.perf_counter(), []
    step = max(INTERACTION_CHUNK, (len(rows) // 10) // INTERACTION_CHUNK * INTERACTION_CHUNK)
    for start in range(0, len(rows), INTERACTION_CHUNK):
        t0 = time.perf_counter()
        with rt.db.session_scope() as session:
            recorded = interactions.record(
                session,
                interactions=rows[start : start + INTERACTION_CHUNK],
                now=now,
                pair_window=window,
                max_per_request=INTERACTION_CHUNK,
            )
        chunk_s.append(time.perf_counter() - t0)
        new += recorded.new
        written = start + INTERACTION_CHUNK
        if written % step == 0 or written >= len(rows):
            elapsed = time.perf_counter() - started
            print(
                f"#   interactions {min(written, len(rows)):>8}/{len(rows)}, {elapsed:6.1f} s, "
                f"{min(written, len(rows)) / elapsed:7.0f} interactions/s",
                flush=True,
            )
    total = time.perf_counter() - started
    with rt.db.session_scope() as session:
        from sqlalchemy import func, select

        from services.db.models import ItemPair, ItemStats

        pairs = int(session.scalar(select(func.count()).select_from(ItemPair)) or 0)
        stats = int(session.scalar(select(func.count()).select_from(ItemStats)) or 0)
    ms = np.array(chunk_s) * 1000
    return {
        "interactions": len(rows),
        "new": new,
        "chunk": INTERACTION_CHUNK,
        "seconds": round(total, 1),
        "interactions_per_s": round(len(rows) / total, 1),
        "chunk_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "chunk_ms_max": round(float(ms.max()), 1),
        "item_pairs_rows": pairs,
        "items_with_interactions": stats,
    }


def build(
    data_dir: Path, cat: Catalogue, us: Users, now: datetime, vectors: Path | None = None
) -> tuple[Runtime, dict[str, Any]]:
    settings = settings_for(data_dir)
    upgrade(settings.sqlalchemy_url)
    rt = reset_runtime(settings)
    out: dict[str, Any] = {}
    with phase("build_items"):
        out["items"] = ingest_items(rt, cat, vectors)
    print(f"# items: {json.dumps(out['items'])}", flush=True)
    with phase("build_interactions"):
        out["interactions"] = write_interactions(rt, cat, us, now)
    print(f"# interactions: {json.dumps(out['interactions'])}", flush=True)
    with phase("build_vector_index"):  # what `sift up` does at start and beat every 10 minutes
        started = time.perf_counter()
        out["vector_index"] = {"built": rt.build_vector_indexes(), "seconds": round(time.perf_counter() - started, 1)}
    print(f"# vector index: {json.dumps(out['vector_index'])}", flush=True)
    return rt, out


# -- the cache -----------------------------------------------------------------------------------


def cache_key(args: argparse.Namespace) -> str:
    return f"recommend-items{args.items}-users{args.users}-history{args.history}-seed{args.seed}-v{GENERATOR_VERSION}"


def cache_load(cache: Path, key: str, data_dir: Path) -> dict[str, Any] | None:
    entry = cache / key
    if not (entry / "meta.json").is_file():
        return None
    shutil.copytree(entry / "data", data_dir, dirs_exist_ok=True)
    meta: dict[str, Any] = json.loads((entry / "meta.json").read_text())
    return meta


def cache_save(cache: Path, key: str, data_dir: Path, meta: dict[str, Any]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    shutil.copytree(data_dir, partial / "data")
    (partial / "meta.json").write_text(json.dumps(meta))
    entry = cache / key
    if entry.exists():
        shutil.rmtree(entry)
    partial.rename(entry)


# -- the requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedRequest:
    """One feed request: who, which mix bucket, and the filter (category, max price) if any."""

    user: str
    bucket: str  # "history", "filtered" or "cold"
    category: str | None = None
    max_price: float | None = None

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": 10}
        if self.category is not None:
            params.update(category=self.category, max_price=self.max_price, in_stock="true")
        return params


def feed_requests(n: int, us: Users, cat: Catalogue, rng: np.random.Generator, tag: str) -> list[FeedRequest]:
    medians = {c: float(np.median(cat.prices[idx])) for c, idx in cat.by_category.items()}
    out = []
    for i in range(n):
        r = rng.random()
        if r >= 0.9:
            out.append(FeedRequest(f"cold-{tag}-{i}", "cold"))
            continue
        u = int(rng.integers(len(us.ids)))
        if r < 0.8:
            out.append(FeedRequest(us.ids[u], "history"))
        else:
            category = us.categories[u][int(rng.integers(len(us.categories[u])))]
            out.append(FeedRequest(us.ids[u], "filtered", category, round(medians[category], 2)))
    return out


def percentiles(seconds: Sequence[float], wall: float | None = None) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    out = {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }
    if wall is not None:
        out["wall_s"] = round(wall, 2)
        out["req_per_s"] = round(len(ms) / wall, 1)
    return out


def show(name: str, r: dict[str, Any]) -> None:
    rate = f"  {r['req_per_s']:>7.1f} req/s" if "req_per_s" in r else ""
    print(
        f"{name:<30} n {r['n']:>5}  p50 {r['p50_ms']:>7.2f}  p90 {r['p90_ms']:>7.2f}  p99 {r['p99_ms']:>7.2f}  "
        f"max {r['max_ms']:>8.2f} ms{rate}",
        flush=True,
    )


class Checks:
    """What every feed answer must satisfy: no seen item, the filter holds, 10 items, status 200."""

    def __init__(self, cat: Catalogue, us: Users) -> None:
        self.index = {item_id: i for i, item_id in enumerate(cat.ids)}
        self.cat = cat
        self.seen = {u: {cat.ids[item] for item, _, _ in h} for u, h in zip(us.ids, us.history, strict=True)}
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []

    def note(self, problem: str, detail: str) -> None:
        self.counts[problem] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{problem}: {detail}")

    def feed(self, req: FeedRequest, status: int, body: Any) -> None:
        self.counts["feeds"] += 1
        if status != 200:
            self.note(f"status_{status}", f"{req} -> {str(body)[:300]}")
            return
        items = body["items"]
        if len(items) < 10:
            self.note("short_feed", f"{req} -> {len(items)} items")
        seen = self.seen.get(req.user, set())
        for item in items:
            self.reasons[_reason_kind(item["reason"])] += 1
            if item["item_id"] in seen:
                self.note("seen_returned", f"{req} -> {item['item_id']}")
            i = self.index.get(item["item_id"])
            if i is None:
                self.note("unknown_item", f"{req} -> {item['item_id']}")
            elif req.category is not None and (
                self.cat.categories[i] != req.category
                or self.cat.prices[i] > (req.max_price or 0)
                or not self.cat.in_stock[i]
            ):
                self.note("filter_violated", f"{req} -> {item['item_id']}")

    def summary(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "reasons": dict(self.reasons), "examples": self.examples}


def _reason_kind(reason: str) -> str:
    if reason.startswith("because you"):
        return "content"
    if reason.startswith("people who"):
        return "cooccurrence"
    return reason


# -- in process ----------------------------------------------------------------------------------


def in_process_feed(rt: Runtime, requests: Sequence[FeedRequest], warm: Sequence[FeedRequest]) -> dict[str, Any]:
    """Recommender.feed in this process, one call at a time."""
    rec = rt.recommender
    errors: list[str] = []

    def call(req: FeedRequest) -> None:
        filters = None
        if req.category is not None:
            filters = item_filters(category=[req.category], max_price=req.max_price, in_stock=True, declared={})
        rec.feed(user_id=req.user, limit=10, filters=filters)

    for req in warm:
        call(req)
    seconds: dict[str, list[float]] = {"all": [], "history": [], "filtered": [], "cold": []}
    for req in requests:
        started = time.perf_counter()
        try:
            call(req)
        except Exception:
            if not errors:
                traceback.print_exc()
            errors.append(f"{req}: {traceback.format_exc(limit=1).splitlines()[-1]}")
            continue
        took = time.perf_counter() - started
        seconds["all"].append(took)
        seconds[req.bucket].append(took)
    out: dict[str, Any] = {k: percentiles(v) for k, v in seconds.items() if v}
    out["errors"] = len(errors)
    out["error_examples"] = errors[:5]
    return out


# -- over a socket to `sift up` -------------------------------------------------------------------


class _NoModel:
    """Stands for a registry with no recommend version (the hand-set blend)."""

    def get(self) -> None:
        return None


def learned_model(rt: Runtime) -> dict[str, Any]:
    """A `recommend` training run on the stored interactions; its version is made active even when
    it was not promoted, so the latency after it is the latency with a learned model served."""
    from services.recommend.learned import TASK
    from services.training import registry, runs

    started = time.perf_counter()
    with rt.db.session_scope() as s:
        run_id = registry.new_run(s, task=TASK, trigger="cli", others=[TASK]).id
    outcome = rt.trainer.execute(run_id)
    seconds = round(time.perf_counter() - started, 1)
    if not outcome.promoted:
        with rt.db.session_scope() as s:
            runs.activate(s, version=outcome.version, settings=rt.settings)
    rt.recommender.served.expire()
    m = outcome.metrics
    return {"seconds": seconds, "promoted": outcome.promoted, "ndcg@10": m["ndcg@10"], "items": m["items"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sift_command() -> list[str]:
    """`sift up` of the code this bench belongs to: run with cwd=ROOT, `-m` imports ROOT's services
    (the installed `sift` script would import the checkout the virtual environment was made from)."""
    return [sys.executable, "-m", "services.cli.app", "up"]


def wait_ready(http: Any, proc: subprocess.Popen[bytes], log: Path, limit_s: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if proc.poll() is not None:
            raise SystemExit(f"sift up exited with {proc.returncode} before it was ready:\n{tail(log)}")
        try:
            if http.get("/readyz").status_code == 200:
                return time.monotonic() - started
        except Exception:  # not listening yet
            pass
        time.sleep(0.25)
    raise SystemExit(f"sift up was not ready in {limit_s:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGINT, then wait; SIGTERM and SIGKILL only if it does not stop."""
    started = time.perf_counter()
    how = "SIGINT"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        how = "SIGTERM after SIGINT timed out"
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            how = "SIGKILL after SIGTERM timed out"
            proc.kill()
            proc.wait()
    return {"how": how, "returncode": proc.returncode, "stop_s": round(time.perf_counter() - started, 1)}


def timed_feeds(
    http: Any, requests: Sequence[FeedRequest], checks: Checks | None
) -> tuple[dict[str, list[float]], list[tuple[FeedRequest, int, Any]]]:
    seconds: dict[str, list[float]] = {"all": [], "history": [], "filtered": [], "cold": []}
    answers = []
    for req in requests:
        started = time.perf_counter()
        response = http.get(f"/v1/users/{req.user}/feed", params=req.params())
        took = time.perf_counter() - started
        seconds["all"].append(took)
        seconds[req.bucket].append(took)
        answers.append((req, response.status_code, _body(response)))
    if checks is not None:
        for req, status, body in answers:
            checks.feed(req, status, body)
    return seconds, answers


def _body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def concurrent_feeds(base_url: str, key: str, requests: Sequence[FeedRequest], checks: Checks) -> dict[str, Any]:
    """CLIENTS threads, each with its own httpx.Client and every CLIENTS-th request."""
    results, wall = run_clients(
        base_url, bearer(key), CLIENTS, lambda k, http: timed_feeds(http, requests[k::CLIENTS], None)
    )
    merged: dict[str, list[float]] = {"all": [], "history": [], "filtered": [], "cold": []}
    for result in results:
        assert result is not None
        for key, values in result[0].items():
            merged[key] += values
        for req, status, body in result[1]:
            checks.feed(req, status, body)
    out: dict[str, Any] = {k: percentiles(v, wall if k == "all" else None) for k, v in merged.items() if v}
    out["clients"] = CLIENTS
    return out


@dataclass
class ScaleExtras:
    """What bench/scale.py adds to a run (--scale): similar items from 8 clients, the resident
    memory and disk of `sift up` with this catalogue, and the ingest rate with it stored: new
    product events (templated like the catalogue, other ids) as 100-event requests from 2
    clients, timed until every one is done in SQL."""

    events: list[Any]

    def measure(self, base_url: str, key: str, pid: int, data_dir: Path, similar_ids: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"similar_conc8": concurrent_similar(base_url, key, similar_ids)}
        show(f"similar items, {CLIENTS} clients", out["similar_conc8"])
        status = Path(f"/proc/{pid}/status").read_text()
        mem = {
            line.split(":")[0]: int(line.split()[1]) // 1024
            for line in status.splitlines()
            if line[:6] in ("VmRSS:", "VmHWM:")
        }
        out["rss_mib"], out["peak_rss_mib"] = mem.get("VmRSS"), mem.get("VmHWM")
        out["disk_mib"] = round(sum(f.stat().st_blocks * 512 for f in data_dir.rglob("*") if f.is_file()) / 2**20, 1)
        print(
            f"# sift up RSS {out['rss_mib']} MiB (peak {out['peak_rss_mib']}), data dir {out['disk_mib']} MiB",
            flush=True,
        )
        with phase("socket_ingest"):
            out["ingest"] = ingest_rate(base_url, key, data_dir, self.events)
        print(f"# ingest with the catalogue stored: {json.dumps(out['ingest'])}", flush=True)
        return out


def concurrent_similar(base_url: str, key: str, item_ids: Sequence[str]) -> dict[str, Any]:
    """GET /v1/items/{id}/similar from CLIENTS threads, each with its own client and every CLIENTS-th id."""
    problems: list[str] = []

    def client(k: int, http: Any) -> list[float]:
        seconds = []
        for item in item_ids[k::CLIENTS]:
            started = time.perf_counter()
            response = http.get(f"/v1/items/{item}/similar", params={"limit": 10})
            seconds.append(time.perf_counter() - started)
            if response.status_code != 200 or len(response.json()["items"]) < 10:
                problems.append(f"{item}: {response.status_code}")
        return seconds

    results, wall = run_clients(base_url, bearer(key), CLIENTS, client)
    out: dict[str, Any] = percentiles([x for s in results for x in s], wall)
    out["problems"] = len(problems)
    return out


def ingest_rate(base_url: str, key: str, data_dir: Path, events: Sequence[Any]) -> dict[str, Any]:
    """events as 100-event POST /v1/events from 2 clients; events/s until all are done in SQL."""
    import sqlite3

    import httpx

    bodies = [{"events": [e.model_dump(mode="json") for e in events[i : i + 100]]} for i in range(0, len(events), 100)]
    ids = [e.id for e in events]
    started = time.perf_counter()

    def post(k: int) -> None:
        with httpx.Client(base_url=base_url, headers=bearer(key), timeout=120) as http:
            for body in bodies[k::2]:
                http.post("/v1/events", json=body).raise_for_status()

    threads = [threading.Thread(target=post, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db = sqlite3.connect(f"file:{data_dir / 'sift.db'}?mode=ro", uri=True)
    marks = ",".join("?" * len(ids))
    done = 0
    while time.perf_counter() - started < 1800:
        done = db.execute(f"SELECT count(*) FROM events WHERE status = 'done' AND id IN ({marks})", ids).fetchone()[0]
        if done == len(ids):
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    db.close()
    return {"events": len(ids), "done": done, "seconds": round(seconds, 1), "events_per_s": round(done / seconds, 1)}


def over_socket(
    data_dir: Path,
    requests: tuple[Sequence[FeedRequest], Sequence[FeedRequest]],
    warm: Sequence[FeedRequest],
    rank_jobs: Sequence[tuple[str, list[str]]],
    similar_ids: Sequence[str],
    checks: Checks,
    log: Path,
    profile: bool = False,
    scale: ScaleExtras | None = None,
    cpus: tuple[set[int], set[int]] | None = None,
) -> dict[str, Any]:
    import httpx

    requests, concurrent = requests  # one at a time; from 8 clients (a draw of their own)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update(SIFT_DATA_DIR=str(data_dir), SIFT_PORT=str(port), SIFT_LOG_LEVEL="WARNING", HF_HUB_OFFLINE="1")
    out: dict[str, Any] = {"port": port}
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(sift_command(), env=env, stdout=log_file, stderr=log_file, cwd=ROOT)
        try:
            with httpx.Client(base_url=base_url, timeout=120) as http:
                out["ready_s"] = round(wait_ready(http, proc, log), 1)
                if cpus is not None:
                    out["cpus"] = {"server": pin(proc.pid, cpus[0]), "clients": pin(os.getpid(), cpus[1])}
                key = saved_key(data_dir)
                http.headers.update(bearer(key))
                print(f"# sift up ready in {out['ready_s']:.1f} s (pid {proc.pid}, port {port})", flush=True)
                with phase("socket_warm_up"):
                    _, answers = timed_feeds(http, warm, None)
                    bad = [(r, s, b) for r, s, b in answers if s != 200]
                    if bad:
                        print(f"# warm-up: {len(bad)} non-200 answers, first: {bad[0]}", flush=True)
                with phase("socket_feed_seq"), profiled(proc.pid, "feed_seq", out, profile):
                    t0 = time.perf_counter()
                    seconds, _ = timed_feeds(http, requests, checks)
                    wall = time.perf_counter() - t0
                out["feed_seq"] = {k: percentiles(v, wall if k == "all" else None) for k, v in seconds.items() if v}
                show("feed over socket, 1 at a time", out["feed_seq"]["all"])
                for bucket in ("history", "filtered", "cold"):
                    if bucket in out["feed_seq"]:
                        show(f"  {bucket}", out["feed_seq"][bucket])
            with phase("socket_feed_conc8"), profiled(proc.pid, "feed_conc8", out, profile):
                out["feed_conc8"] = concurrent_feeds(base_url, key, concurrent, checks)
            show(f"feed over socket, {CLIENTS} clients", out["feed_conc8"]["all"])
            with httpx.Client(base_url=base_url, headers=bearer(key), timeout=120) as http:
                with phase("socket_rank"):
                    out["rank_100"] = timed_calls(
                        lambda job: http.post(f"/v1/users/{job[0]}/rank", json={"item_ids": job[1]}),
                        rank_jobs,
                        expect=RANK_ITEMS,
                    )
                show(f"rank {RANK_ITEMS} items, 1 at a time", out["rank_100"])
                with phase("socket_similar"), profiled(proc.pid, "similar", out, profile):
                    out["similar"] = timed_calls(
                        lambda item: http.get(f"/v1/items/{item}/similar", params={"limit": 10}),
                        similar_ids,
                        expect=10,
                        exclude=lambda item, body: item in {x["item_id"] for x in body["items"]},
                    )
                show("similar items, 1 at a time", out["similar"])
            if scale is not None:
                out["scale"] = scale.measure(base_url, key, proc.pid, data_dir, similar_ids)
            cpu = out["server_cpu_s"]
            n = {"feed_seq": len(requests), "feed_conc8": len(requests), "similar": len(similar_ids) + 5}
            out["server_cpu_ms_per_request"] = {k: round(1000 * cpu[k] / n[k], 2) for k in n}
            print(f"# sift up CPU per request (ms, all its threads): {out['server_cpu_ms_per_request']}", flush=True)
        finally:
            out["stop"] = stop(proc)
    text = log.read_text(errors="replace") if log.exists() else ""
    out["log_tracebacks"] = text.count("Traceback")
    out["log_errors"] = sum(" ERROR " in line or " CRITICAL " in line for line in text.splitlines())
    # Celery's worker exits 1 after a warm shutdown on SIGINT (its EX_FAILURE for SIGINT), 0 on SIGTERM.
    print(f"# sift up stopped: {out['stop']}; log: {out['log_tracebacks']} tracebacks, {out['log_errors']} errors")
    if out["stop"]["returncode"] not in (0, 1) or out["log_tracebacks"] or out["log_errors"]:
        print(f"# sift up log tail:\n{tail(log)}", flush=True)
    return out


def pin(pid: int, cpus: set[int]) -> list[int]:
    """Confine every thread of a running process to cpus (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)
    return sorted(cpus)


def cpu_list(text: str) -> set[int]:
    """'1' or '0,1' as a set of CPUs."""
    return {int(c) for c in text.split(",") if c.strip()}


@contextmanager
def profiled(pid: int, name: str, out: dict[str, Any], on: bool) -> Iterator[None]:
    """The CPU seconds `sift up` spent while the block ran (out["server_cpu_s"][name]: its CPU per
    request is what the 2 cores can serve), and py-spy on it (--profile; out["profile"][name])."""
    sampler = request_profile.Sampler(pid) if on else None
    cpu = request_profile.cpu_seconds(pid)
    try:
        yield
    finally:
        out.setdefault("server_cpu_s", {})[name] = round(request_profile.cpu_seconds(pid) - cpu, 2)
        if sampler is not None:
            out.setdefault("profile", {})[name] = summary = sampler.stop()
            request_profile.show(name, summary)


def timed_calls(
    call: Callable[[Any], Any],
    jobs: Sequence[Any],
    *,
    expect: int,
    exclude: Callable[[Any, Any], bool] | None = None,
) -> dict[str, Any]:
    """One call per job, one at a time: latency, non-200 answers, answers shorter than expect."""
    for job in jobs[:5]:
        call(job)
    seconds, problems = [], Counter[str]()
    examples: list[str] = []
    t0 = time.perf_counter()
    for job in jobs:
        started = time.perf_counter()
        response = call(job)
        seconds.append(time.perf_counter() - started)
        body = _body(response)
        problem = None
        if response.status_code != 200:
            problem = f"status_{response.status_code}"
        elif len(body["items"]) < expect:
            problem = "short"
        elif exclude is not None and exclude(job, body):
            problem = "asked_item_returned"
        if problem:
            problems[problem] += 1
            if len(examples) < 5:
                examples.append(f"{problem}: {str(job)[:80]} -> {str(body)[:200]}")
    out: dict[str, Any] = percentiles(seconds, time.perf_counter() - t0)
    out["problems"] = dict(problems)
    out["problem_examples"] = examples
    return out


# -- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--history", type=int, default=30, help="mean interactions per user")
    parser.add_argument("--requests", type=int, default=400, help="feed requests per latency line")
    parser.add_argument("--cache", type=Path, help="keep / reuse the built data dir here")
    parser.add_argument(
        "--vectors",
        type=Path,
        help="encode the distinct texts first in big calls, kept here as .npy (bench/catalogue_vectors.py)",
    )
    parser.add_argument("--build-only", action="store_true", help="build (and --cache) the data dir, then stop")
    parser.add_argument("--keep", type=Path, help="build in this (empty or new) dir and keep it")
    parser.add_argument("--learned", action="store_true", help="then train a recommend model and measure again")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="py-spy on `sift up` per socket phase (by layer)")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=0,
        metavar="N",
        help="N more feeds of other random requests before the clock: a process that has served for a while",
    )
    parser.add_argument(
        "--server-cpus",
        type=cpu_list,
        metavar="LIST",
        help="once ready, confine `sift up` to these CPUs (e.g. 1) and this bench's clients to --client-cpus",
    )
    parser.add_argument("--client-cpus", type=cpu_list, metavar="LIST", help="with --server-cpus (default: the others)")
    parser.add_argument(
        "--scale", type=int, default=0, metavar="N", help="also bench/scale.py's figures, ingesting N new events"
    )
    args = parser.parse_args()
    if args.items < len(CATEGORIES) or args.users < 1 or args.history < 1 or args.requests < 10:
        parser.error(f"need --items >= {len(CATEGORIES)}, --users >= 1, --history >= 1, --requests >= 10")
    started = time.perf_counter()
    cpus = {"cpu_count": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0))}
    print(f"# {args.items} items, {args.users} users, history ~{args.history}, seed {args.seed}; {cpus}", flush=True)

    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep}: not empty")
        args.keep.mkdir(parents=True, exist_ok=True)
        data_dir = args.keep.resolve()
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="sift-bench-recommend-"))
    log = Path(tempfile.mkdtemp(prefix="sift-bench-recommend-log-")) / "sift-up.log"
    results: dict[str, Any] = {}
    try:
        rng = np.random.default_rng(args.seed)
        with phase("generate"):
            cat = catalogue(args.items, rng)
            meta: dict[str, Any] | None = None
            key = cache_key(args)
            if args.cache is not None:
                meta = cache_load(args.cache, key, data_dir)
            now = datetime.fromisoformat(meta["built_at"]) if meta else datetime.now(UTC)
            us = users(args.users, args.history, cat, rng, now)
        distinct = len({e.text for e in cat.events})
        print(
            f"# catalogue: {len(cat.ids)} items ({distinct} distinct texts), {len(cat.by_category)} categories; "
            f"{len(us.ids)} users, {us.total} interactions; e.g. {cat.events[0].text!r}",
            flush=True,
        )
        if meta is not None:
            age_h = (datetime.now(UTC) - now).total_seconds() / 3600
            print(f"# cache hit: {args.cache / key} (built {meta['built_at']}, {age_h:.1f} h ago)", flush=True)
            results["cache"] = {"used": True, "key": key, "built_at": meta["built_at"], "age_h": round(age_h, 1)}
            results["build"] = meta["build"]
            rt = reset_runtime(settings_for(data_dir))
        else:
            results["cache"] = {"used": False, "key": key if args.cache else None}
            rt, results["build"] = build(data_dir, cat, us, now, args.vectors)
        if args.build_only:
            rt.close()
            reset_runtime()
            if args.cache is not None and meta is None:
                with phase("cache_save"):
                    cache_save(args.cache, key, data_dir, {"built_at": now.isoformat(), "build": results["build"]})
            print(json.dumps({"bench": "recommend", **results, "phases_s": PHASES}, default=_plain))
            return

        # the requests, from their own generator so that a cache hit asks the same
        req_rng = np.random.default_rng([args.seed, 1])
        requests = feed_requests(args.requests, us, cat, req_rng, "m")
        warm = feed_requests(WARM_UP, us, cat, req_rng, "w")
        if args.warm_up:  # from their own generator: the measured requests stay those of a run without them
            warm += feed_requests(args.warm_up, us, cat, np.random.default_rng([args.seed, 2]), "s")
        rank_jobs = []
        for _ in range(max(10, args.requests // 2)):
            u = int(req_rng.integers(len(us.ids)))
            own = np.concatenate([cat.by_category[c] for c in us.categories[u]])
            picks = dict.fromkeys(
                int(i) for i in req_rng.choice(own, size=min(RANK_ITEMS // 2, len(own)), replace=False)
            )
            while len(picks) < min(RANK_ITEMS, len(cat.ids)):  # the rest from the whole catalogue
                picks.setdefault(int(req_rng.integers(len(cat.ids))))
            rank_jobs.append((us.ids[u], [cat.ids[i] for i in picks]))
        similar_ids = [cat.ids[int(i)] for i in req_rng.choice(len(cat.ids), size=max(10, args.requests // 2))]

        with phase("in_process_feed"):
            results["in_process_feed"] = in_process_feed(rt, requests, warm)
        show("feed in process, 1 at a time", results["in_process_feed"]["all"])
        for bucket in ("history", "filtered", "cold"):
            if bucket in results["in_process_feed"]:
                show(f"  {bucket}", results["in_process_feed"][bucket])
        if args.learned:
            with phase("recommend_run"):
                results["recommend_run"] = learned_model(rt)
            print(f"# recommend run: {json.dumps(results['recommend_run'])}", flush=True)
            served = rt.recommender.served
            # Alternated, so that a busy machine's drift falls on both: with the model, without, with, without.
            for n, name in enumerate(("learned", "hand_set", "learned_2", "hand_set_2")):
                rt.recommender.served = served if n % 2 == 0 else _NoModel()  # type: ignore[assignment]
                with phase(f"in_process_feed_{name}"):
                    results[f"in_process_feed_{name}"] = in_process_feed(rt, requests, warm)
                show(f"feed in process, {name}, 1 at a time", results[f"in_process_feed_{name}"]["all"])
            rt.recommender.served = served
        rt.close()
        rt._made.clear()  # the model too: `sift up` loads its own
        reset_runtime()
        if args.cache is not None and meta is None:
            with phase("cache_save"):
                cache_save(args.cache, key, data_dir, {"built_at": now.isoformat(), "build": results["build"]})

        checks = Checks(cat, us)
        extras = None
        if args.scale:
            fresh = catalogue(max(args.scale, len(CATEGORIES)), np.random.default_rng([args.seed, 7])).events
            extras = ScaleExtras([e.model_copy(update={"id": f"new-{i}"}) for i, e in enumerate(fresh[: args.scale])])
        concurrent = feed_requests(args.requests, us, cat, np.random.default_rng([args.seed, 3]), "c")
        results["socket"] = over_socket(
            data_dir,
            (requests, concurrent),
            warm,
            rank_jobs,
            similar_ids,
            checks,
            log,
            profile=args.profile,
            scale=extras,
            cpus=cpus_of(args),
        )
        results["checks"] = checks.summary()
        print(f"# checks on every feed answer over the socket: {json.dumps(results['checks'])}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(log.parent, ignore_errors=True)
    PHASES["total"] = round(time.perf_counter() - started, 1)
    p99 = results["socket"]["feed_seq"]["all"]["p99_ms"]
    bar = {"feed_seq_p99_ms": p99, "limit_ms": BAR_P99_MS, "items": args.items, "met": p99 <= BAR_P99_MS}
    print(
        f"# bar: feed p99 one at a time {p99:.2f} ms vs {BAR_P99_MS:.0f} ms at {args.items} items: "
        f"{'met' if bar['met'] else 'NOT met'}",
        flush=True,
    )
    knobs = settings_for(Path(tempfile.gettempdir())).model_dump()
    head = {
        "bench": "recommend",
        "items": args.items,
        "users": args.users,
        "history_mean": args.history,
        "interactions": us.total,
        "seed": args.seed,
        "requests": args.requests,
        "vectors": "real all-MiniLM-L6-v2 embeddings of templated product texts, made by Sift's pipeline",
        "mode": "embedded (SQLite, Qdrant Edge, on-disk broker), `sift up` over a real socket",
        **cpus,
        "code": code_version(),
        "recommend_settings": {k: v for k, v in knobs.items() if k.startswith("recommend_")},
    }
    print(json.dumps({**head, **results, "bar": bar, "phases_s": PHASES}, default=_plain))


def cpus_of(args: argparse.Namespace) -> tuple[set[int], set[int]] | None:
    """(server, clients) CPUs from --server-cpus / --client-cpus, or None: the scheduler decides."""
    if not args.server_cpus:
        return None
    clients = args.client_cpus or (os.sched_getaffinity(0) - args.server_cpus) or args.server_cpus
    return args.server_cpus, clients


def code_version() -> dict[str, Any]:
    """The commit, and whether services/ or worker/ differ from it (the figures are of the working tree)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "services", "worker"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    except OSError:
        return {"commit": None, "dirty": None}
    return {"commit": commit.strip() or None, "services_dirty": bool(dirty.strip())}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


if __name__ == "__main__":
    main()
