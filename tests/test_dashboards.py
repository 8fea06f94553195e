"""Every dashboard query runs against a real influxd (or VictoriaMetrics) loaded with a small campus.

No Grafana server exists here, so Grafana's part is done by hand: the macros (``$timeFilter``,
``$__interval``, template variables) are substituted the way Grafana's InfluxQL datasource does,
and each query must parse and return exactly the series and values the dataset implies.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from simulators.local_servers import InfluxServer, VictoriaMetricsServer

REPO = Path(__file__).resolve().parent.parent
DASH = REPO / "dashboards"
INFLUX_FILES = ("campus-overview.json", "water-leaks.json", "canteens.json")

TZ = "Asia/Shanghai"
D0 = 1_709_481_600  # 2024-03-04 00:00 in Asia/Shanghai
H, DAY = 3600, 86_400
# The "All" values of the dashboards' variables, with campus narrowed to one.
VARS = {"campus": "north", "building": ".*", "meter": ".*", "canteen": ".+", "tz": TZ}

Series = dict[tuple[tuple[str, str], ...], dict[int, float]]


def _load_build() -> Any:
    spec = importlib.util.spec_from_file_location("dashboard_build", DASH / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASH.glob("*.json"))}


# ----------------------------------------------------------------------------- the dataset

ELECTRICITY = {"e1": ("north", "library", None, 10.0), "e2": ("north", "library", None, 5.0),
               "e3": ("north", "canteen_a", "c1", 20.0), "e4": ("south", "lab", None, 7.0)}


def water_m3(meter: str, hour: int) -> float:
    """Per 15 minutes: w1 is quiet 02:00-05:00, the others are constant."""
    if meter == "w1":
        return 0.05 if 2 <= hour < 5 else 0.5
    return {"w2": 0.1, "w3": 1.0, "g1": 0.25, "w4": 0.1}[meter]


FLOWS = {"w1": ("water", "north", "library", None), "w2": ("water", "north", "canteen_a", "c1"),
         "w3": ("water", "south", "lab", None), "g1": ("gas", "north", "canteen_a", "c1"),
         "w4": ("water", "east", "dorm", None)}


def _tags(meter: str, campus: str, building: str, canteen: str | None, **more: str) -> str:
    tags = {"meter": meter, "campus": campus, "building": building, **more}
    if canteen:
        tags["canteen"] = canteen
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def dataset() -> list[str]:
    """Two site days of 15-minute readings in the docs/schema.md schema."""
    lines: list[str] = []
    for k in range(192):
        t, hour = D0 + 900 * k, (k // 4) % 24
        for m, (campus, building, canteen, kw) in ELECTRICITY.items():
            tags = _tags(m, campus, building, canteen)
            lines.append(f"electricity,{tags} power_kw={kw},energy_kwh={kw * k / 4} {t}")
            lines.append(f"consumption,{_tags(m, campus, building, canteen, kind='electricity')} "
                         f"energy_kwh={kw / 4},interval_s=900 {t}")
        for m, (kind, campus, building, canteen) in FLOWS.items():
            if m == "w4" and k < 24:  # w4 is offline until 06:00 on the first day
                continue
            v = water_m3(m, hour)
            lines.append(f"{kind},{_tags(m, campus, building, canteen)} flow_m3h={v * 4} {t}")
            lines.append(f"consumption,{_tags(m, campus, building, canteen, kind=kind)} "
                         f"volume_m3={v},interval_s=900 {t}")
    lines += [
        f"meter_events,{_tags('e1', 'north', 'library', None, kind='electricity', type='rollover')}"
        f" before=99999.9,after=0.1 {D0 + H}",
        f"meter_events,{_tags('w1', 'north', 'library', None, kind='water', type='replacement')}"
        f" before=1234.5,after=0 {D0 + 2 * H}",
        f"meter_events,{_tags('e4', 'south', 'lab', None, kind='electricity', type='backwards')}"
        f" before=10,after=9 {D0 + 3 * H}",
        # One point per incident at its start, overwritten as it evolves (meterd/leaks/io.py).
        f"incidents,{_tags('w1', 'north', 'library', None, type='night_flow')} rate_m3h=0.2,"
        f"volume_m3=0.6,open=0,end={D0 + 8 * H} {D0 + 4 * H}",
        f"incidents,{_tags('w1', 'north', 'library', None, type='night_flow')} rate_m3h=0.2,"
        f"volume_m3=5.4,open=1 {D0 + 28 * H}",
        f"incidents,{_tags('w2', 'north', 'canteen_a', None, type='continuous_flow')} "
        f"rate_m3h=0.4,volume_m3=2,open=1 {D0 + 5 * H}",
        f"incidents,{_tags('w1', 'north', 'library', None, type='burst')} rate_m3h=3,"
        f"volume_m3=700,open=1 {D0 - 10 * DAY}",  # still open, started before the range
        f"incidents,{_tags('w3', 'south', 'lab', None, type='burst')} rate_m3h=9,"
        f"volume_m3=9,open=1 {D0 + 6 * H}",  # another campus
        f"incidents,{_tags('w2', 'north', 'canteen_a', None, type='stopped_meter')} rate_m3h=0,"
        f"volume_m3=0,open=1,detected_at={D0 + 9 * H} {D0 + 7 * H}",  # data quality: not a leak
        f"canteen_activity,canteen=c1 meals=500,revenue=6000 {D0}",
        f"canteen_activity,canteen=c1 meals=400 {D0 + DAY}",
        f"canteen_activity,canteen=c2 meals=100 {D0}",
    ]
    return lines


def series(tagsets: dict[str, dict[int, float]], key: str) -> Series:
    return {((key, tag),): values for tag, values in tagsets.items()}


def both_days(v: float, offset: int = 0) -> dict[int, float]:
    return {D0 + offset: v, D0 + DAY + offset: v}


HOURS = range(0, 48 * H, H)
W1_HOURLY = {D0 + h: (0.2 if 2 <= (h // H) % 24 < 5 else 2.0) for h in HOURS}

# What each target must return for the dataset: (file, panel title, refId) -> series.
EXPECTED: dict[tuple[str, str, str], Series] = {
    ("campus-overview.json", "Electric power by building", "A"): series(
        {"library": {D0 + h: 15.0 for h in HOURS}, "canteen_a": {D0 + h: 20.0 for h in HOURS}},
        "building"),
    ("campus-overview.json", "Daily electricity by building", "A"): series(
        {"library": both_days(360.0), "canteen_a": both_days(480.0)}, "building"),
    ("campus-overview.json", "Water flow by building", "A"): series(
        {"library": W1_HOURLY, "canteen_a": {D0 + h: 0.4 for h in HOURS}}, "building"),
    ("campus-overview.json", "Daily water by building", "A"): series(
        {"library": both_days(42.6), "canteen_a": both_days(9.6)}, "building"),
    ("campus-overview.json", "Gas flow by building", "A"): series(
        {"canteen_a": {D0 + h: 1.0 for h in HOURS}}, "building"),
    ("campus-overview.json", "Daily gas by building", "A"): series(
        {"canteen_a": both_days(24.0)}, "building"),
    ("campus-overview.json",
     "Meter events (rollover, replacement, implausible jump, backwards)", "A"): {
        (("meter", "e1"), ("type", "rollover")): {0: 1.0},
        (("meter", "w1"), ("type", "replacement")): {0: 1.0}},
    ("water-leaks.json", "Hourly water consumption per meter", "A"): series(
        {"w1": W1_HOURLY, "w2": {D0 + h: 0.4 for h in HOURS}}, "meter"),
    # One bar per night, stamped 02:00; the partial day before the range start is dropped.
    ("water-leaks.json", "Minimum night flow (02:00-05:00) per meter", "A"): series(
        {"w1": both_days(0.2, 2 * H), "w2": both_days(0.4, 2 * H)}, "meter"),
    ("water-leaks.json", "Open leak incidents", "A"): {
        (): {D0 - 10 * DAY: "w1", D0 + 5 * H: "w2", D0 + 28 * H: "w1"}},
    ("water-leaks.json", "Open meter faults", "A"): {(): {D0 + 7 * H: "w2"}},
    ("water-leaks.json", "annotation: Leak incidents", "query"): {
        (): {D0 + 4 * H: 0.2, D0 + 5 * H: 0.4, D0 + 28 * H: 0.2}},
    ("canteens.json", "Daily electricity per canteen", "A"): series({"c1": both_days(480.0)},
                                                                    "canteen"),
    ("canteens.json", "Daily water per canteen", "A"): series({"c1": both_days(9.6)}, "canteen"),
    ("canteens.json", "Daily gas per canteen", "A"): series({"c1": both_days(24.0)}, "canteen"),
    ("canteens.json", "Meals per day", "A"): series(
        {"c1": {D0: 500.0, D0 + DAY: 400.0}, "c2": {D0: 100.0}}, "canteen"),
    ("canteens.json", "Per meal: $canteen", "A"): series({"c1": both_days(480.0)}, "canteen"),
    ("canteens.json", "Per meal: $canteen", "B"): series({"c1": both_days(9.6)}, "canteen"),
    ("canteens.json", "Per meal: $canteen", "C"): series({"c1": both_days(24.0)}, "canteen"),
    ("canteens.json", "Per meal: $canteen", "D"): series(
        {"c1": {D0: 500.0, D0 + DAY: 400.0}, "c2": {D0: 100.0}}, "canteen"),
}

EXPECTED_VARIABLES = {
    "campus": {"north", "south", "east"},
    "building": {"library", "canteen_a"},
    "meter": {"e1", "e2", "e3", "w1", "w2", "g1"},
    "canteen": {"c1", "c2"},
}


# ----------------------------------------------------------------------------- Grafana's part


def grafana_substitute(query: str, start_s: int, end_s: int, variables: dict[str, str]) -> str:
    """Expand macros as Grafana's InfluxQL datasource does (epoch-ms time filter, raw regex)."""
    q = query.replace("$timeFilter", f"time >= {start_s * 1000}ms and time <= {end_s * 1000 - 1}ms")
    q = q.replace("$__interval", "1h")
    for name in sorted(variables, key=len, reverse=True):
        q = q.replace(f"${name}", variables[name])
    leftover = re.findall(r"\$\w+", q)
    assert not leftover, f"unsubstituted macros {leftover} in {q}"
    return q


