"""Helpers for end-to-end tests that run ``meterd run`` as a real subprocess."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from simulators.local_servers import InfluxServer

REPO = Path(__file__).resolve().parent.parent
METERD = str(REPO / ".venv" / "bin" / "meterd")


def write_config(tmp: Path, influx: InfluxServer, body: str, *, client_id: str = "meterd-e2e",
                 mqtt_url: str | None = None) -> Path:
    """A config for ``influx`` with an optional [mqtt] section, a spool under ``tmp`` and ``body``."""
    mqtt = f'[mqtt]\nurl = "{mqtt_url}"\nclient_id = "{client_id}"\n' if mqtt_url else ""
    cfg = tmp / "meterd.toml"
    cfg.write_text(f"""
[site]
timezone = "Asia/Shanghai"
[influxdb]
url = "{influx.url}"
database = "campus"
max_backoff_s = 2.0
flush_interval_s = 0.2
[spool]
dir = "{tmp / 'spool'}"
[metrics]
enabled = false
{mqtt}
{body}""")
    return cfg


def start_meterd(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([METERD, "-v", "run", "-c", str(cfg)], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def count(influx: InfluxServer, select: str) -> int:
    """``SELECT count(...) FROM ...`` as an int; -1 while the server or database is not there."""
    try:
        series = influx.query(f"SELECT {select}", db="campus")
    except Exception:
        return -1
    return int(series[0]["values"][0][1]) if series else 0
