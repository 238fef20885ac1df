from __future__ import annotations

from pathlib import Path

import pytest

from services.config import Settings


def test_embedded_defaults_need_no_server(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'sift.db'}"
    assert s.celery_broker_url == "filesystem://"
    assert s.embedded_vectors
    assert Path(s.model_path, "config.json").is_file()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIFT_DATABASE_URL", "postgresql+psycopg://u:pw@db/sift")
    monkeypatch.setenv("SIFT_BATCH_SIZE", "64")
    monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.sqlalchemy_url == "postgresql+psycopg://u:pw@db/sift"
    assert s.batch_size == 64
    assert s.data_dir == tmp_path.resolve()


def test_masked_hides_secrets_and_passwords(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, database_url="postgresql://user:hunter2@db/sift", api_keys="k1,k2")
    shown = s.masked()
    assert "hunter2" not in str(shown)
    assert "k1" not in str(shown)
    assert shown["SIFT_API_KEYS"] == "********"
    assert shown["SIFT_DATABASE_URL"] == "postgresql://user:********@db/sift"


def test_masked_hides_a_secret_wherever_it_appears(tmp_path: Path) -> None:
    s = Settings(
        data_dir=tmp_path,
        database_url="postgresql://sift:pw1@db/sift?sslmode=require&password=pw2",
        broker_url="redis://:pw3@redis:6379/0",
        qdrant_url="https://reader:pw4@qdrant:6333/?api_key=pw5&timeout=5",
        api_url="http://127.0.0.1:8000/?token=pw6",
    )
    shown = s.masked()
    for secret in ("pw1", "pw2", "pw3", "pw4", "pw5", "pw6"):
        assert secret not in str(shown), secret
    assert shown["(vectors)"] == "https://reader:********@qdrant:6333/?api_key=********&timeout=5"
    assert shown["(database)"] == "postgresql://sift:********@db/sift?sslmode=require&password=********"
    assert shown["(broker)"] == "redis://:********@redis:6379/0"
    assert Settings(data_dir=tmp_path).masked()["(database)"] == f"sqlite:///{tmp_path / 'sift.db'}"


def test_production_refuses_development_defaults(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        Settings(data_dir=tmp_path, env="production").check_secrets()
    for name in ("SIFT_DATABASE_URL", "SIFT_BROKER_URL", "SIFT_QDRANT_URL"):  # all in one message
        assert name in str(refused.value)
    with pytest.raises(ValueError) as one:
        Settings(
            data_dir=tmp_path, env="production", database_url="postgresql://db/x", qdrant_url="http://q"
        ).check_secrets()
    assert "SIFT_BROKER_URL" in str(one.value) and "SIFT_DATABASE_URL" not in str(one.value)
    Settings(
        data_dir=tmp_path,
        env="production",
        database_url="postgresql://db/x",
        broker_url="redis://r",
        qdrant_url="http://q",
    ).check_secrets()
    Settings(data_dir=tmp_path).check_secrets()  # development: the embedded defaults are fine


def test_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="batch_size"):
        Settings()


def test_worker_children_share_the_cores_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from services import config

    monkeypatch.setattr(config, "usable_cores", lambda: 16)
    settings = Settings()
    assert settings.threads_for_this_process() == 16
    assert settings.threads_per_process(4) == 4 and settings.threads_per_process(32) == 1
    assert Settings(torch_threads=3).threads_per_process(4) == 3  # SIFT_TORCH_THREADS wins
