"""`sift` commands as a person runs them: ingest a file (JSONL or CSV), refuse a bad one with
exit code 2 and nothing written, print the settings with secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa


def sift(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    base.update(SIFT_DATA_DIR=str(data_dir), SIFT_LOG_LEVEL="WARNING", **env)
    return subprocess.run(
        [sys.executable, "-m", "services.cli.app", *args], env=base, capture_output=True, text=True, timeout=120
    )


def rows(data_dir: Path) -> dict[str, int]:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sift.db'}")
    with engine.connect() as conn:
        out = dict(conn.execute(sa.text("SELECT status, count(*) FROM events GROUP BY status")).all())
    engine.dispose()
    return {str(k): int(v) for k, v in out.items()}


def test_ingest_jsonl_and_csv_with_a_summary(data_dir: Path, tmp_path: Path) -> None:
    assert sift(data_dir, "db", "upgrade").returncode == 0
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"id": f"j{i}", "kind": "news", "text": f"shares up {i}%"}) for i in range(30))
    )
    done = sift(data_dir, "ingest", str(jsonl), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "file": str(jsonl),
        "events": 30,
        "queued": 30,
        "unchanged": 0,
        "not_enqueued": 0,
    }
    csv_file = tmp_path / "tickets.csv"
    csv_file.write_text("text,category\nmy card is lost,lost_card\nwhere is my refund,refund\n")
    kindless = sift(data_dir, "ingest", str(csv_file))
    assert kindless.returncode == 2 and kindless.stderr.count("--kind") == 1, kindless.stderr  # said once
    done = sift(data_dir, "ingest", str(csv_file), "--kind", "ticket")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{csv_file}: 2 events, 2 queued"  # a line for people
    assert rows(data_dir) == {"queued": 32}
    again = sift(data_dir, "ingest", str(jsonl), "--json")  # idempotent: nothing new
    assert json.loads(again.stdout)["unchanged"] == 30 and rows(data_dir) == {"queued": 32}


def test_a_bad_file_exits_2_names_the_lines_and_writes_nothing(data_dir: Path, tmp_path: Path) -> None:
    assert sift(data_dir, "db", "upgrade").returncode == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "kind": "ticket", "text": "fine"}),
                json.dumps({"id": "b", "kind": "tweet", "text": "unknown kind"}),
                "{not json",
                json.dumps({"id": "a", "kind": "ticket", "text": "same id again"}),
                json.dumps({"id": "c", "kind": "ticket", "text": ""}),
            ]
        )
    )
    result = sift(data_dir, "ingest", str(bad))
    assert result.returncode == 2
    for expected in ("line 2: kind", "line 3: not valid JSON", "line 4: id 'a' already on line 1", "line 5: text"):
        assert expected in result.stderr
    assert "nothing was written" in result.stderr
    assert rows(data_dir) == {}
    missing = sift(data_dir, "ingest", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_config_masks_secrets(data_dir: Path) -> None:
    shown = sift(
        data_dir,
        "config",
        SIFT_DATABASE_URL="postgresql://u:s3cret@db/x",
        SIFT_API_KEYS="key-123",
        SIFT_QDRANT_URL="https://u:qpass@q:6333/?api_key=qkey",
        COLUMNS="300",
    )
    assert shown.returncode == 0
    assert not any(s in shown.stdout for s in ("s3cret", "key-123", "qpass", "qkey")), shown.stdout
    assert "SIFT_BATCH_SIZE" in shown.stdout and "********" in shown.stdout


def test_a_command_on_a_data_dir_never_upgraded_says_how_to_fix_it(data_dir: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("text,category\nwhere is my card,card_arrival\n")
    before = sift(data_dir, "labels", "import", str(labels), "--task", "intent", "--label-column", "category")
    assert before.returncode == 1 and "run `sift db upgrade`" in before.stderr, before.stderr
    assert sift(data_dir, "db", "upgrade").returncode == 0
    after = sift(data_dir, "labels", "import", str(labels), "--task", "intent", "--label-column", "category")
    assert after.returncode == 0, after.stderr


def test_labels_import_train_and_rollback_from_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    assert sift(data_dir, "db", "upgrade").returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nwhere is my card,card_arrival\n,refund\n")
    refused = sift(data_dir, "labels", "import", str(bad), "--task", "intent", "--label-column", "category")
    assert refused.returncode == 2 and "line 3" in refused.stderr
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"text": "hi", "task": "nope", "label": "x"}) + "\n")
    refused = sift(data_dir, "labels", "import", str(unknown))
    assert refused.returncode == 2 and "unknown task 'nope'" in refused.stderr
    assert rows(data_dir) == {}

    good = tmp_path / "labels.csv"
    lines = [f"my card {w} has not arrived,card_arrival" for w in "abcdefgh"]
    lines += [f"refund the {w} I sent back,refund" for w in "abcdefgh"]
    good.write_text("text,category\n" + "\n".join(lines) + "\n")
    no_column = sift(data_dir, "labels", "import", str(good), "--task", "intent")
    assert no_column.returncode == 2 and no_column.stderr.count("--label-column") == 1, no_column.stderr
    done = sift(data_dir, "labels", "import", str(good), "--task", "intent", "--label-column", "category", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["written"] == 16

    # With fine-tuning (tiny: a few steps), so stdout must still hold nothing but the JSON result.
    trained = sift(
        data_dir,
        "train",
        "--task",
        "intent",
        "--json",
        SIFT_TRAIN_FINE_TUNE_MIN_LABELS="4",
        SIFT_TRAIN_MIN_EXAMPLES_SEEN="40",
    )
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)[0]
    assert result["promoted"] and result["metrics"]["fine_tune"]["examples"] > 0
    # 8 labels per intent are few: every label trains (no holdout), and the estimate says it is a k-fold one.
    assert result["metrics"]["holdout"] == 0 and result["metrics"]["estimate"]["trained_on_every_label"]
    assert len(result["metrics"]["folds"]) == 5 and result["metrics"]["baseline"]["n"] == 16
    assert result["reindex_job"] is not None  # a new encoder: its vectors go to a new collection first
    listed = sift(data_dir, "models", "list", COLUMNS="250")
    assert result["version"] in listed.stdout and "reindexing" in listed.stdout  # active once re-indexed
    assert sift(data_dir, "models", "activate", "no-such-version").returncode == 2
    assert sift(data_dir, "train", "--task", "nope").returncode == 2


def test_watchlist_import_and_alerts_from_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    assert sift(data_dir, "db", "upgrade").returncode == 0
    good = tmp_path / "watch.csv"
    good.write_text("entity,name,ticker,aliases\nACME,Acme Corporation,ACME,Acme|Acme Corp\nNOK,Nokia,NOK,\n")
    done = sift(data_dir, "watchlist", "import", str(good), "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"file": str(good), "entities": 2}, done.stderr
    bad = tmp_path / "watch.jsonl"
    bad.write_text('{"entity": "X", "name": "X", "rules": {"nope": {}}}\n{"name": ""}\n')
    refused = sift(data_dir, "watchlist", "import", str(bad))
    assert refused.returncode == 2 and "line 1: rules" in refused.stderr and "line 2" in refused.stderr
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sift.db'}")
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM watchlist")) == 2
    engine.dispose()
    shown = sift(data_dir, "alerts")
    assert shown.returncode == 0 and "entity" in shown.stdout
    assert sift(data_dir, "alerts", "--state", "bogus").returncode == 2


def test_a_command_prints_no_library_lines_unless_asked(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update(SIFT_DATA_DIR=str(data_dir))
    run = [sys.executable, "-m", "services.cli.app"]
    quiet = subprocess.run([*run, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and "alembic" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([*run, "--verbose", "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert loud.returncode == 0 and "alembic" in loud.stderr  # asked for: the migration steps are shown


def test_reprocess_names_what_it_needs_and_leaves_queued_events_alone(data_dir: Path, tmp_path: Path) -> None:
    assert sift(data_dir, "db", "upgrade").returncode == 0
    events = tmp_path / "tickets.jsonl"
    events.write_text("\n".join(json.dumps({"id": f"t{i}", "kind": "ticket", "text": f"card {i}"}) for i in range(3)))
    assert sift(data_dir, "ingest", str(events)).returncode == 0
    nothing = sift(data_dir, "reprocess")
    assert nothing.returncode == 2 and "name the events" in nothing.stderr, nothing.stderr
    queued = sift(data_dir, "reprocess", "--kind", "ticket", "--no-wait", "--json")
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout) == {"matched": 3, "queued": 0, "in_flight": 3}  # already on their way
