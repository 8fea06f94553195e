"""Line protocol encoding: escaping per the spec, exact float round-trip through a real influxd."""

from __future__ import annotations

import struct

import pytest

from meterd.config import InfluxConfig
from meterd.reading import Reading
from meterd.sinks.influx.lineprotocol import LineProtocolError, encode
from meterd.sinks.influx.query import InfluxQL
from meterd.sinks.influx.v1 import V1Sink

TS = 1_700_000_000_123_456_789


def point(measurement: str = "water", tags: dict[str, str] | None = None,
          fields: dict[str, float] | None = None, ts: int = TS) -> Reading:
    return Reading(measurement, tags if tags is not None else {"meter": "m1"},
                   fields if fields is not None else {"volume_m3": 1.5}, ts)


def f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def test_plain_point():
    assert encode(point(tags={"meter": "m1", "building": "b2"})) == \
        "water,building=b2,meter=m1 volume_m3=1.5 1700000000123456789"


@pytest.mark.parametrize(("reading", "expected"), [
    (point(measurement="my meas,x"), r"my\ meas\,x,meter=m1 volume_m3=1.5 "),
    (point(measurement="a=b"), "a=b,meter=m1 volume_m3=1.5 "),  # '=' is literal in a measurement
    (point(tags={"tag key": "v,a=l ue"}), r"water,tag\ key=v\,a\=l\ ue volume_m3=1.5 "),
    (point(tags={"k=1": "x"}), r"water,k\=1=x volume_m3=1.5 "),
    (point(fields={"a b,c=d": 2.0}), r"water,meter=m1 a\ b\,c\=d=2.0 "),
    (point(tags={"path": r"C:\data"}), r"water,path=C:\data volume_m3=1.5 "),
    (point(tags={"name": "Café 食堂"}), "water,name=Café\\ 食堂 volume_m3=1.5 "),
])
def test_escaping(reading: Reading, expected: str):
    assert encode(reading) == f"{expected}{TS}"


def test_empty_tag_values_are_skipped_and_tags_sorted():
    line = encode(point(tags={"meter": "m1", "campus": "", "building": "b", "canteen": "c"}))
    assert line.startswith("water,building=b,canteen=c,meter=m1 ")


def test_fields_are_always_floats_in_shortest_exact_form():
    line = encode(point(fields={"a": 3, "b": 1e21, "c": f32(0.1), "d": -0.0}))
    assert " a=3.0,b=1e+21,c=0.10000000149011612,d=-0.0 " in line


@pytest.mark.parametrize(("reading", "message"), [
    (point(fields={}), "no fields"),
    (point(fields={"v": float("nan")}), "not finite"),
    (point(fields={"v": float("inf")}), "not finite"),
    (point(fields={"v": True}), "not a number"),
    (point(fields={"v": "1.5"}), "not a number"),  # type: ignore[dict-item]
    (point(measurement=""), "empty measurement"),
    (point(measurement="#x"), "comment"),
    (point(tags={"": "v"}), "empty tag key"),
    (point(tags={"k": "two\nlines"}), "newline"),
    (point(tags={"k": "ends\\"}), "backslash"),
    (point(tags={"k": "a\\ b"}), "backslash"),
    (point(ts=1.7e18), "integer nanoseconds"),  # type: ignore[arg-type]
])
def test_unencodable_readings_raise_a_specific_error(reading: Reading, message: str):
    with pytest.raises(LineProtocolError, match=message):
        encode(reading)


def test_round_trip_through_influxd(influxd):
    cfg = InfluxConfig(url=influxd.url, database="lp")
    sink = V1Sink(cfg)
    sink.ensure_database()
    values = [f32(230.1), f32(0.1), f32(49.98), 1234567.891, 1e-7]
    tags = {"meter": "m 1", "building": "Hall, A=1", "campus": r"C:\north"}
    sink.write([encode(point(tags=tags, fields={"v": v}, ts=TS + i)) for i, v in enumerate(values)])
    series = InfluxQL(cfg).query('SELECT "v", "meter", "building", "campus" FROM "water"', epoch="ns")
    rows = series[0]["values"]
    assert [r[1] for r in rows] == values  # JSON floats parse back to the very same doubles
    assert [r[0] for r in rows] == [TS + i for i in range(len(values))]
    assert {tuple(r[2:]) for r in rows} == {("m 1", "Hall, A=1", r"C:\north")}
