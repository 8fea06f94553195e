"""MQTT readings published with ``mosquitto_pub`` land in InfluxDB exactly, through ``meterd run``.

Epoch seconds and RFC 3339 with an offset, single objects and gateway batches, and a vendor payload
mapped to canonical fields. Malformed messages interleaved on the same topics are rejected: the
daemon keeps running and they store nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess

from tests.e2e import count, start_meterd, wait_for, write_config

METERS = """
[[meters]]
id = "north-water-main"
kind = "water"
campus = "north"
building = "pump-house"
mqtt_topic = "campus/north/water/main"

[[meters]]
id = "north-canteen1-gas"
kind = "gas"
campus = "north"
building = "canteen-1"
canteen = "canteen-1"
mqtt_topic = "campus/north/gas/canteen1"

[[meters]]
id = "dorm3-shelly"
kind = "electricity"
campus = "north"
building = "dorm-3"
mqtt_topic = "shellies/dorm3/status"
mqtt_map = { "aenergy.total" = "energy_kwh", "apower" = "power_kw", "voltage" = "voltage_l1_v" }
mqtt_scale = { energy_kwh = 0.001, power_kw = 0.001 }
"""

GOOD = [
    ("campus/north/water/main", {"ts": 1767225600, "volume_m3": 1234.567, "flow_m3h": 1.25}),
    ("campus/north/water/main", {"ts": "2026-01-01T08:01:00+08:00", "volume_m3": 1234.6, "flow_m3h": 2.0}),
    ("campus/north/water/main", {"ts": "2026-01-01T00:02:00Z", "volume_m3": 1234.75}),
    ("campus/north/gas/canteen1", [{"ts": 1767225600, "volume_m3": 50.5},
                                   {"ts": 1767225660, "volume_m3": 50.625, "flow_m3h": 7.5},
                                   {"ts": 1767225720.25, "volume_m3": 50.75}]),
    ("shellies/dorm3/status", {"ts": 1767225600, "aenergy": {"total": 98765.4}, "apower": 2300.0,
                               "voltage": 229.9, "temperature": {"tC": 41.2}}),
]

BAD = [
    ("campus/north/water/main", "not json at all"),
    ("campus/north/water/main", '{"ts": 1767225600, "volume_m3": "12,5"}'),
    ("campus/north/water/main", '{"ts": 1767225600, "volume_m3": -3.0}'),
    ("campus/north/water/main", '{"ts": 42, "volume_m3": 3.0}'),
    ("campus/north/water/main", '{"ts": 1767225600, "volume_m3": NaN}'),
    ("campus/north/gas/canteen1", '{"ts": 1767225600, "volume_m3": ' + "[" * 20 + "1" + "]" * 20 + "}"),
    ("campus/north/gas/canteen1", b"\xff\xfe{}"),
    ("campus/north/gas/canteen1", "[]"),
]

# (measurement, meter, time ns) -> fields, exactly as published (the Shelly one after mapping).
EXPECTED = {
    ("water", "north-water-main", 1767225600_000000000): {"volume_m3": 1234.567, "flow_m3h": 1.25},
    ("water", "north-water-main", 1767225660_000000000): {"volume_m3": 1234.6, "flow_m3h": 2.0},
    ("water", "north-water-main", 1767225720_000000000): {"volume_m3": 1234.75},
    ("gas", "north-canteen1-gas", 1767225600_000000000): {"volume_m3": 50.5},
    ("gas", "north-canteen1-gas", 1767225660_000000000): {"volume_m3": 50.625, "flow_m3h": 7.5},
    ("gas", "north-canteen1-gas", 1767225720_250000000): {"volume_m3": 50.75},
    ("electricity", "dorm3-shelly", 1767225600_000000000): {
        "energy_kwh": 98.7654, "power_kw": 2.3, "voltage_l1_v": 229.9},  # decimal-exact scaling
}


def _pub(port: int, topic: str, payload: str | bytes) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    "-s"], input=data, check=True, timeout=10)


def _stored(influxd) -> dict:
    out = {}
    for measurement in ("water", "gas", "electricity"):
        for s in influxd.query(f"SELECT * FROM {measurement}", db="campus"):
            cols = s["columns"]
            for row in s["values"]:
                rec = dict(zip(cols, row, strict=True))
                fields = {k: v for k, v in rec.items()
                          if v is not None and k not in ("time", "meter", "campus", "building", "canteen")}
                out[(measurement, rec["meter"], rec["time"])] = fields
    return out


def test_mosquitto_pub_readings_land_exactly(tmp_path, influxd, mosquitto, client_id):
    cfg = write_config(tmp_path, influxd, METERS, client_id=client_id, mqtt_url=mosquitto.url)
    log = tmp_path / "meterd.log"
    meterd = start_meterd(cfg, log)
    try:
        probe = ("campus/north/water/main", json.dumps(GOOD[0][1]))
        for _ in range(40):  # until meterd has subscribed; the same point again is harmless
            _pub(mosquitto.port, *probe)
            try:
                wait_for(lambda: count(influxd, "count(volume_m3) FROM water") >= 1, 1.5, "first point")
                break
            except AssertionError:
                continue
        for (topic, body), bad in zip(GOOD, BAD, strict=False):
            _pub(mosquitto.port, *bad)
            _pub(mosquitto.port, topic, json.dumps(body))
        for bad in BAD[len(GOOD):]:
            _pub(mosquitto.port, *bad)
        wait_for(lambda: len(_stored(influxd)) >= len(EXPECTED), 60, "all good readings")
        assert meterd.poll() is None, "meterd died on malformed input"
    finally:
        meterd.send_signal(signal.SIGTERM)
        rc = meterd.wait(60)
    assert rc == 0
    assert _stored(influxd) == EXPECTED
    tags = influxd.query("SHOW TAG VALUES FROM gas WITH KEY = canteen", db="campus")
    assert tags[0]["values"] == [["canteen", "canteen-1"]]
    text = log.read_text()
    assert "rejected from mqtt" in text and "Traceback" not in text
