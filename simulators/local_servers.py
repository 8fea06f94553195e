"""Start real InfluxDB 1.x, Mosquitto and VictoriaMetrics processes on free loopback ports.

Used by the test fixtures and the demo: each server gets its own temporary directory and is
bound to 127.0.0.1 only. The binaries are Debian's (``influxdb``, ``mosquitto``,
``victoria-metrics``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists()
                                    else None)
    if path is None:
        raise RuntimeError(f"{binary} not found: install the Debian package '{package}'")
    return path


class LocalServer:
    """A child process with a data directory, that can be stopped, killed and started again."""

    name = "server"

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"meterd-{self.name}-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> None:
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.workdir / (self.name + '.log')}")
            if self.ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready within {timeout_s}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class InfluxServer(LocalServer):
    """InfluxDB 1.x (``influxd``) with HTTP on a free port; ``url`` is its base URL."""

    name = "influxd"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.rpc_port = free_port()
        d = self.workdir
        (d / "influxdb.conf").write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "10s"
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[logging]
  level = "warn"
""")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [_require("influxd", "influxdb"), "-config", str(self.workdir / "influxdb.conf")]

    def ready(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        return False

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL and return the first statement's series (empty list when none)."""
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        r = requests.post(f"{self.url}/query", params=params, timeout=30)
        r.raise_for_status()
        result = r.json()["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        return list(result.get("series", []))


class MosquittoServer(LocalServer):
    """Mosquitto 2.x with persistence and an unlimited offline queue; ``port`` is its TCP port."""

    name = "mosquitto"

    def __init__(self, workdir: Path | None = None, listener: str = "allow_anonymous true") -> None:
        """``listener`` holds the listener's options (TLS files, auth); anonymous by default."""
        super().__init__(workdir)
        (self.workdir / "mosquitto.conf").write_text(f"""
# As root, mosquitto would drop to the 'mosquitto' user, which cannot write the private temp dir,
# and silently run without persistence. Without root this line has no effect.
user root
listener {self.port} 127.0.0.1
{listener}
persistence true
persistence_location {self.workdir}/
autosave_interval 60
max_queued_messages 0
max_inflight_messages 0
log_dest file {self.workdir}/broker.log
""")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [_require("mosquitto", "mosquitto"), "-c", str(self.workdir / "mosquitto.conf")]

    def ready(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0


class VictoriaMetricsServer(LocalServer):
    """VictoriaMetrics single-node: accepts influxdb-client's ``/api/v2/write``."""

    name = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [_require("victoria-metrics", "victoria-metrics"),
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.workdir}/data", "-loggerLevel=ERROR",
                "-search.disableCache", "-retentionPeriod=100y"]

    def ready(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{self.url}/health", timeout=0.5).status_code == 200
        return False

    def flush(self) -> None:
        """Make recent writes visible to queries (VictoriaMetrics buffers them for a second)."""
        requests.get(f"{self.url}/internal/force_flush", timeout=10)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
