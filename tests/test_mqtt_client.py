"""MqttSource against a real mosquitto: exact landing, rejections, persistent sessions, manual acks, TLS.

Messages are published with the ``mosquitto_pub`` CLI, as a device or gateway would.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from meterd.config import Config, ConfigError, parse_config
from meterd.normalise.rejects import REJECTS
from meterd.reading import Reading
from meterd.sources.mqtt.client import MqttSource
from meterd.sources.mqtt.payload import parse_payload
from simulators.local_servers import MosquittoServer

WATER_TOPIC = "campus/north/water/w-1"
TASMOTA_TOPIC = "tele/sml-1/SENSOR"
T0 = 1_700_000_000
WAIT_S = 20.0  # generous guard against hangs; no assertion depends on how fast anything is


class Collector:
    """A submit() that records readings; the first ``fail_first`` calls raise like a full spool."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.readings: list[Reading] = []
        self._cond = threading.Condition()

    def __call__(self, readings: list[Reading]) -> None:
        with self._cond:
            self.calls += 1
            self._cond.notify_all()
            if self.calls <= self.fail_first:
                raise OSError("spool full (test)")
            self.readings.extend(readings)
            self._cond.notify_all()

    def wait_readings(self, n: int) -> list[Reading]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.readings) >= n, WAIT_S), (
                f"got {len(self.readings)} of {n} readings")
            return sorted(self.readings, key=lambda r: (r.meter, r.ts_ns))

    def wait_calls(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.calls >= n, WAIT_S)


def make_cfg(url: str, client_id: str, **mqtt: Any) -> Config:
    return parse_config({
        "site": {"timezone": "Asia/Shanghai"},
        "mqtt": {"url": url, "client_id": client_id, **mqtt},
        "meters": [
            {"id": "w-1", "kind": "water", "campus": "north", "mqtt_topic": WATER_TOPIC},
            {"id": "e-tas", "kind": "electricity", "mqtt_topic": TASMOTA_TOPIC,
             "mqtt_map": {"SML.Total_in": "energy_kwh", "SML.Power_curr": "power_kw"},
             "mqtt_scale": {"power_kw": 0.001}, "mqtt_ts_key": "Time"},
        ],
    })


def mosquitto_pub(port: int, topic: str, *args: str, stdin: bytes | None = None) -> None:
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    *args], input=stdin, check=True, timeout=WAIT_S)


def publish(port: int, topic: str, lines: list[str], *extra: str) -> None:
    """QoS 1, one message per line (``mosquitto_pub -l``), in order."""
    mosquitto_pub(port, topic, "-l", *extra, stdin="\n".join(lines).encode() + b"\n")


def water(ts_ns: int, volume: float) -> Reading:
    return Reading(measurement="water", tags={"meter": "w-1", "campus": "north"},
                   fields={"volume_m3": volume}, ts_ns=ts_ns, meter="w-1")


def start(cfg: Config, submit: Collector, **options: Any) -> MqttSource:
    source = MqttSource(cfg, submit, retry_initial_s=0.05, retry_max_s=0.2, **options)
    source.start()
    assert source.ready.wait(WAIT_S), "never connected and subscribed"
    return source


@pytest.fixture
def running(mosquitto: MosquittoServer, client_id: str) -> Iterator[tuple[MqttSource, Collector]]:
    got = Collector()
    source = start(make_cfg(mosquitto.url, client_id), got)
    yield source, got
    source.stop()


def messages_total(result: str) -> float:
    return REGISTRY.get_sample_value("meterd_mqtt_messages_total", {"result": result}) or 0.0


