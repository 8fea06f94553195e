"""Fixtures that start real servers (InfluxDB 1.x, Mosquitto, VictoriaMetrics) on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.local_servers import InfluxServer, MosquittoServer, VictoriaMetricsServer

REPO = Path(__file__).resolve().parent.parent
DAIAD = REPO.parent / "shared" / "data" / "daiad" / "swm_trialA.zip"


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[InfluxServer]:
    (tmp_path / "influxd").mkdir()
    server = InfluxServer(tmp_path / "influxd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    (tmp_path / "mosquitto").mkdir()
    server = MosquittoServer(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    (tmp_path / "vm").mkdir()
    server = VictoriaMetricsServer(tmp_path / "vm")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client_id() -> str:
    """A unique MQTT client id: two clients sharing one id disconnect each other."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def daiad_zip() -> Path:
    if not DAIAD.exists():
        pytest.skip(f"DAIAD data not found at {DAIAD} (shared/ is not beside this checkout)")
    return DAIAD
