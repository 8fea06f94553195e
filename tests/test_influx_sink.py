"""InfluxDB sinks, InfluxQL and the spool writer against real peers: influxd, VictoriaMetrics and a
tiny loopback HTTP server that answers with chosen statuses and Retry-After headers."""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from meterd.config import InfluxConfig
from meterd.normalise.rejects import REJECTS
from meterd.sinks.influx import (
    PermanentWriteError,
    SinkError,
    TransientWriteError,
    parse_retry_after,
)
from meterd.sinks.influx.query import InfluxQL, QueryError
from meterd.sinks.influx.v1 import V1Sink
from meterd.sinks.influx.v2 import V2Sink
from meterd.sinks.influx.writer import SpoolWriter, backoff_delay
from meterd.spool import Spool

T0 = 1_700_000_000_000_000_000


def water(i: int, meter: str = "m1") -> str:
    return f"water,meter={meter} volume_m3={i}.25 {T0 + i * 1_000_000_000}"


def count(cfg: InfluxConfig, measurement: str = "water") -> int:
    series = InfluxQL(cfg).query(f'SELECT count("volume_m3") FROM "{measurement}"')
    return int(series[0]["values"][0][1]) if series else 0


def wait_for(predicate: Any, what: str, timeout_s: float = 60.0) -> None:
    """Poll until ``predicate()``; the deadline only turns a hang into a clear failure."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# -- a tiny real HTTP peer -------------------------------------------------------------------------

class Peer:
    """Answers each request with the next queued (status, headers, body), then 204.

    A stand-in, used only where no real peer can answer: influxd 1.6.7 (Debian's) cannot be
    made to return 503 or 429 with ``Retry-After``, 413, or a v2 ``/query`` (it has no v2 API,
    and VictoriaMetrics has no InfluxQL). Writes and queries themselves are tested against a
    real influxd and VictoriaMetrics below.
    """

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], str]] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                peer.requests.append((self.path, dict(self.headers), raw))
                status, headers, body = peer.replies.pop(0) if peer.replies else (204, {}, "")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


# -- v1 sink and InfluxQL against influxd -----------------------------------------------------------

def test_v1_write_query_and_database_creation(influxd):
    cfg = InfluxConfig(url=influxd.url, database="campus")
    sink = V1Sink(cfg)
    sink.ping()  # creates the database
    sink.write([water(i) for i in range(3)] + [water(i, "m2") for i in range(2)])
    ql = InfluxQL(cfg)
    series = ql.query('SELECT last("volume_m3") FROM "water" GROUP BY "meter"; SHOW MEASUREMENTS')
    assert [(s["name"], s.get("tags")) for s in series] == [
        ("water", {"meter": "m1"}), ("water", {"meter": "m2"}), ("measurements", None)]
    assert series[0]["values"] == [[T0 // 10**9 + 2, 2.25]]  # epoch="s" by default
    with pytest.raises(QueryError, match="error parsing query: found SELEC"):
        ql.query("SELEC nothing")
    with pytest.raises(QueryError, match="retention policy not found: nope"):
        ql.query('SELECT * FROM "nope"."water"')


def test_v1_recreates_a_dropped_database_on_404(influxd):
    cfg = InfluxConfig(url=influxd.url, database="gone")
    sink = V1Sink(cfg)
    sink.ensure_database()
    influxd.query('DROP DATABASE "gone"')
    sink.write([water(1)])
    assert count(cfg) == 1


def test_v1_missing_database_not_created_when_forbidden(influxd):
    cfg = InfluxConfig(url=influxd.url, database="absent", create_database=False)
    sink = V1Sink(cfg)
    with pytest.raises(SinkError, match=r"'absent' does not exist .*create_database is false"):
        sink.ping()
    # The points are not to blame, so they stay in the spool for when the database appears.
    with pytest.raises(TransientWriteError, match="database not found"):
        sink.write([water(1)])


def test_v1_field_type_conflict_is_permanent(influxd):
    sink = V1Sink(InfluxConfig(url=influxd.url, database="conflict"))
    sink.ensure_database()
    sink.write([water(1)])
    with pytest.raises(PermanentWriteError, match="field type conflict"):
        sink.write([f'water,meter=m1 volume_m3="x" {T0}'])


def test_unreachable_server_is_transient_and_ping_says_so():
    cfg = InfluxConfig(url="http://127.0.0.1:9", timeout_s=2)  # discard port: nothing listens
    with pytest.raises(TransientWriteError, match="unreachable") as info:
        V1Sink(cfg).write([water(1)])
    assert info.value.retry_after is None
    with pytest.raises(SinkError, match="unreachable"):
        V1Sink(cfg).ping()


# -- status mapping, Retry-After and credentials against the tiny peer ------------------------------

@pytest.mark.parametrize(("status", "headers", "error", "retry_after"), [
    (503, {"Retry-After": "7"}, TransientWriteError, 7.0),
    (500, {}, TransientWriteError, None),
    (429, {"Retry-After": "120"}, TransientWriteError, 120.0),
    (401, {}, TransientWriteError, None),
    (400, {}, PermanentWriteError, None),
    (413, {}, PermanentWriteError, None),
])
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_status_mapping(peer: Peer, monkeypatch, api, status, headers, error, retry_after):
    monkeypatch.setenv("INFLUX_TOKEN", "tok")
    cfg = InfluxConfig(url=peer.url, api=api, org="o", bucket="b")
    sink = V1Sink(cfg) if api == "v1" else V2Sink(cfg)
    peer.replies.append((status, {"Content-Type": "application/json", **headers},
                         json.dumps({"error": "server says no", "message": "server says no"})))
    with pytest.raises(error, match="server says no") as info:
        sink.write([water(1)])
    if error is TransientWriteError:
        assert info.value.retry_after == retry_after


def test_retry_after_forms():
    now = 1_700_000_000.0
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == 90.0
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_grows_with_jitter_and_honours_retry_after():
    rng = random.Random(1)
    delays = [backoff_delay(n, 300.0, rng=rng) for n in range(1, 15)]
    assert all(0.25 <= d <= 0.5 for d in delays[:1])
    assert all(150.0 <= d <= 300.0 for d in delays[-3:])
    assert len(set(delays)) == len(delays)  # jittered: no two retries in step
    assert backoff_delay(1, 300.0, retry_after=42.0) == 42.0
    assert backoff_delay(1, 300.0, retry_after=3600.0) == 300.0


def test_v1_credentials_from_file_never_logged(peer: Peer, tmp_path: Path, caplog):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-pw\n")
    cfg = InfluxConfig(url=peer.url, username="meterd", password_file=secret)
    peer.replies.append((401, {}, '{"error":"authorization failed"}'))
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientWriteError, match="authorization"):
        V1Sink(cfg).write([water(1)])
    _, headers, body = peer.requests[0]
    assert headers["Authorization"] == requests.auth._basic_auth_str("meterd", "s3cret-pw")
    assert body == water(1).encode()
    assert "s3cret" not in caplog.text


def test_missing_password_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("METERD_INFLUX_PASSWORD", raising=False)
    with pytest.raises(SinkError, match=r"password_file or \$METERD_INFLUX_PASSWORD"):
        V1Sink(InfluxConfig(username="meterd"))


def test_v2_query_uses_token_and_bucket(peer: Peer, monkeypatch):
    monkeypatch.setenv("INFLUX_TOKEN", "tok-123")
    cfg = InfluxConfig(url=peer.url, api="v2", org="o", bucket="meters")
    peer.replies.append((200, {"Content-Type": "application/json"}, json.dumps({"results": [
        {"statement_id": 0, "series": [{"name": "water", "columns": ["time", "v"], "values": [[1, 2]]}]},
        {"statement_id": 1, "error": "measurement not found"}]})))
    with pytest.raises(QueryError, match="measurement not found"):
        InfluxQL(cfg).query("SELECT v FROM water; SELECT v FROM nope")
    path, headers, body = peer.requests[0]
    assert path == "/query" and headers["Authorization"] == "Token tok-123"
    assert b"db=meters" in body


# -- v2 sink against VictoriaMetrics --------------------------------------------------------------

def test_v2_write_lands_in_victoria(victoria, monkeypatch):
    monkeypatch.setenv("INFLUX_TOKEN", "any")
    sink = V2Sink(InfluxConfig(url=victoria.url, api="v2", org="o", bucket="b"))
    sink.ping()
    sink.write([water(i) for i in range(3)])
    victoria.flush()
    r = requests.get(f"{victoria.url}/api/v1/export", params={"match[]": "water_volume_m3"}, timeout=10)
    got = json.loads(r.text)
    assert got["metric"] == {"__name__": "water_volume_m3", "meter": "m1"}
    assert got["values"] == [0.25, 1.25, 2.25]
    assert got["timestamps"] == [T0 // 10**6 + i * 1000 for i in range(3)]


# -- the writer ----------------------------------------------------------------------------------

def test_writer_drops_only_the_rejected_lines(influxd, tmp_path: Path):
    cfg = InfluxConfig(url=influxd.url, database="bisect")
    sink = V1Sink(cfg)
    sink.ensure_database()
    sink.write([water(0)])  # volume_m3 is a float field from now on
    bad = {7: f'water,meter=m1 volume_m3="seven" {T0 + 7}', 15: f'water,meter=m1 volume_m3=t {T0 + 15}'}
    spool = Spool(tmp_path / "spool")
    spool.append([bad.get(i, water(i)) for i in range(1, 21)])
    before = REJECTS.total("write_rejected")
    writer = SpoolWriter(spool, sink, batch_size=100, flush_interval_s=0.05, max_backoff_s=0.2)
    writer.start()
    assert writer.stop(flush=True, timeout_s=60)
    assert REJECTS.total("write_rejected") - before == 2
    assert count(cfg) == 1 + 20 - 2
    spool.close()


def test_writer_survives_an_outage(influxd, tmp_path: Path):
    cfg = InfluxConfig(url=influxd.url, database="outage", timeout_s=2)
    sink = V1Sink(cfg)
    sink.ensure_database()
    spool = Spool(tmp_path / "spool")
    writer = SpoolWriter(spool, sink, batch_size=200, flush_interval_s=0.05, max_backoff_s=0.3)
    writer.start()
    spool.append([water(i) for i in range(500)])
    wait_for(lambda: spool.pending() == 0, "the first points to be written")
    influxd.kill()
    for start in range(500, 1500, 100):
        spool.append([water(i) for i in range(start, start + 100)])
    wait_for(lambda: writer.failures >= 2, "the writer to notice the outage")
    assert spool.pending() > 0
    influxd.start()  # same port, same data directory
    assert writer.stop(flush=True, timeout_s=60)
    assert count(cfg) == 1500
    spool.close()


def test_writer_retries_after_429_and_stop_without_flush_keeps_points(peer: Peer, tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    spool.append([water(i) for i in range(3)])
    peer.replies.append((429, {"Retry-After": "0"}, '{"error":"slow down"}'))
    writer = SpoolWriter(spool, V1Sink(InfluxConfig(url=peer.url)), batch_size=10,
                         flush_interval_s=0.05, max_backoff_s=1.0)
    writer.start()
    wait_for(lambda: spool.pending() == 0, "the retried batch to be delivered")
    assert [body for _, _, body in peer.requests] == [b"\n".join(water(i).encode() for i in range(3))] * 2
    peer.replies.extend([(503, {"Retry-After": "3600"}, "")] * 5)
    spool.append([water(9)])
    assert not writer.stop(flush=False, timeout_s=5)
    assert [line for _, line in spool.peek(10)] == [water(9)]
    spool.close()