def test_epoch_and_rfc3339_single_and_batched_land_exactly(
        mosquitto: MosquittoServer, running: tuple[MqttSource, Collector]) -> None:
    _, got = running
    publish(mosquitto.port, WATER_TOPIC, [
        f'{{"ts": {T0}, "volume_m3": 100.25}}',
        f'{{"ts": {T0 + 60}.123456789, "volume_m3": 100.5}}',
        '{"ts": "2023-11-14T22:15:20.000000007Z", "volume_m3": 100.75}',
        '[{"ts": "2023-11-15T06:16:20+08:00", "volume_m3": 101},'
        f' {{"ts": {T0 + 240}, "volume_m3": 101.125}}]',
    ])
    publish(mosquitto.port, TASMOTA_TOPIC, [
        '{"Time": "2024-03-01T08:00:05", "SML": {"Total_in": 51234.5678, "Power_curr": 1520}}'])
    assert got.wait_readings(6) == [
        Reading(measurement="electricity", tags={"meter": "e-tas"},
                fields={"energy_kwh": 51234.5678, "power_kw": 1.52},
                ts_ns=1_709_251_205 * 10**9, meter="e-tas"),
        water(T0 * 10**9, 100.25),
        water((T0 + 60) * 10**9 + 123_456_789, 100.5),
        water((T0 + 120) * 10**9 + 7, 100.75),
        water((T0 + 180) * 10**9, 101.0),
        water((T0 + 240) * 10**9, 101.125),
    ]


def test_malformed_messages_are_rejected_counted_and_good_ones_around_them_arrive(
        mosquitto: MosquittoServer, running: tuple[MqttSource, Collector], tmp_path: Path) -> None:
    _, got = running
    before = dict(REJECTS.counts)
    rejected_before, partial_before = messages_total("rejected"), messages_total("partial")
    binary = tmp_path / "latin1.bin"
    binary.write_bytes(b'{"volume_m3": 1, "note": "caf\xe9"}')
    publish(mosquitto.port, WATER_TOPIC, [
        f'{{"ts": {T0}, "volume_m3": 0}}',
        "not json at all",
        f'{{"ts": {T0 + 1}, "volume_m3": "12,5"}}',
        f'{{"ts": {T0 + 2}, "volume_m3": 2}}',
        f'[{{"ts": {T0 + 3}, "volume_m3": -1}}, {{"ts": {T0 + 4}, "volume_m3": 4}}]',
        f'{{"ts": {T0 + 5}, "volume_m3": 5, "pressure_bar": 3}}',
    ])
    mosquitto_pub(mosquitto.port, WATER_TOPIC, "-f", str(binary))
    publish(mosquitto.port, WATER_TOPIC, [f'{{"ts": {T0 + 6}, "volume_m3": 6}}'])

    assert got.wait_readings(5) == [water((T0 + i) * 10**9, float(i)) for i in (0, 2, 4, 5, 6)]
    delta = {k[1]: n - before.get(k, 0) for k, n in REJECTS.counts.items()
             if k[0] == "mqtt" and n != before.get(k, 0)}
    assert delta == {"non_json": 1, "non_numeric": 1, "negative_cumulative": 1,
                     "unknown_field": 1, "non_utf8": 1}
    assert messages_total("rejected") - rejected_before == 3
    assert messages_total("partial") - partial_before == 2


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_published_while_stopped_arrive_after_restart(
        mosquitto: MosquittoServer, client_id: str, protocol: str) -> None:
    cfg = make_cfg(mosquitto.url, client_id, protocol=protocol)
    first = Collector()
    source = start(cfg, first)
    publish(mosquitto.port, WATER_TOPIC, [f'{{"ts": {T0}, "volume_m3": 1}}'])
    first.wait_readings(1)
    source.stop()

    publish(mosquitto.port, WATER_TOPIC, [f'{{"ts": {T0 + i}, "volume_m3": {i}}}'
                                          for i in range(2, 5)])
    second = Collector()
    source = start(cfg, second)
    try:
        assert second.wait_readings(3) == [water((T0 + i) * 10**9, float(i)) for i in range(2, 5)]
    finally:
        source.stop()
    assert first.readings == [water(T0 * 10**9, 1.0)]


