"""The deployment files are consistent with each other and with meterd, and the ones that can run
here do: the systemd unit passes ``systemd-analyze verify`` and the Mosquitto config keeps queued
messages of an offline persistent session across a broker restart.

docker-compose.yml cannot run here (no Docker): it is checked as YAML, for the files it mounts and
for ports that match what meterd's compose config listens on.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from meterd.cli import build_parser
from meterd.config import load_config
from simulators.local_servers import MosquittoServer

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _directives(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key] = value.strip()
    return out


def _assert_is_meterd_run(argv: list[str]) -> None:
    assert Path(argv[0]).name == "meterd", argv
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and str(args.config) == "/etc/meterd/meterd.toml"


# ----------------------------------------------------------------------------- docker-compose


def test_compose_has_the_stack_and_mounts_files_that_exist() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"influxdb", "mosquitto", "meterd", "prometheus", "grafana"}
    assert services["influxdb"]["image"] == "influxdb:1.8"
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in doc["volumes"], f"{name}: named volume {source} not declared"
            assert target.startswith("/")
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    build = services["meterd"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()


def test_compose_meterd_keeps_its_spool_and_reaches_the_services() -> None:
    meterd = compose()["services"]["meterd"]
    mounts = dict(m.split(":")[1::-1] for m in meterd["volumes"])
    assert not mounts["/var/lib/meterd"].startswith("."), "the spool needs a named volume"
    cfg = load_config(DEPLOY / mounts["/etc/meterd/meterd.toml"])
    assert cfg.spool.dir == Path("/var/lib/meterd")
    assert urlsplit(cfg.influxdb.url).hostname == "influxdb"
    assert cfg.mqtt is not None and urlsplit(cfg.mqtt.url).hostname == "mosquitto"
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"meterd:{cfg.metrics.port}"] and cfg.metrics.host == "0.0.0.0"
    assert f"EXPOSE {cfg.metrics.port}" in (DEPLOY / "Dockerfile").read_text()


def test_grafana_provisioning_matches_compose_and_dashboards() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(m.split(":")[:2] for m in grafana["volumes"])
    prov = DEPLOY / mounts["./grafana/provisioning"].replace("/etc/grafana/provisioning",
                                                             "grafana/provisioning")
    sources = yaml.safe_load((prov / "datasources/meterd.yml").read_text())["datasources"]
    by_uid = {s["uid"]: s for s in sources}
    assert set(by_uid) == {"meterd-influxdb", "meterd-prometheus"}
    assert by_uid["meterd-influxdb"]["jsonData"]["dbName"] == "campus"
    assert urlsplit(by_uid["meterd-influxdb"]["url"]).hostname == "influxdb"
    provider = yaml.safe_load((prov / "dashboards/meterd.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == mounts["../dashboards"]
    used = {p["datasource"]["uid"] for f in (REPO / "dashboards").glob("*.json")
            for p in json.loads(f.read_text())["panels"]}
    assert used == set(by_uid)


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_runs_meterd_in_exec_form() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instr = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in text.splitlines()
             if ln and not ln.startswith(("#", " "))}
    # exec form (JSON arrays) so meterd is PID 1 and gets docker stop's SIGTERM.
    _assert_is_meterd_run(json.loads(instr["ENTRYPOINT"]) + json.loads(instr["CMD"]))
    assert instr["VOLUME"] == '["/var/lib/meterd"]' and instr["USER"] == "meterd"
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert src.endswith("*") or (REPO / src).exists(), src


# ----------------------------------------------------------------------------- systemd


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "meterd.service")
    return unit


def test_systemd_unit_runs_meterd_with_a_state_directory() -> None:
    svc = _unit()["Service"]
    _assert_is_meterd_run(shlex.split(svc["ExecStart"]))
    assert svc["Restart"] == "on-failure"
    assert svc["StateDirectory"] == "meterd"
    # The daemon's SIGTERM flush must fit before systemd's SIGKILL.
    from meterd.daemon import FLUSH_TIMEOUT_S

    assert float(svc["TimeoutStopSec"]) > FLUSH_TIMEOUT_S


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    meterd = shutil.which("meterd", path=str(REPO / ".venv/bin"))
    if analyze is None or meterd is None:
        pytest.skip("needs systemd-analyze and .venv/bin/meterd")
    unit = tmp_path / "meterd.service"
    unit.write_text((DEPLOY / "meterd.service").read_text()
                    .replace("/usr/local/bin/meterd", meterd))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


# ----------------------------------------------------------------------------- Mosquitto


def test_mosquitto_conf_is_loopback_persistent_and_unlimited() -> None:
    conf = _directives(DEPLOY / "mosquitto.conf")
    assert conf["listener"] == "1883 127.0.0.1"
    assert conf["persistence"] == "true"
    assert conf["max_queued_messages"] == "0"
    docker = _directives(DEPLOY / "mosquitto.docker.conf")
    same = {k for k in conf if k not in ("listener", "persistence_location")}
    assert {k: docker[k] for k in same} == {k: conf[k] for k in same}


def _sub(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5",
                           "-i", "meterd-test", "-c", "-x", "3600", "-q", "1", "-t", "m/#", *args],
                          capture_output=True, text=True, timeout=30)


def test_mosquitto_conf_keeps_queued_messages_across_a_restart(tmp_path: Path) -> None:
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("needs mosquitto-clients")
    (tmp_path / "mq").mkdir()
    broker = MosquittoServer(tmp_path / "mq")
    # The deployed settings, with only the port and the data directory moved for the test.
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = conf.replace("listener 1883 127.0.0.1", f"listener {broker.port} 127.0.0.1")
    conf = conf.replace("/var/lib/mosquitto/", f"{tmp_path / 'mq'}/")
    if os.geteuid() == 0:
        # As root Mosquitto switches to user "mosquitto", who cannot enter pytest's 0700 tmp dirs
        # and so could not save its database; on a real host /var/lib/mosquitto is its own.
        conf += "\nuser root\n"
    (tmp_path / "mq" / "mosquitto.conf").write_text(conf)
    broker.start()
    try:
        assert _sub(broker.port, "-E").returncode == 0  # a persistent session, then away
        lines = "\n".join(f"reading {i}" for i in range(1200)) + "\n"
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                        "-t", "m/w1", "-l"], input=lines, text=True, check=True, timeout=30)
        broker.stop()  # SIGTERM: the broker saves its persistence file
        broker.start()
        got = _sub(broker.port, "-C", "1200", "-W", "20")
    finally:
        broker.stop()
    # 1200 is beyond Mosquitto's default queue of 1000: nothing may be dropped.
    assert got.stdout.splitlines() == lines.splitlines()
