"""Write line protocol to InfluxDB 1.x ``/write`` (also served by 2.x/3.x and VictoriaMetrics)."""

from __future__ import annotations

import gzip
import logging

import requests

from meterd.config import InfluxConfig
from meterd.sinks.influx import (
    PermanentWriteError,
    SinkError,
    TransientWriteError,
    parse_retry_after,
)
from meterd.sinks.influx.query import InfluxQL, QueryError, server_message, v1_auth

log = logging.getLogger("meterd.sinks.influx.v1")

# Batches above this are gzipped: a campus uplink is slower than the CPU spent compressing.
GZIP_MIN_BYTES = 4096


def classify(resp: requests.Response, what: str) -> Exception | None:
    """The error a non-2xx write response stands for, shared by the v1 and v2 paths."""
    if resp.status_code < 300:
        return None
    msg = f"{what} failed ({resp.status_code}): {server_message(resp)}"
    if resp.status_code in (400, 413, 422):
        # The points themselves are at fault (unparsable, field type conflict, too large):
        # resending them unchanged can never succeed.
        return PermanentWriteError(msg)
    # 429 and 5xx are the server's to recover from; 401/403/404 are configuration faults
    # (credentials, a missing database) the operator can fix without the data being lost.
    return TransientWriteError(msg, parse_retry_after(resp.headers.get("Retry-After")))


class V1Sink:
    """POST line protocol to ``{url}/write?db=&rp=&precision=ns`` with basic auth.

    Parameters
    ----------
    cfg
        The ``[influxdb]`` section; the password comes from ``password_file`` or
        ``$METERD_INFLUX_PASSWORD`` and is never logged.
    """

    def __init__(self, cfg: InfluxConfig) -> None:
        self.cfg = cfg
        self.session = requests.Session()
        self.session.auth = v1_auth(cfg)
        self.params = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            self.params["rp"] = cfg.retention_policy
        self._ql = InfluxQL(cfg, self.session)

    def write(self, lines: list[str]) -> None:
        """Write ``lines``; raise :class:`TransientWriteError` or :class:`PermanentWriteError`."""
        if not lines:
            return
        resp = self._post(lines)
        if resp.status_code == 404 and self.cfg.create_database:
            # The database was dropped (or never made) while we ran: make it and try once more.
            try:
                self.ensure_database()
            except SinkError as exc:
                raise TransientWriteError(str(exc)) from None
            resp = self._post(lines)
        err = classify(resp, f"write of {len(lines)} points to {self.cfg.url}")
        if err is not None:
            raise err

    def _post(self, lines: list[str]) -> requests.Response:
        body = "\n".join(lines).encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if len(body) >= GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            return self.session.post(f"{self.cfg.url}/write", params=self.params, data=body,
                                     headers=headers, timeout=self.cfg.timeout_s)
        except requests.RequestException as exc:
            raise TransientWriteError(f"InfluxDB at {self.cfg.url} unreachable: {exc}") from None

    def ping(self) -> None:
        """Raise :class:`SinkError` unless the server answers ``/ping`` and the database is usable."""
        try:
            resp = self.session.get(f"{self.cfg.url}/ping", timeout=self.cfg.timeout_s)
        except requests.RequestException as exc:
            raise SinkError(f"InfluxDB at {self.cfg.url} unreachable: {exc}") from None
        if resp.status_code != 204:
            raise SinkError(f"{self.cfg.url}/ping answered {resp.status_code}, expected 204: "
                            f"is this InfluxDB? {server_message(resp)}")
        self.ensure_database()

    def ensure_database(self) -> None:
        """Create ``database`` when missing and ``create_database`` allows; else a clear error."""
        db = self.cfg.database
        try:
            series = self._ql.query("SHOW DATABASES", db=False)
        except QueryError as exc:
            raise SinkError(f"cannot list databases on {self.cfg.url}: {exc}") from None
        names = {row[0] for s in series for row in s.get("values") or []}
        if db in names:
            return
        if not self.cfg.create_database:
            raise SinkError(f"database {db!r} does not exist on {self.cfg.url} and "
                            "influxdb.create_database is false: create it, or set it to true")
        try:
            self._ql.query(f'CREATE DATABASE "{_quote(db)}"', db=False)
        except QueryError as exc:
            user = self.cfg.username or "the anonymous user"
            raise SinkError(f"database {db!r} does not exist on {self.cfg.url} and {user} may not "
                            f"create it ({exc}); create it as an admin or grant the right") from None
        log.info("created InfluxDB database %r on %s", db, self.cfg.url)

    def close(self) -> None:
        self.session.close()


def _quote(identifier: str) -> str:
    return identifier.replace("\\", "\\\\").replace('"', '\\"')
