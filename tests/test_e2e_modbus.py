"""Modbus to InfluxDB exactly: an independent device (pyModbusTCP, not pymodbus) read by ``meterd run``.

The four built-in profiles and a map defined in the config are served by one gateway. What lands in
InfluxDB must be the float32 register value times the profile's scale, to the last bit, with the
meter's tags.
"""

from __future__ import annotations

import signal

from meterd.profiles import Profile, builtin_profiles
from tests.e2e import count, start_meterd, wait_for, write_config
from tests.modbus_peer import ModbusPeer, Unit, as_float32

USER_MAP = """
[profiles.acme-ultrasonic]
function = 3
registers = [
  { field = "volume_m3", address = 0x0100, type = "uint32", order = "CDAB", scale = 0.001 },
  { field = "flow_m3h", address = 0x0102, type = "int16", scale = 0.01 },
]
"""

# unit id -> (meter id, kind, profile, function override, served function)
METERS = {
    1: ("lib-main-elec", "electricity", "eastron-sdm630", None, 4),
    2: ("dorm3-floor2-elec", "electricity", "eastron-sdm120", None, 4),
    3: ("canteen1-elec", "electricity", "chint-dtsu666", None, 3),
    4: ("canteen1-kitchen-elec", "electricity", "chint-ddsu666", None, 4),
    5: ("canteen2-elec", "electricity", "chint-dtsu666", 4, 4),
    6: ("north-water-main", "water", "acme-ultrasonic", None, 3),
}


def _raw_value(field: str, unit: int) -> float:
    """A plausible raw register value, different per unit and field and not exact in float32."""
    base = {"voltage": 2301.7, "current": 12345.6, "power": 45678.9, "pf": 987.6, "frequency": 5001.3,
            "energy": 123456.789, "volume": 8765432.0, "flow": 345.0}
    key = next(k for k in base if field.startswith(k))
    return base[key] + unit * 1.1 + len(field) * 0.01


def _serve(profile: Profile, unit: int, function: int) -> tuple[Unit, dict[str, float]]:
    served, expected = Unit(function=function), {}
    for reg in profile.registers:
        raw: float = _raw_value(reg.field, unit)
        raw = as_float32(raw) if reg.type == "float32" else int(raw)
        served.put(reg.address, raw, reg.type, reg.order)
        expected[reg.field] = float(raw) * reg.scale + reg.offset
    return served, expected


def test_profiles_and_user_map_land_exactly(tmp_path, influxd):
    import tomllib

    profiles = {**builtin_profiles(),
                **{k: Profile.model_validate(v) for k, v in tomllib.loads(USER_MAP)["profiles"].items()}}
    units, expected = {}, {}
    for unit, (meter, _kind, prof, _override, served_fn) in METERS.items():
        units[unit], expected[meter] = _serve(profiles[prof], unit, served_fn)

    with ModbusPeer(units) as peer:
        body = USER_MAP + f'[[links]]\nname = "gw-north"\nurl = "tcp://127.0.0.1:{peer.port}"\n' \
            'interval_s = 1.0\ntimeout_s = 0.5\n'
        for unit, (meter, kind, prof, override, _fn) in METERS.items():
            body += (f'[[meters]]\nid = "{meter}"\nkind = "{kind}"\ncampus = "north"\n'
                     f'building = "b{unit}"\nlink = "gw-north"\nunit_id = {unit}\nprofile = "{prof}"\n')
            body += f"function = {override}\n" if override else ""
            body += 'canteen = "canteen-1"\n' if meter.startswith("canteen1") else ""
        cfg = write_config(tmp_path, influxd, body)
        log = tmp_path / "meterd.log"
        meterd = start_meterd(cfg, log)
        try:
            wait_for(lambda: count(influxd, "count(voltage_l1_v) FROM electricity") >= 5
                     and count(influxd, "count(volume_m3) FROM water") >= 1, 60, "one poll of every meter")
        finally:
            meterd.send_signal(signal.SIGTERM)
            assert meterd.wait(60) == 0, log.read_text()[-3000:]

    stored = {}
    for kind in ("electricity", "water"):
        for s in influxd.query(f"SELECT * FROM {kind} GROUP BY * LIMIT 1", db="campus"):
            row = dict(zip(s["columns"], s["values"][0], strict=True))
            stored[s["tags"]["meter"]] = ({k: v for k, v in row.items() if k != "time" and v is not None},
                                          s["tags"])
    assert set(stored) == set(expected)
    for meter, fields in expected.items():
        assert stored[meter][0] == fields, meter  # exact float equality, field by field
    unit = next(u for u, m in METERS.items() if m[0] == "canteen1-elec")
    assert stored["canteen1-elec"][1] == {"meter": "canteen1-elec", "campus": "north",
                                          "building": f"b{unit}", "canteen": "canteen-1"}
    assert stored["north-water-main"][1].get("canteen", "") == ""