def test_session_survives_a_broker_restart_and_the_source_reconnects(
        tmp_path: Path, client_id: str) -> None:
    mosquitto = MosquittoServer(tmp_path)
    mosquitto.start()
    cfg = make_cfg(mosquitto.url, client_id)
    start(cfg, Collector()).stop()
    publish(mosquitto.port, WATER_TOPIC, [f'{{"ts": {T0}, "volume_m3": 1}}'])
    mosquitto.stop()  # SIGTERM: mosquitto writes its persistence file
    mosquitto.start()
    got = Collector()
    source = start(cfg, got)
    try:
        got.wait_readings(1)
        mosquitto.stop()
        mosquitto.start()
        assert source.ready.wait(WAIT_S), "did not reconnect after the broker restarted"
        publish(mosquitto.port, WATER_TOPIC, [f'{{"ts": {T0 + 1}, "volume_m3": 2}}'])
        assert got.wait_readings(2) == [water(T0 * 10**9, 1.0), water((T0 + 1) * 10**9, 2.0)]
    finally:
        source.stop()
        mosquitto.stop()


def test_submit_that_raises_is_retried_with_the_same_batch(
        mosquitto: MosquittoServer, client_id: str) -> None:
    got = Collector(fail_first=2)
    source = start(make_cfg(mosquitto.url, client_id), got)
    try:
        publish(mosquitto.port, WATER_TOPIC, [f'{{"ts": {T0}, "volume_m3": 1}}'])
        assert got.wait_readings(1) == [water(T0 * 10**9, 1.0)]
        assert got.calls == 3
    finally:
        source.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_unacked_messages_are_redelivered_to_the_next_session(
        mosquitto: MosquittoServer, client_id: str, protocol: str) -> None:
    """No PUBACK while submit fails: a restarted meterd gets the messages from the broker again."""
    cfg = make_cfg(mosquitto.url, client_id, protocol=protocol)
    failing = Collector(fail_first=10**9)
    source = start(cfg, failing)
    publish(mosquitto.port, WATER_TOPIC, [f'{{"ts": {T0 + i}, "volume_m3": {i}}}'
                                          for i in range(5)])
    failing.wait_calls(2)
    source.stop()
    assert failing.readings == []

    got = Collector()
    source = start(cfg, got)
    try:
        assert got.wait_readings(5) == [water((T0 + i) * 10**9, float(i)) for i in range(5)]
    finally:
        source.stop()


# -- TLS and authentication --------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (EC keys: fast)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=meterd test CA", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
             cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf", cwd=d)


class TlsMosquitto(MosquittoServer):
    """Mosquitto with only a TLS listener and a password file (user ``meterd``)."""

    def __init__(self, workdir: Path, password: str) -> None:
        make_certs(workdir)
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(workdir / "passwd"), "meterd",
                        password], check=True, capture_output=True, timeout=30)
        super().__init__(workdir, listener=f"""
cafile {workdir}/ca.crt
certfile {workdir}/server.crt
keyfile {workdir}/server.key
allow_anonymous false
password_file {workdir}/passwd
""")

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsMosquitto]:
    (tmp_path / "tls").mkdir()
    server = TlsMosquitto(tmp_path / "tls", password="s3cret-Pa55")
    server.start()
    yield server
    server.stop()