def influx_targets() -> Iterator[tuple[tuple[str, str, str], str]]:
    """Every InfluxQL query of dashboards 1-3: panel targets and annotations."""
    boards = dashboards()
    for name in INFLUX_FILES:
        board = boards[name]
        for p in board["panels"]:
            for t in p["targets"]:
                assert t["datasource"]["type"] == "influxdb" and t["rawQuery"], (name, p["title"])
                yield (name, p["title"], t["refId"]), t["query"]
        for a in board["annotations"]["list"]:
            if a.get("datasource", {}).get("type") == "influxdb":
                yield (name, f"annotation: {a['name']}", "query"), a["query"]


def run(server: InfluxServer, q: str) -> list[dict[str, Any]]:
    r = requests.post(f"{server.url}/query", params={"q": q, "db": "campus", "epoch": "s"},
                      timeout=30)
    r.raise_for_status()
    result = r.json()["results"][0]
    assert "error" not in result, f"{result['error']}\n{q}"
    return list(result.get("series", []))


def as_series(raw: list[dict[str, Any]], first_value_column: int = 1) -> Series:
    out: Series = {}
    for s in raw:
        key = tuple(sorted((s.get("tags") or {}).items()))
        out[key] = {row[0]: row[first_value_column] for row in s["values"]}
    return out


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def campus_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    server.start()
    try:
        requests.post(f"{server.url}/query", params={"q": "CREATE DATABASE campus"}, timeout=10)
        r = requests.post(f"{server.url}/write", params={"db": "campus", "precision": "s"},
                          data="\n".join(dataset()), timeout=30)
        assert r.status_code == 204, r.text
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- tests


