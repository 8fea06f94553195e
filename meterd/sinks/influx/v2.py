"""Write line protocol to InfluxDB 2.x/3.x (or anything serving ``/api/v2/write``) with influxdb-client."""

from __future__ import annotations

import logging

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from meterd.config import InfluxConfig
from meterd.sinks.influx import (
    PermanentWriteError,
    SinkError,
    TransientWriteError,
    parse_retry_after,
)
from meterd.sinks.influx.query import v2_token

log = logging.getLogger("meterd.sinks.influx.v2")


class V2Sink:
    """Synchronous writes to ``bucket`` in ``org`` with a token from ``token_file`` or ``$INFLUX_TOKEN``.

    The client's own retries stay off: the spool writer owns retrying, so a failed batch is retried
    from the spool with backoff instead of blocking inside the client.
    """

    def __init__(self, cfg: InfluxConfig) -> None:
        self.cfg = cfg
        # InfluxConfig's validator guarantees both for api = "v2".
        self.org, self.bucket = str(cfg.org), str(cfg.bucket)
        self.client = InfluxDBClient(url=cfg.url, token=v2_token(cfg), org=self.org,
                                     timeout=int(cfg.timeout_s * 1000), enable_gzip=True,
                                     retries=False)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        """Write ``lines``; raise :class:`TransientWriteError` or :class:`PermanentWriteError`."""
        if not lines:
            return
        what = f"write of {len(lines)} points to {self.cfg.url} bucket {self.cfg.bucket!r}"
        try:
            self.write_api.write(bucket=self.bucket, org=self.org, record=lines,
                                 # the client annotates this as its enum class, but its
                                 # constants are plain strings
                                 write_precision=WritePrecision.NS)  # type: ignore[arg-type]
        except ApiException as exc:
            status = int(exc.status or 0)
            msg = f"{what} failed ({status}): {exc.message}"
            if status in (400, 413, 422):
                raise PermanentWriteError(msg) from None
            raise TransientWriteError(msg, parse_retry_after(exc.retry_after)) from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransientWriteError(f"{what} failed: InfluxDB unreachable: {exc}") from None

    def ping(self) -> None:
        """Raise :class:`SinkError` unless the server answers ``/ping``."""
        if not self.client.ping():
            raise SinkError(f"InfluxDB at {self.cfg.url} does not answer /ping: is it running, "
                            "and is influxdb.url right?")

    def close(self) -> None:
        self.client.close()
