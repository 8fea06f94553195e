"""The campus model offline: determinism, integrals, shapes, leaks, encoding and fault maths."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from meterd.profiles import Register, builtin_profiles
from simulators.campus import build_campus, series, values_at
from simulators.campus.faults import FaultSpecError, adjust_cumulative, parse_fault
from simulators.campus.model import GRID_S, LiveMeter, rate
from simulators.campus.registers import decode, encode

# A Wednesday in term time (2026-03-18 00:00 local, UTC+8).
WED = datetime(2026, 3, 17, 16, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


@pytest.fixture(scope="module")
def campus():
    return build_campus(12, seed=7, origin_s=WED)


def test_same_seed_same_values_other_seed_differs(campus):
    again = build_campus(12, seed=7, origin_s=WED)
    other = build_campus(12, seed=8, origin_s=WED)
    for mid in ("e-canteen-001", "w-zone-01", "g-canteen-007", "wx-1"):
        a = series(mid, WED, WED + DAY, 300, campus)
        b = series(mid, WED, WED + DAY, 300, again)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)
    a = series("e-canteen-001", WED, WED + DAY, 300, campus)["power_kw"]
    assert not np.allclose(a, series("e-canteen-001", WED, WED + DAY, 300, other)["power_kw"])


def test_series_does_not_depend_on_step(campus):
    fine = series("e-dormitory-002", WED, WED + DAY, 60, campus)
    coarse = series("e-dormitory-002", WED, WED + DAY, 900, campus)
    for k in fine:
        np.testing.assert_allclose(fine[k][::15], coarse[k], rtol=1e-12)


@pytest.mark.parametrize(("meter", "rate", "cum"), [("e-office-003", "power_kw", "energy_kwh"),
                                                   ("w-zone-02", "flow_m3h", "volume_m3")])
def test_register_is_the_integral_of_the_rate(campus, meter, rate, cum):
    s = series(meter, WED, WED + 2 * DAY, GRID_S, campus)
    trapezoid = 0.5 * (s[rate][1:] + s[rate][:-1]) * GRID_S / 3600.0
    np.testing.assert_allclose(np.diff(s[cum]), trapezoid, rtol=1e-9, atol=1e-9)
    assert s[cum][0] == pytest.approx(campus.meter(meter).base_reading)
    assert np.all(np.diff(s[cum]) >= 0)


def _at(campus, meter, local_hour, day_offset=0.0, field="power_kw"):
    return float(values_at(campus, meter, [WED + day_offset * DAY + local_hour * 3600])[field][0])


def test_realistic_shapes(campus):
    canteen, dorm, office = "e-canteen-001", "e-dormitory-002", "e-office-003"
    assert _at(campus, canteen, 12.0) > 3 * _at(campus, canteen, 3.0)  # lunch vs night
    assert _at(campus, canteen, 7.0) > 2 * _at(campus, canteen, 9.0)  # breakfast peak
    assert _at(campus, canteen, 18.0) > 2 * _at(campus, canteen, 15.0)  # dinner peak
    assert _at(campus, dorm, 21.5) > 2 * _at(campus, dorm, 14.0)  # dormitory evenings
    assert _at(campus, office, 11.0) > 4 * _at(campus, office, 3.0)  # office daytime
    assert _at(campus, office, 11.0) > 4 * _at(campus, office, 11.0, day_offset=3)  # Saturday
    summer = datetime(2026, 8, 5, 4, 0, tzinfo=UTC).timestamp()  # 12:00 local, summer break
    late = build_campus(12, seed=7, origin_s=summer)
    in_break = values_at(late, canteen, [summer])["power_kw"][0]
    assert in_break < 0.3 * _at(campus, canteen, 12.0)
    assert all(np.all(series(m.id, WED, WED + DAY, 600, campus)[m.rate_field] >= 0)
               for m in campus.meters if m.rate_field)


def test_zone_parent_is_children_plus_zone_leak(campus):
    start = WED + 10 * 3600
    leaky = campus.with_leak("w-zone-01", 0.4, start).with_leak("w-canteen-001", 0.1, start)
    parent = series("w-zone-01", WED, WED + DAY, 600, leaky)
    kids = sum(series(c, WED, WED + DAY, 600, leaky)["flow_m3h"]
               for c in leaky.meter("w-zone-01").children)
    gap = parent["flow_m3h"] - kids
    before, after = parent["ts"] < start, parent["ts"] >= start + GRID_S
    np.testing.assert_allclose(gap[before], 0.0, atol=1e-9)
    np.testing.assert_allclose(gap[after], 0.4, rtol=1e-9)
    child = series("w-canteen-001", WED, WED + DAY, 600, leaky)["flow_m3h"]
    clean = series("w-canteen-001", WED, WED + DAY, 600, campus)["flow_m3h"]
    np.testing.assert_allclose((child - clean)[after], 0.1, rtol=1e-9)
    with pytest.raises(ValueError, match="only water meters"):
        campus.with_leak("e-office-003", 1.0, start)
    with pytest.raises(ValueError, match="positive"):
        campus.with_leak("w-zone-01", math.nan, start)


def test_incipient_leak_grows_linearly_to_its_size(campus):
    start, ramp = WED + 10 * 3600, 86400.0
    leaky = campus.with_leak("w-canteen-001", 0.2, start, ramp_s=ramp)
    t = np.array([start - 3600, start + ramp / 4, start + ramp / 2, start + 2 * ramp])
    extra = rate(leaky, leaky.meter("w-canteen-001"), t) - rate(
        campus, campus.meter("w-canteen-001"), t)
    np.testing.assert_allclose(extra, [0.0, 0.05, 0.1, 0.2], atol=1e-12)
    # The register integrates it: half the full day's volume over the ramp day.
    day = [start, start + ramp]
    vol = np.diff(values_at(leaky, leaky.meter("w-canteen-001"), day)["volume_m3"])
    clean = np.diff(values_at(campus, campus.meter("w-canteen-001"), day)["volume_m3"])
    assert float(vol[0] - clean[0]) == pytest.approx(0.2 * 24 / 2, rel=1e-3)
    with pytest.raises(ValueError, match="ramp"):
        campus.with_leak("w-zone-01", 0.1, start, ramp_s=-1.0)


def test_live_meter_matches_the_pure_model(campus):
    live = LiveMeter(campus, campus.meter("e-canteen-001"))
    times = [WED + x for x in (0.0, 1.5, 59.0, 61.0, 3601.7, 90000.0, 90030.0)]
    for t in times:
        got = live.values(t)
        want = {k: float(v[0]) for k, v in values_at(campus, "e-canteen-001", [t]).items()}
        assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
@pytest.mark.parametrize("rtype", ["float32", "int32", "uint16", "float64", "int64"])
def test_encode_decode_round_trip(order, rtype):
    reg = Register(field="power_kw", address=0, type=rtype, order=order, scale=0.01)
    assert decode(encode(123.45, reg), reg) == pytest.approx(123.45, rel=1e-6)
    assert len(encode(1.0, reg)) == reg.width


def test_encode_never_raises_on_garbage():
    f32 = Register(field="energy_kwh", address=0, scale=0.0001)
    assert decode(encode(1e300, f32), f32) == pytest.approx(3.4028234663852886e38 * 0.0001)
    assert math.isnan(decode(encode(math.nan, f32), f32))
    i16 = Register(field="pf", address=0, type="int16")
    assert decode(encode(math.nan, i16), i16) == 32767


def test_profiles_encode_as_value_over_scale():
    reg = next(r for r in builtin_profiles()["chint-dtsu666"].registers if r.field == "power_kw")
    words = encode(12.5, reg)
    import struct
    raw = struct.unpack(">f", b"".join(w.to_bytes(2, "big") for w in words))[0]
    assert raw == pytest.approx(12.5 / 0.0001)


def test_parse_fault_specs():
    f = parse_fault("3:rollover=5000:30:60")
    assert (f.unit, f.kind, f.register_max, f.at_s, f.duration_s) == (3, "rollover", 5000, 30, 60)
    assert f.active(30) and f.active(89.9) and not f.active(90) and not f.active(29)
    assert parse_fault("1:exception").exception_code == 4
    for bad in ("x:timeout", "3", "3:melt", "0:timeout", "3:timeout:-1", "3:exception=9",
                "3:rollover=nan", "3:timeout:1:0", "3:a:b:c:d"):
        with pytest.raises(FaultSpecError, match="UNIT:KIND"):
            parse_fault(bad)


def test_rollover_and_replacement_counters():
    at = {"energy_kwh": 1000.0, "energy_export_kwh": 5.0}
    roll = parse_fault("1:rollover=400:10")
    assert adjust_cumulative({"energy_kwh": 999.0, "energy_export_kwh": 5.0}, roll, at,
                             "energy_kwh", False)["energy_kwh"] == pytest.approx(399.0)
    assert adjust_cumulative({"energy_kwh": 1000.5, "energy_export_kwh": 5.0}, roll, at,
                             "energy_kwh", True)["energy_kwh"] == pytest.approx(0.5)
    swap = parse_fault("1:replacement:10")
    before = adjust_cumulative({"energy_kwh": 999.0, "energy_export_kwh": 5.0}, swap, at,
                               "energy_kwh", False)
    after = adjust_cumulative({"energy_kwh": 1002.0, "energy_export_kwh": 5.0}, swap, at,
                              "energy_kwh", True)
    assert before["energy_kwh"] == 999.0
    assert after == pytest.approx({"energy_kwh": 2.01, "energy_export_kwh": 0.0})
