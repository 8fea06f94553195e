"""Generate the Grafana dashboards in this folder: ``.venv/bin/python dashboards/build.py``.

The JSON files are generated so that every panel shares one set of filters, datasource uids and
units; ``tests/test_dashboards.py`` fails when a committed JSON file differs from this output.
Every InfluxQL query is a raw query (``rawQuery: true``) so the test can run it against a real
``influxd`` after substituting Grafana's macros.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meterd.analysis.incidents import QUALITY_TYPES

HERE = Path(__file__).resolve().parent

INFLUX: dict[str, str] = {"type": "influxdb", "uid": "meterd-influxdb"}
PROM: dict[str, str] = {"type": "prometheus", "uid": "meterd-prometheus"}

# Every InfluxQL panel honours the same three selectors.
FILTER = ('"campus" =~ /^$campus$/ AND "building" =~ /^$building$/ '
          'AND "meter" =~ /^$meter$/ AND $timeFilter')
CANTEEN_FILTER = '"canteen" =~ /^$canteen$/ AND $timeFilter'
# Days are the site's days: the `tz` variable must hold [site] timezone.
TZ = "tz('$tz')"

M3H = "suffix: m³/h"


# ----------------------------------------------------------------------------- queries


def sum_of_meters(field: str, measurement: str, group: str) -> str:
    """Average ``field`` per meter per interval, then add the meters up by ``group``."""
    return (f'SELECT sum("v") FROM (SELECT mean("{field}") AS "v" FROM "{measurement}" '
            f'WHERE {FILTER} GROUP BY time($__interval), "meter", "{group}" fill(none)) '
            f'WHERE $timeFilter GROUP BY time($__interval), "{group}" fill(none)')


def daily(field: str, kind: str, group: str, where: str = FILTER) -> str:
    """Daily total of a consumption delta; a point counts for the day its interval ended in."""
    return (f'SELECT sum("{field}") FROM "consumption" WHERE "kind" = \'{kind}\' AND {where} '
            f'GROUP BY time(1d), "{group}" fill(none) {TZ}')


HOURLY_WATER = ('SELECT sum("volume_m3") FROM "consumption" WHERE "kind" = \'water\' AND '
                f'{FILTER} GROUP BY time(1h), "meter" fill(none) {TZ}')

# Minimum night flow (02:00-05:00 site time) per meter and night, in m³/h. InfluxQL has no
# hour-of-day function, so: hourly mean flow (volume over the seconds it covers, so a data gap
# does not read as a quiet hour) -> minimum per 3 h bucket aligned at 02:00 (night buckets with no
# data become -1) -> the first 3 h bucket of each day aligned at 02:00, i.e. the night -> drop the
# -1s. The first day bucket starts before the time range (so its first 3 h bucket is not a night)
# and InfluxDB 1.x does not apply an outer time condition to subquery rows: OFFSET 1 drops it.
NIGHT_FLOW = (
    'SELECT "mnf" FROM ('
    'SELECT first("q3") AS "mnf" FROM ('
    'SELECT min("q") AS "q3" FROM ('
    'SELECT sum("volume_m3") * 3600 / sum("interval_s") AS "q" FROM "consumption" '
    f'WHERE "kind" = \'water\' AND {FILTER} GROUP BY time(1h), "meter" fill(none) {TZ}) '
    f'WHERE $timeFilter GROUP BY time(3h, 2h), "meter" fill(-1) {TZ}) '
    f'WHERE $timeFilter GROUP BY time(1d, 2h), "meter" fill(none) OFFSET 1 {TZ}) '
    'WHERE "mnf" >= 0 AND $timeFilter GROUP BY "meter"')

# The leak job writes one point per incident at its start and overwrites it as the incident grows
# and closes (meterd/leaks/io.py), so "open" is simply open = 1. No time filter: an incident that
# started before the dashboard's range and is still open must be listed.
INCIDENT_FILTER = '"campus" =~ /^$campus$/ AND "building" =~ /^$building$/ AND "meter" =~ /^$meter$/'
# Data-quality incidents (a stopped meter, reverse flow) send a meter technician, not a plumber.
QUALITY = f'/^({"|".join(QUALITY_TYPES)})$/'
OPEN_INCIDENTS = ('SELECT "meter", "type", "rate_m3h", "volume_m3" FROM "incidents" '
                  f'WHERE "open" = 1 AND "type" !~ {QUALITY} AND {INCIDENT_FILTER}')
OPEN_FAULTS = ('SELECT "meter", "type", "detected_at" FROM "incidents" '
               f'WHERE "open" = 1 AND "type" =~ {QUALITY} AND {INCIDENT_FILTER}')

# Every leak that started in the range, open or closed; "end" is epoch seconds and Grafana wants
# the annotation's end in milliseconds.
INCIDENT_ANNOTATIONS = ('SELECT "rate_m3h", "volume_m3", "meter", "type", "end" * 1000 AS "end_ms" '
                        f'FROM "incidents" WHERE "type" !~ {QUALITY} AND {INCIDENT_FILTER} '
                        'AND $timeFilter')

METER_EVENTS = ('SELECT count("after") FROM "meter_events" WHERE ' + FILTER
                + ' GROUP BY "meter", "type"')

MEALS = ('SELECT sum("meals") FROM "canteen_activity" WHERE ' + CANTEEN_FILTER
         + f' GROUP BY time(1d), "canteen" fill(none) {TZ}')


# ----------------------------------------------------------------------------- model helpers


def influx_target(ref: str, query: str, alias: str = "", fmt: str = "time_series") -> dict[str, Any]:
    t: dict[str, Any] = {"refId": ref, "datasource": INFLUX, "rawQuery": True, "query": query,
                         "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def prom_target(ref: str, expr: str, legend: str) -> dict[str, Any]:
    return {"refId": ref, "datasource": PROM, "expr": expr, "legendFormat": legend, "range": True}


def panel(title: str, targets: list[dict[str, Any]], unit: str, *, kind: str = "timeseries",
          bars: bool = False, ds: dict[str, str] = INFLUX, description: str = "",
          **extra: Any) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "bars", "fillOpacity": 80} if bars else {}
    p: dict[str, Any] = {
        "type": kind, "title": title, "datasource": ds, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["mean", "max", "sum"] if bars else ["mean", "max"]}},
    }
    if description:
        p["description"] = description
    p.update(extra)
    return p


def layout(panels: list[dict[str, Any]], width: int = 12, height: int = 8) -> list[dict[str, Any]]:
    """Two panels per row, ids in order; a panel may ask for full width with ``w``."""
    x = y = 0
    for i, p in enumerate(panels, start=1):
        w = p.pop("w", width)
        if x + w > 24:
            x, y = 0, y + height
        p["id"] = i
        p["gridPos"] = {"h": height, "w": w, "x": x, "y": y}
        x += w
    return panels


def tag_variable(name: str, label: str, query: str, all_value: str = ".*") -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": INFLUX, "query": query,
            "definition": query, "refresh": 1, "multi": True, "includeAll": True, "allValue": all_value,
            "sort": 1, "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [], "hide": 0}


def tz_variable() -> dict[str, Any]:
    return {"name": "tz", "label": "Site time zone", "type": "textbox", "query": "UTC",
            "current": {"text": "UTC", "value": "UTC"}, "hide": 0,
            "description": "The [site] timezone of meterd.toml: days and nights are cut in it."}


CAMPUS = tag_variable("campus", "Campus", 'SHOW TAG VALUES WITH KEY = "campus"')
BUILDING = tag_variable("building", "Building",
                        'SHOW TAG VALUES WITH KEY = "building" WHERE "campus" =~ /^$campus$/')
METER = tag_variable("meter", "Meter", 'SHOW TAG VALUES WITH KEY = "meter" '
                     'WHERE "campus" =~ /^$campus$/ AND "building" =~ /^$building$/')
# ".+": "All" means every canteen, not every meter (meters without a canteen have no such tag).
CANTEEN = tag_variable("canteen", "Canteen", 'SHOW TAG VALUES WITH KEY = "canteen"', ".+")


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]],
              annotations: list[dict[str, Any]] | None = None, time_from: str = "now-7d",
              description: str = "") -> dict[str, Any]:
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
               "name": "Annotations & Alerts", "type": "dashboard"}
    return {
        "uid": uid, "title": title, "description": description, "tags": ["meterd"],
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "timezone": "browser", "refresh": "5m", "time": {"from": time_from, "to": "now"},
        "annotations": {"list": [builtin, *(annotations or [])]},
        "templating": {"list": variables}, "links": [], "panels": layout(panels),
    }


# ----------------------------------------------------------------------------- dashboards


def overview() -> dict[str, Any]:
    panels = [
        panel("Electric power by building", [influx_target(
            "A", sum_of_meters("power_kw", "electricity", "building"), "$tag_building")], "kwatt"),
        panel("Daily electricity by building", [influx_target(
            "A", daily("energy_kwh", "electricity", "building"), "$tag_building")], "kwatth",
            bars=True),
        panel("Water flow by building", [influx_target(
            "A", sum_of_meters("flow_m3h", "water", "building"), "$tag_building")], M3H),
        panel("Daily water by building", [influx_target(
            "A", daily("volume_m3", "water", "building"), "$tag_building")], "m3", bars=True),
        panel("Gas flow by building", [influx_target(
            "A", sum_of_meters("flow_m3h", "gas", "building"), "$tag_building")], M3H),
        panel("Daily gas by building", [influx_target(
            "A", daily("volume_m3", "gas", "building"), "$tag_building")], "m3", bars=True),
        panel("Meter events (rollover, replacement, implausible jump, backwards)", [influx_target(
            "A", METER_EVENTS, fmt="table")], "short", kind="table", w=24,
            description="Counter anomalies the ingest stage handled; see docs/schema.md."),
    ]
    return dashboard("meterd-campus-overview", "meterd / Campus overview", panels,
                     [tz_variable(), CAMPUS, BUILDING, METER],
                     description="Electricity, water and gas by building.")


def water() -> dict[str, Any]:
    annotation = {
        "datasource": INFLUX, "enable": True, "iconColor": "red", "name": "Leak incidents",
        "query": INCIDENT_ANNOTATIONS, "titleColumn": "meter", "tagsColumn": "type",
        "textColumn": "rate_m3h",  # m³/h; from the start to the end (open: a point)
        "timeEndColumn": "end_ms",
    }
    panels = [
        panel("Hourly water consumption per meter", [influx_target("A", HOURLY_WATER,
              "$tag_meter")], "m3", bars=True, w=24),
        panel("Minimum night flow (02:00-05:00) per meter", [influx_target("A", NIGHT_FLOW,
              "$tag_meter")], M3H, bars=True,
              description="Lowest hourly mean flow between 02:00 and 05:00 site time, one bar "
                          "per night: the usual leak indicator for a building that should be "
                          "empty at night."),
        panel("Open leak incidents", [influx_target("A", OPEN_INCIDENTS, fmt="table")], "short",
              kind="table", description="Every leak incident still open, however long ago it "
                                        "started; time is its start."),
        panel("Open meter faults", [influx_target("A", OPEN_FAULTS, fmt="table")], "short",
              kind="table", description="Data-quality incidents still open: a meter that stopped "
                                        "while its zone used water, or a flow running backwards. "
                                        "No water lost; the meter needs a visit."),
    ]
    return dashboard("meterd-water-leaks", "meterd / Water and leaks", panels,
                     [tz_variable(), CAMPUS, BUILDING, METER], [annotation],
                     description="Hourly water use, night flow and leak incidents.")


def per_meal_panel() -> dict[str, Any]:
    names = {"A": "kWh", "B": "water m³", "C": "gas m³"}
    queries = {"A": daily("energy_kwh", "electricity", "canteen", CANTEEN_FILTER),
               "B": daily("volume_m3", "water", "canteen", CANTEEN_FILTER),
               "C": daily("volume_m3", "gas", "canteen", CANTEEN_FILTER)}
    targets = [influx_target(r, q, names[r]) for r, q in queries.items()]
    targets.append(influx_target("D", MEALS, "meals"))
    # InfluxQL cannot join measurements; both are stamped at the site's local midnight, so
    # Grafana joins them on time.
    transforms: list[dict[str, Any]] = [
        {"id": "joinByField", "options": {"byField": "Time", "mode": "outer"}}]
    for name in names.values():
        transforms.append({"id": "calculateField", "options": {
            "mode": "binary", "alias": f"{name} per meal", "replaceFields": False,
            "binary": {"left": name, "operator": "/", "right": "meals"}}})
    transforms.append({"id": "organize", "options": {
        "excludeByName": {n: True for n in [*names.values(), "meals"]}}})
    return panel("Per meal: $canteen", targets, "short", bars=True, transformations=transforms,
                 repeat="canteen", repeatDirection="h", w=24,
                 description="Daily consumption divided by the day's meals (canteen_activity).")


def canteens() -> dict[str, Any]:
    panels = [
        panel("Daily electricity per canteen", [influx_target(
            "A", daily("energy_kwh", "electricity", "canteen", CANTEEN_FILTER), "$tag_canteen")],
            "kwatth", bars=True),
        panel("Daily water per canteen", [influx_target(
            "A", daily("volume_m3", "water", "canteen", CANTEEN_FILTER), "$tag_canteen")],
            "m3", bars=True),
        panel("Daily gas per canteen", [influx_target(
            "A", daily("volume_m3", "gas", "canteen", CANTEEN_FILTER), "$tag_canteen")],
            "m3", bars=True),
        panel("Meals per day", [influx_target("A", MEALS, "$tag_canteen")], "short", bars=True),
        per_meal_panel(),
    ]
    return dashboard("meterd-canteens", "meterd / Canteens", panels, [tz_variable(), CANTEEN],
                     time_from="now-30d", description="Daily energy, water and gas per canteen "
                                                      "and per meal.")


def health() -> dict[str, Any]:
    rate = "[$__rate_interval]"
    panels = [
        panel("Spool pending readings", [prom_target(
            "A", "sum by (instance) (meterd_spool_pending)", "{{instance}}")], "short", ds=PROM,
            description="Readings durable on disk but not yet acknowledged by InfluxDB: grows "
                        "while InfluxDB is unreachable."),
        panel("Rejected readings by reason", [prom_target(
            "A", f"sum by (source, reason) (rate(meterd_rejected_total{rate}))",
            "{{source}} {{reason}}")], "reqps", ds=PROM),
        panel("Readings received by measurement", [prom_target(
            "A", f"sum by (measurement) (rate(meterd_readings_received_total{rate}))",
            "{{measurement}}")], "reqps", ds=PROM),
        panel("InfluxDB write errors by kind", [prom_target(
            "A", f"sum by (kind) (rate(meterd_influx_write_errors_total{rate}))", "{{kind}}")],
            "reqps", ds=PROM),
        panel("Points dropped because the spool was full", [prom_target(
            "A", f"sum(increase(meterd_spool_dropped_total{rate}))", "dropped")], "short",
            ds=PROM, description="Non-zero only with [spool] on_full = \"drop_oldest\": data loss."),
        panel("meterd up", [prom_target("A", 'up{job="meterd"}', "{{instance}}")], "none",
              kind="stat", ds=PROM),
    ]
    return dashboard("meterd-health", "meterd / Health", panels, [], time_from="now-24h",
                     description="meterd's own Prometheus metrics (Prometheus datasource).")


DASHBOARDS = {
    "campus-overview.json": overview,
    "water-leaks.json": water,
    "canteens.json": canteens,
    "meterd-health.json": health,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for name in DASHBOARDS:
        (HERE / name).write_text(render(name), encoding="utf-8")
        print(f"wrote dashboards/{name}")


if __name__ == "__main__":
    main()
