"""parse_payload: the pure MQTT payload contract (no broker needed)."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterd.config import MeterConfig
from meterd.reading import Reading
from meterd.sources.mqtt.payload import MAX_PAYLOAD_BYTES, parse_payload

SHANGHAI = ZoneInfo("Asia/Shanghai")
RECEIVED_NS = 1_750_000_000_123_456_789
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def water(**extra: Any) -> MeterConfig:
    return MeterConfig(id="w-1", kind="water", campus="north", building="b7", mqtt_topic="t/w-1",
                       **extra)


TASMOTA = MeterConfig(id="e-tas", kind="electricity", mqtt_topic="tele/sml/SENSOR",
                      mqtt_map={"SML.Total_in": "energy_kwh", "SML.Power_curr": "power_kw"},
                      mqtt_scale={"power_kw": 0.001}, mqtt_ts_key="Time")
SHELLY = MeterConfig(id="e-shelly", kind="electricity", mqtt_topic="shelly/status/switch:0",
                     mqtt_map={"aenergy.total": "energy_kwh", "apower": "power_kw",
                               "voltage": "voltage_l1_v"},
                     mqtt_scale={"energy_kwh": 0.001, "power_kw": 0.001},
                     mqtt_ts_key="aenergy.minute_ts")


def parse(payload: bytes | str, meter: MeterConfig | None = None) -> tuple[list[Reading], list[str]]:
    raw = payload.encode() if isinstance(payload, str) else payload
    readings, invalid = parse_payload(raw, meter or water(), RECEIVED_NS, SHANGHAI)
    return readings, [inv.reason for inv in invalid]


@pytest.mark.parametrize(("ts", "expected_ns"), [
    (str(T0), T0 * 10**9),
    (f"{T0}.123456789", T0 * 10**9 + 123_456_789),
    (f"{T0}.5", T0 * 10**9 + 500_000_000),
    ("1.7e9", T0 * 10**9),
    (f"{T0}.0000000004", T0 * 10**9),            # below 1 ns: rounded half-even
    (f"{T0}.9999999996", (T0 + 1) * 10**9),
    ('"2023-11-14T22:13:20Z"', T0 * 10**9),
    ('"2023-11-14t22:13:20.000000001z"', T0 * 10**9 + 1),
    ('"2023-11-15T06:13:20.25+08:00"', T0 * 10**9 + 250_000_000),
    ('"2023-11-14T17:13:20-05:00"', T0 * 10**9),
    ('"2023-11-15T06:13:20"', T0 * 10**9),     # no offset: site time (Asia/Shanghai, +08:00)
])
def test_timestamps_land_exact_to_the_nanosecond(ts: str, expected_ns: int) -> None:
    readings, reasons = parse(f'{{"ts": {ts}, "volume_m3": 1234.567}}')
    assert reasons == []
    assert readings == [Reading(measurement="water",
                                tags={"meter": "w-1", "campus": "north", "building": "b7"},
                                fields={"volume_m3": 1234.567}, ts_ns=expected_ns, meter="w-1")]


def test_missing_timestamp_uses_receive_time() -> None:
    readings, reasons = parse('{"volume_m3": 1, "flow_m3h": 0.25}')
    assert reasons == []
    assert readings[0].ts_ns == RECEIVED_NS
    assert readings[0].fields == {"volume_m3": 1.0, "flow_m3h": 0.25}


def test_batch_keeps_order_and_one_bad_element_does_not_sink_the_others() -> None:
    batch = [{"ts": T0 + i, "volume_m3": 10 + i} for i in range(3)]
    batch.insert(1, {"ts": T0, "volume_m3": -5})          # negative register
    batch.insert(3, {"ts": "yesterday", "volume_m3": 1})  # unparsable timestamp
    batch.append(7)                                       # not an object
    readings, reasons = parse(json.dumps(batch))
    assert [(r.ts_ns, r.fields) for r in readings] == [
        ((T0 + i) * 10**9, {"volume_m3": 10.0 + i}) for i in range(3)]
    assert reasons == ["negative_cumulative", "bad_timestamp", "not_object"]


def test_one_bad_field_is_dropped_and_the_reading_lands_without_it() -> None:
    readings, reasons = parse(f'{{"ts": {T0}, "volume_m3": 3.5, "flow_m3h": "high", "temp": 4}}')
    assert readings[0].fields == {"volume_m3": 3.5}
    assert reasons == ["non_numeric", "unknown_field"]


def test_tasmota_sml_local_time_and_scale() -> None:
    payload = {"Time": "2024-03-01T08:00:05", "SML": {"Total_in": 51234.5678, "Power_curr": 1520,
                                                       "Meter_id": "0a01"}}
    readings, reasons = parse(json.dumps(payload), TASMOTA)
    assert reasons == []
    assert readings == [Reading(measurement="electricity", tags={"meter": "e-tas"},
                                fields={"energy_kwh": 51234.5678, "power_kw": 1.52},
                                ts_ns=1_709_251_205 * 10**9, meter="e-tas")]


def test_shelly_nested_wh_scaled_to_kwh_and_missing_mapped_key_tolerated() -> None:
    payload = {"id": 0, "source": "timer", "output": True, "apower": 2300.0,
               "aenergy": {"total": 1234567.0, "by_minute": [30.1, 31.2, 30.9],
                           "minute_ts": 1_709_251_200}}
    readings, reasons = parse(json.dumps(payload), SHELLY)
    assert reasons == []
    assert readings[0].fields == {"energy_kwh": pytest.approx(1234.567), "power_kw": 2.3}
    assert readings[0].ts_ns == 1_709_251_200 * 10**9


@pytest.mark.parametrize(("payload", "reasons"), [
    (b"\xff\xfe{}", ["non_utf8"]),
    (b'{"volume_m3": 1', ["non_json"]),
    (b"", ["non_json"]),
    (b"1" * 5000, ["non_json"]),                         # beyond Python's int digit limit
    (b'"just a string"', ["not_object"]),
    (b"[]", ["empty_batch"]),
    (b"[" * 20 + b"]" * 20, ["too_deep"]),
    (b"[" * 100_000, ["too_deep"]),                      # deep enough to hit RecursionError
    (b'{"volume_m3": 1, "volume_m3": 2}', ["duplicate_key"]),
    (b'{"volume_m3": NaN}', ["non_finite"]),
    (b'{"volume_m3": Infinity}', ["non_finite"]),
    (b'{"volume_m3": 1e400}', ["non_finite"]),
    (b'{"volume_m3": ' + b"9" * 400 + b"}", ["non_finite"]),
    (b'{"volume_m3": true}', ["non_numeric"]),
    (b'{"volume_m3": null}', ["non_numeric"]),
    (b'{"volume_m3": {"v": 1}}', ["non_numeric"]),
    (b'{"volume_m3": -0.001}', ["negative_cumulative"]),
    (b'{"energy_kwh": 5}', ["unknown_field"]),           # an electricity field on a water meter
    (b'{"ts": 1700000000}', ["no_fields"]),
    (b'{"ts": 1700000000000, "volume_m3": 1}', ["absurd_timestamp"]),  # milliseconds
    (b'{"ts": 1e400000, "volume_m3": 1}', ["absurd_timestamp"]),
    (b'{"ts": 12, "volume_m3": 1}', ["absurd_timestamp"]),
    (b'{"ts": "1999-12-31T23:59:59Z", "volume_m3": 1}', ["absurd_timestamp"]),
    (b'{"ts": "2023-02-30T00:00:00Z", "volume_m3": 1}', ["bad_timestamp"]),
    (b'{"ts": "2023-11-14T22:13:60Z", "volume_m3": 1}', ["bad_timestamp"]),
    (b'{"ts": "2023-11-14T22:13:20+0800", "volume_m3": 1}', ["bad_timestamp"]),
    (b'{"ts": "0001-01-01T00:00:00+08:00", "volume_m3": 1}', ["bad_timestamp"]),
    (b'{"ts": true, "volume_m3": 1}', ["bad_timestamp"]),
    (b'{"ts": null, "volume_m3": 1}', ["bad_timestamp"]),
])
def test_rejections_name_a_specific_reason(payload: bytes, reasons: list[str]) -> None:
    readings, got = parse(payload)
    assert (readings, got) == ([], reasons)


def test_payload_over_256_kib_is_rejected_before_parsing() -> None:
    one = json.dumps({"ts": T0, "volume_m3": 1.0})
    big = ("[" + ",".join([one] * (MAX_PAYLOAD_BYTES // len(one) + 1)) + "]").encode()
    assert parse(big) == ([], ["too_large"])
    fits = ("[" + ",".join([one] * (MAX_PAYLOAD_BYTES // (len(one) + 1) - 1)) + "]").encode()
    readings, reasons = parse(fits)
    assert reasons == [] and len(readings) > 5000


def test_rejection_detail_names_meter_and_batch_item() -> None:
    _, invalid = parse_payload(b'[{"volume_m3": 1}, {"volume_m3": "x"}]', water(), RECEIVED_NS,
                               SHANGHAI)
    assert [str(inv) for inv in invalid] == [
        "non_numeric: meter w-1 item 1: volume_m3='x' is not a number"]


def test_unmapped_vendor_keys_are_ignored_but_no_mapped_key_is_no_fields() -> None:
    readings, reasons = parse('{"Time": "2024-03-01T08:00:05", "ENERGY": {"Total": 3}}', TASMOTA)
    assert (readings, reasons) == ([], ["no_fields"])


def test_bom_is_tolerated() -> None:
    readings, reasons = parse(b'\xef\xbb\xbf{"volume_m3": 2}')
    assert reasons == [] and readings[0].fields == {"volume_m3": 2.0}


def test_scaling_is_decimal_exact_and_overflow_is_rejected() -> None:
    meter = water(mqtt_scale={"volume_m3": 0.001, "flow_m3h": 0.001})
    readings, reasons = parse('{"volume_m3": 2300, "flow_m3h": 0.7}', meter)
    assert readings[0].fields == {"volume_m3": 2.3, "flow_m3h": 0.0007}
    assert reasons == []
    assert parse('{"volume_m3": 1e999999}', meter) == ([], ["non_finite"])