def test_tls_with_a_private_ca_and_password_from_the_environment(
        tls_broker: TlsMosquitto, client_id: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    monkeypatch.setenv("METERD_MQTT_PASSWORD", "s3cret-Pa55")
    cfg = make_cfg(tls_broker.url, client_id, username="meterd",
                   ca_file=str(tls_broker.workdir / "ca.crt"))
    got = Collector()
    source = start(cfg, got)
    try:
        publish(tls_broker.port, WATER_TOPIC, [f'{{"ts": {T0}, "volume_m3": 7.5}}'],
                "--cafile", str(tls_broker.workdir / "ca.crt"), "-u", "meterd", "-P", "s3cret-Pa55")
        assert got.wait_readings(1) == [water(T0 * 10**9, 7.5)]
    finally:
        source.stop()
    assert "s3cret" not in caplog.text


class RefusalWatch(logging.Handler):
    """Signals when the source logs that the broker refused it (logged from paho's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "refused the connection" in record.getMessage():
            self.seen.set()


def test_wrong_password_is_refused_and_logged_without_the_password(
        tls_broker: TlsMosquitto, client_id: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    secret = tmp_path / "mqtt.pw"
    secret.write_text("wrong-Pa55\n")
    cfg = make_cfg(tls_broker.url, client_id, username="meterd", password_file=str(secret),
                   ca_file=str(tls_broker.workdir / "ca.crt"))
    watch = RefusalWatch()
    logging.getLogger("meterd.mqtt").addHandler(watch)
    source = MqttSource(cfg, Collector())
    source.start()
    try:
        assert watch.seen.wait(WAIT_S)
    finally:
        source.stop()
        logging.getLogger("meterd.mqtt").removeHandler(watch)
    assert "wrong-Pa55" not in caplog.text


def test_thousands_of_topics_are_subscribed_in_chunks(mosquitto: MosquittoServer,
                                                      client_id: str) -> None:
    meters = [{"id": f"w{i:04d}", "kind": "water", "mqtt_topic": f"bulk/w{i:04d}"}
              for i in range(1201)]
    cfg = parse_config({"mqtt": {"url": mosquitto.url, "client_id": client_id},
                        "meters": meters})
    got = Collector()
    source = start(cfg, got)  # ready: every SUBSCRIBE chunk acknowledged
    try:
        for topic in ("bulk/w0000", "bulk/w0500", "bulk/w1200"):
            publish(mosquitto.port, topic, [f'{{"ts": {T0}, "volume_m3": 1}}'])
        assert [r.meter for r in got.wait_readings(3)] == ["w0000", "w0500", "w1200"]
    finally:
        source.stop()


def test_wildcard_topic_and_two_meters_sharing_one_topic(mosquitto: MosquittoServer,
                                                         client_id: str) -> None:
    cfg = parse_config({"mqtt": {"url": mosquitto.url, "client_id": client_id}, "meters": [
        {"id": "gw-water", "kind": "water", "mqtt_topic": "gw/+/SENSOR",
         "mqtt_map": {"W.vol": "volume_m3"}},
        {"id": "gw-heat", "kind": "heat", "mqtt_topic": "gw/+/SENSOR",
         "mqtt_map": {"H.kwh": "energy_kwh"}},
    ]})
    got = Collector()
    source = start(cfg, got)
    try:
        publish(mosquitto.port, "gw/7/SENSOR",
                [f'{{"ts": {T0}, "W": {{"vol": 12.5}}, "H": {{"kwh": 880}}}}'])
        assert [(r.meter, r.fields) for r in got.wait_readings(2)] == [
            ("gw-heat", {"energy_kwh": 880.0}), ("gw-water", {"volume_m3": 12.5})]
    finally:
        source.stop()


@pytest.mark.parametrize(("mqtt", "message"), [
    ({"url": "mqtts://127.0.0.1:8883", "ca_file": "/nonexistent/ca.crt"}, "mqtt.ca_file"),
    ({"password_file": "PWFILE"}, "mqtt.username"),
])
def test_bad_connection_settings_fail_at_construction(tmp_path: Path, mqtt: dict[str, str],
                                                      message: str) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    mqtt = {k: str(pw) if v == "PWFILE" else v for k, v in mqtt.items()}
    cfg = make_cfg(mqtt.pop("url", "mqtt://127.0.0.1:1883"), "unused", **mqtt)
    with pytest.raises(ConfigError, match=message):
        MqttSource(cfg, Collector())


def test_a_parser_bug_is_counted_and_does_not_stall_the_session(
        mosquitto: MosquittoServer, client_id: str) -> None:
    """Our own parser raising (a bug, not bad input) must not block every later message.

    The broker is real; a buggy parser is handed to the source, because no input can make a correct
    parser raise, so a bug has to be planted to test the safety net.
    """
    def buggy(payload: bytes, *args: Any) -> Any:
        if b"trigger-bug" in payload:
            raise ZeroDivisionError("simulated parser bug")
        return parse_payload(payload, *args)

    got = Collector()
    source = start(make_cfg(mosquitto.url, client_id), got, parse=buggy)
    before = REJECTS.total("internal_error")
    try:
        publish(mosquitto.port, WATER_TOPIC, ['{"trigger-bug": 1}', f'{{"ts": {T0}, "volume_m3": 3}}'])
        assert got.wait_readings(1) == [water(T0 * 10**9, 3.0)]
    finally:
        source.stop()
    assert REJECTS.total("internal_error") - before == 1