def test_committed_json_is_what_build_py_generates() -> None:
    build = _load_build()
    for name in build.DASHBOARDS:
        assert (DASH / name).read_text(encoding="utf-8") == build.render(name), (
            f"dashboards/{name} is stale: run .venv/bin/python dashboards/build.py")


def test_uids_are_stable_and_datasources_are_the_provisioned_ones() -> None:
    boards = dashboards()
    assert {n: b["uid"] for n, b in boards.items()} == {
        "campus-overview.json": "meterd-campus-overview",
        "water-leaks.json": "meterd-water-leaks",
        "canteens.json": "meterd-canteens",
        "meterd-health.json": "meterd-health",
    }
    provisioned = (REPO / "deploy/grafana/provisioning/datasources/meterd.yml").read_text()
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for p in board["panels"]:
            assert f"uid: {p['datasource']['uid']}" in provisioned


def test_every_influx_target_has_an_expectation() -> None:
    assert {key for key, _ in influx_targets()} == set(EXPECTED)


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]}:{k[1]}:{k[2]}")
def test_influx_target_returns_expected_series(campus_influx: InfluxServer,
                                               key: tuple[str, str, str]) -> None:
    query = dict(influx_targets())[key]
    raw = run(campus_influx, grafana_substitute(query, D0, D0 + 2 * DAY, VARS))
    got = as_series(raw)
    if "Meter events" in key[1]:  # a table without GROUP BY time: Influx stamps it at epoch 0
        got = {k: {0: v} for k, vals in got.items() for v in vals.values()}
    want = EXPECTED[key]
    assert set(got) == set(want), query
    for tags, values in want.items():
        assert got[tags] == pytest.approx(values), (tags, query)


