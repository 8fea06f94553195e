"""Fixtures that start real servers (InfluxDB 1.x, Mosquitto, VictoriaMetrics) on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from simulators.local_servers import InfluxServer, LocalServer, MosquittoServer, VictoriaMetricsServer

S = TypeVar("S", bound=LocalServer)

REPO = Path(__file__).resolve().parent.parent
DAIAD = REPO.parent / "shared" / "data" / "daiad" / "swm_trialA.zip"


def _running(server_cls: type[S], workdir: Path) -> Iterator[S]:
    """Start ``server_cls`` in its own directory; the context manager stops it whatever happens."""
    workdir.mkdir()
    with server_cls(workdir) as server:
        yield server


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[InfluxServer]:
    yield from _running(InfluxServer, tmp_path / "influxd")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    yield from _running(MosquittoServer, tmp_path / "mosquitto")


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    yield from _running(VictoriaMetricsServer, tmp_path / "vm")


@pytest.fixture
def client_id() -> str:
    """A unique MQTT client id: two clients sharing one id disconnect each other."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def daiad_zip() -> Path:
    if not DAIAD.exists():
        pytest.skip(f"DAIAD data not found at {DAIAD} (shared/ is not beside this checkout)")
    return DAIAD
