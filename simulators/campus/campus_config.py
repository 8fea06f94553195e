"""Lay out a campus of N Modbus buildings, and describe it as a meterd TOML config."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from meterd.config import Config, parse_config
from simulators.campus.faults import Fault
from simulators.campus.model import Campus, MeterSpec

# Round-robin so that any campus of four or more buildings has every built-in profile.
PROFILES = ("eastron-sdm630", "chint-dtsu666", "eastron-sdm120", "chint-ddsu666")
USE_CYCLE = ("canteen", "dormitory", "office", "dormitory", "teaching", "dormitory")
ZONE_SIZE = 4
MAX_UNITS = 247
# Peak kW for a three-phase building supply; single-phase meters serve small annexes.
PEAK_KW = {"canteen": 180.0, "dormitory": 120.0, "office": 90.0, "teaching": 140.0}
PEAK_WATER_M3H = {"canteen": 6.0, "dormitory": 8.0, "office": 1.5, "teaching": 2.0}
PEAK_GAS_M3H = 40.0


def term_breaks(years: Iterable[int]) -> tuple[tuple[date, date], ...]:
    """Winter and summer breaks of a Chinese academic year."""
    return tuple(b for y in years for b in ((date(y, 1, 15), date(y, 2, 24)),
                                            (date(y, 7, 8), date(y, 8, 31))))


def build_campus(n_buildings: int, seed: int, origin_s: float, name: str = "demo") -> Campus:
    """A campus with one Modbus electricity meter per building (unit ids 1..n), a water meter per
    building grouped under zone parent meters, gas meters at canteens and one weather station."""
    if not 1 <= n_buildings <= MAX_UNITS:
        raise ValueError(f"--meters must be 1..{MAX_UNITS} (Modbus unit ids on one port), "
                         f"got {n_buildings}")
    rng = np.random.default_rng(seed)
    meters: list[MeterSpec] = []
    zones: dict[str, list[str]] = {}
    for unit in range(1, n_buildings + 1):
        use = USE_CYCLE[(unit - 1) % len(USE_CYCLE)]
        building = f"{use}-{unit:03d}"
        profile = PROFILES[(unit - 1) % len(PROFILES)]
        single = profile not in ("eastron-sdm630", "chint-dtsu666")
        size = float(rng.uniform(0.7, 1.3))
        canteen = building if use == "canteen" else None
        zone = f"w-zone-{(unit - 1) // ZONE_SIZE + 1:02d}"
        meters.append(MeterSpec(
            id=f"e-{building}", kind="electricity", building=building, use=use,
            peak=PEAK_KW[use] * size * (0.12 if single else 1.0),
            base_reading=round(float(rng.uniform(1e3, 9e4)), 1),
            base_export=round(float(rng.uniform(0, 50)), 1), seed=int(rng.integers(2**31)),
            profile=profile, unit_id=unit, canteen=canteen))
        meters.append(MeterSpec(
            id=f"w-{building}", kind="water", building=building, use=use,
            peak=PEAK_WATER_M3H[use] * size, base_reading=round(float(rng.uniform(100, 9e3)), 3),
            seed=int(rng.integers(2**31)), parent=zone, canteen=canteen))
        zones.setdefault(zone, []).append(f"w-{building}")
        if use == "canteen":
            meters.append(MeterSpec(
                id=f"g-{building}", kind="gas", building=building, use=use,
                peak=PEAK_GAS_M3H * size, base_reading=round(float(rng.uniform(100, 5e3)), 3),
                seed=int(rng.integers(2**31)), canteen=canteen))
    for zone, children in zones.items():
        meters.append(MeterSpec(id=zone, kind="water", building=zone, use="zone",
                                base_reading=round(float(rng.uniform(1e3, 5e4)), 3),
                                seed=int(rng.integers(2**31)), children=tuple(children)))
    meters.append(MeterSpec(id="wx-1", kind="weather", building="weather-station", use="weather",
                            seed=int(rng.integers(2**31))))
    year = datetime.fromtimestamp(origin_s, UTC).year
    return Campus(name=name, seed=seed, origin_s=float(origin_s), meters=tuple(meters),
                  breaks=term_breaks(range(year - 1, year + 2)))


def mqtt_topic(campus: Campus, meter: MeterSpec) -> str:
    return f"campus/{campus.name}/{meter.kind}/{meter.id}"


def modbus_units(campus: Campus) -> dict[int, MeterSpec]:
    return {m.unit_id: m for m in campus.meters if m.unit_id is not None}


def mqtt_meters(campus: Campus) -> list[MeterSpec]:
    return [m for m in campus.meters if m.unit_id is None]


# --- meterd TOML --------------------------------------------------------------------------------


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))  # JSON string escapes are valid TOML basic-string escapes


def _table(header: str, items: dict[str, object]) -> str:
    body = "".join(f"{k} = {_toml_value(v)}\n" for k, v in items.items() if v is not None)
    return f"{header}\n{body}\n"


def config_toml(campus: Campus, *, modbus_url: str, mqtt_url: str | None, influx_url: str,
                spool_dir: Path, faults: Iterable[Fault] = (), interval_s: float = 10.0) -> str:
    """A meterd config that polls and subscribes to this simulated campus."""
    register_max = {f.unit: f.register_max for f in faults if f.kind == "rollover"}
    parts = [f"# Written by `meterd simulate` for campus {campus.name!r} (seed {campus.seed}).\n\n",
             _table("[site]", {"name": f"{campus.name} (simulated)", "timezone": campus.timezone}),
             _table("[influxdb]", {"url": influx_url, "database": "campus"}),
             _table("[spool]", {"dir": str(spool_dir)})]
    if mqtt_url:
        parts.append(_table("[mqtt]", {"url": mqtt_url, "client_id": f"meterd-{campus.name}"}))
    parts.append(_table("[[links]]", {"name": "campus-modbus", "url": modbus_url,
                                      "interval_s": interval_s, "timeout_s": 1.0, "retries": 0}))
    for m in campus.meters:
        if m.unit_id is None and not mqtt_url:
            continue
        parts.append(_table("[[meters]]", _meter_items(campus, m, register_max)))
    parts.append(_table("[calendar]", {"breaks": list(campus.breaks)}))
    return "".join(parts)


def _meter_items(campus: Campus, m: MeterSpec, register_max: dict[int, float]
                 ) -> dict[str, object]:
    items: dict[str, object] = {"id": m.id, "kind": m.kind, "campus": campus.name,
                                "building": m.building, "canteen": m.canteen, "parent": m.parent}
    if m.unit_id is not None:
        items |= {"link": "campus-modbus", "unit_id": m.unit_id, "profile": m.profile,
                  "register_max": register_max.get(m.unit_id)}
    else:
        fields = ["air_temp_c"] if m.kind == "weather" else ["volume_m3", "flow_m3h"]
        items |= {"mqtt_topic": mqtt_topic(campus, m), "mqtt_map": {f: f for f in fields}}
    return items


def write_config(path: Path, text: str) -> Config:
    """Validate ``text`` with meterd's own loader, then write it (so a bad file is never left)."""
    import tomllib

    cfg = parse_config(tomllib.loads(text))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return cfg