def test_meals_share_timestamps_with_daily_consumption(campus_influx: InfluxServer) -> None:
    """Grafana joins per-meal figures on time, so both must be stamped at local midnight."""
    targets = dict(influx_targets())
    one = {**VARS, "canteen": "c1"}  # the per-meal panel repeats with one canteen each
    energy = as_series(run(campus_influx, grafana_substitute(
        targets[("canteens.json", "Per meal: $canteen", "A")], D0, D0 + 2 * DAY, one)))
    meals = as_series(run(campus_influx, grafana_substitute(
        targets[("canteens.json", "Per meal: $canteen", "D")], D0, D0 + 2 * DAY, one)))
    assert set(energy[(("canteen", "c1"),)]) == set(meals[(("canteen", "c1"),)]) == {D0, D0 + DAY}


def test_leak_annotations_span_start_to_end_in_milliseconds(campus_influx: InfluxServer) -> None:
    """Grafana reads ``timeEndColumn`` as epoch milliseconds; ``end`` is stored in seconds."""
    q = dict(influx_targets())[("water-leaks.json", "annotation: Leak incidents", "query")]
    (raw,) = run(campus_influx, grafana_substitute(q, D0, D0 + 2 * DAY, VARS))
    end = {row[0]: row[raw["columns"].index("end_ms")] for row in raw["values"]}
    assert end == {D0 + 4 * H: (D0 + 8 * H) * 1000, D0 + 5 * H: None, D0 + 28 * H: None}


def test_filters_narrow_to_one_meter(campus_influx: InfluxServer) -> None:
    q = dict(influx_targets())[("water-leaks.json", "Hourly water consumption per meter", "A")]
    got = as_series(run(campus_influx, grafana_substitute(
        q, D0, D0 + 2 * DAY, {**VARS, "campus": "(north|south)", "meter": "(w1|w3)"})))
    assert set(got) == {(("meter", "w1"),), (("meter", "w3"),)}


NIGHT = ("water-leaks.json", "Minimum night flow (02:00-05:00) per meter", "A")


def test_night_flow_skips_a_night_without_data(campus_influx: InfluxServer) -> None:
    q = grafana_substitute(dict(influx_targets())[NIGHT], D0, D0 + 2 * DAY, {**VARS, "campus": "east"})
    assert as_series(run(campus_influx, q)) == {(("meter", "w4"),): {D0 + DAY + 2 * H: 0.4}}


def test_night_flow_with_a_range_starting_at_noon(campus_influx: InfluxServer) -> None:
    """The first (partial) day has no night in range: it must not show a daytime minimum."""
    q = grafana_substitute(dict(influx_targets())[NIGHT], D0 + 12 * H, D0 + 2 * DAY, VARS)
    got = as_series(run(campus_influx, q))
    assert got == {(("meter", "w1"),): {D0 + DAY + 2 * H: 0.2},
                   (("meter", "w2"),): {D0 + DAY + 2 * H: 0.4}}


def test_template_variable_queries(campus_influx: InfluxServer) -> None:
    boards = dashboards()
    seen: dict[str, str] = {}
    for name in INFLUX_FILES:
        for v in boards[name]["templating"]["list"]:
            if v["type"] == "query":
                assert seen.setdefault(v["name"], v["query"]) == v["query"], v["name"]
    assert set(seen) == set(EXPECTED_VARIABLES)
    for var, query in seen.items():
        raw = run(campus_influx, grafana_substitute(query, D0, D0 + DAY, VARS))
        values = {row[1] for s in raw for row in s["values"]}
        assert values == EXPECTED_VARIABLES[var], var


def _prom_text(ts_ms: int, pending: int, rejected: int) -> str:
    return (f'meterd_spool_pending{{job="meterd",instance="a:9108"}} {pending} {ts_ms}\n'
            f'meterd_rejected_total{{job="meterd",instance="a:9108",source="mqtt",'
            f'reason="non_numeric"}} {rejected} {ts_ms}\n'
            f'meterd_readings_received_total{{job="meterd",instance="a:9108",'
            f'measurement="water"}} {rejected * 10} {ts_ms}\n'
            f'meterd_influx_write_errors_total{{job="meterd",instance="a:9108",kind="timeout"}}'
            f' {rejected // 2} {ts_ms}\n'
            f'meterd_spool_dropped_total{{job="meterd",instance="a:9108"}} 0 {ts_ms}\n'
            f'up{{job="meterd",instance="a:9108"}} 1 {ts_ms}\n')


def test_health_dashboard_promql_against_victoria(tmp_path: Path) -> None:
    vm = VictoriaMetricsServer(tmp_path / "vm")
    (tmp_path / "vm").mkdir()
    vm.start()
    try:
        # A counter rising by 6 per minute: rate() must read 0.1/s.
        body = "".join(_prom_text((D0 + 60 * i) * 1000, 100 - i, 6 * i) for i in range(31))
        requests.post(f"{vm.url}/api/v1/import/prometheus", data=body, timeout=10).raise_for_status()
        vm.flush()
        board = dashboards()["meterd-health.json"]
        results: dict[str, list[float]] = {}
        for p in board["panels"]:
            for t in p["targets"]:
                expr = t["expr"].replace("$__rate_interval", "5m")
                r = requests.get(f"{vm.url}/api/v1/query", timeout=10,
                                 params={"query": expr, "time": D0 + 30 * 60})
                r.raise_for_status()
                results[p["title"]] = [float(s["value"][1]) for s in r.json()["data"]["result"]]
    finally:
        vm.stop()
    assert results["Spool pending readings"] == [70.0]
    assert results["Rejected readings by reason"] == pytest.approx([0.1])
    assert results["Readings received by measurement"] == pytest.approx([1.0])
    assert results["InfluxDB write errors by kind"] == pytest.approx([0.05])
    assert results["Points dropped because the spool was full"] == [0.0]
    assert results["meterd up"] == [1.0]

