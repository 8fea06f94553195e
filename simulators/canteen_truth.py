"""Synthetic canteens with KNOWN true savings, to test the canteen savings analysis end to end.

Each canteen uses electricity, water and gas driven by meals served, heating/cooling degree days
and the term calendar, with autocorrelated noise. From the start of the second school year every
utility uses a fixed fraction less than it would have (the true savings). The data is written the
way the ingest stage writes it: ``consumption`` points (per-interval deltas, time = interval end,
``interval_s``), one long point across each data gap, and a meter replaced mid-year (new meter id
plus a ``meter_events`` point; consumption is continuous across it). Weather readings and the
``canteen_activity`` CSV complete the picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from meterd.analysis.baseline import BREAK, TERM, WEEKEND, day_types, degree_days

UTILITIES = ("electricity", "water", "gas")
FIELD = {"electricity": "energy_kwh", "water": "volume_m3", "gas": "volume_m3"}
TARGETS = {"electricity": 0.10, "water": 0.10, "gas": 0.05}
# True savings are drawn at least this far from the target, so the verdict is decidable.
VERDICT_MARGIN = 0.03


@dataclass
class SyntheticSite:
    """Everything the generator made: config text, line protocol, activity CSV and the truth."""

    config_toml: str
    lines: list[str]
    activity_csv: str
    days: NDArray[np.datetime64]
    # canteen -> utility -> daily actual use and the use without savings (same noise)
    actual: dict[str, dict[str, NDArray[np.float64]]] = field(default_factory=dict)
    counterfactual: dict[str, dict[str, NDArray[np.float64]]] = field(default_factory=dict)
    canteens: list[str] = field(default_factory=list)

    def true_savings_pct(self, canteen: str, utility: str, start: date, end: date) -> float:
        """True savings over local dates ``[start, end)``, percent of the use without savings."""
        sel = (self.days >= np.datetime64(start)) & (self.days < np.datetime64(end))
        cf = self.counterfactual[canteen][utility][sel].sum()
        return float(100.0 * (cf - self.actual[canteen][utility][sel].sum()) / cf)


def school_breaks(first: date, years: int) -> list[tuple[date, date]]:
    """Winter and summer breaks of each school year starting ``first`` (a 1 September)."""
    out = []
    for y in range(first.year, first.year + years):
        out.append((date(y + 1, 1, 16), date(y + 1, 2, 24)))
        out.append((date(y + 1, 7, 6), date(y + 1, 8, 31)))
    return out


def _ar1(rng: np.random.Generator, n: int, rho: float, sd: float) -> NDArray[np.float64]:
    e = rng.normal(0.0, sd * np.sqrt(1 - rho**2), n)
    out = np.empty(n)
    prev = rng.normal(0.0, sd)
    for i in range(n):
        prev = rho * prev + e[i]
        out[i] = prev
    return out


def _true_savings(rng: np.random.Generator, target: float) -> float:
    while True:
        s = float(rng.uniform(-0.05, 0.22))
        if abs(s - target) >= VERDICT_MARGIN:
            return s


def _day_edges(days: NDArray[np.datetime64], tz: ZoneInfo) -> NDArray[np.int64]:
    stamps = [datetime.fromisoformat(str(d)).replace(tzinfo=tz).timestamp() for d in days]
    last = datetime.fromisoformat(str(days[-1] + 1)).replace(tzinfo=tz).timestamp()
    return np.array([*stamps, last], dtype=np.int64)


def _profile(n_steps: int) -> NDArray[np.float64]:
    """Within-day shape: kitchen peaks at breakfast, lunch and dinner."""
    h = (np.arange(n_steps) + 0.5) * 24.0 / n_steps
    shape = np.full(n_steps, 0.3)
    for a, c in ((0.6, 7.0), (1.0, 11.5), (0.8, 17.5)):
        shape += a * np.exp(-0.5 * ((h - c) / 1.2) ** 2)
    return np.asarray(shape / shape.sum(), dtype=np.float64)


class _Meter:
    """Emits consumption points for one utility meter, dropping readings in gaps."""

    def __init__(self, rng: np.random.Generator, n_days: int, step_s: int) -> None:
        self.lost = np.zeros(n_days * 86400 // step_s + 48, dtype=bool)
        for _ in range(int(rng.integers(2, 5))):
            g0 = int(rng.integers(0, len(self.lost) - 400))
            self.lost[g0:g0 + int(rng.integers(86400 // step_s, 6 * 86400 // step_s))] = True
        self.lost |= rng.random(len(self.lost)) < 0.005


def generate(seed: int, n_canteens: int = 3, first: date = date(2024, 9, 1), years: int = 2,
             step_s: int = 3600, tz: str = "Asia/Shanghai",
             influx_url: str = "http://127.0.0.1:8086") -> SyntheticSite:
    """Make ``n_canteens`` canteens over ``years`` school years from ``first``.

    The first school year is the baseline; savings start on the first day of the second.
    ``step_s`` is the meter reading interval (it must divide an hour or a day).
    """
    rng = np.random.default_rng(seed)
    zone = ZoneInfo(tz)
    end = date(first.year + years, first.month, first.day)
    days = np.arange(np.datetime64(first), np.datetime64(end), dtype="datetime64[D]")
    n = len(days)
    breaks = school_breaks(first, years)
    dtype = day_types(days, breaks)
    edges = _day_edges(days, zone)
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64)
    temp = 16.0 + 11.0 * np.sin(2 * np.pi * (doy - 105) / 365.25) + _ar1(rng, n, 0.7, 2.5)
    report_from = np.datetime64(date(first.year + 1, first.month, first.day))
    reporting = days >= report_from

    lines: list[str] = []
    for i in range(n):
        for s in range(0, int(edges[i + 1] - edges[i]), 3600):
            diurnal = -4.0 * np.cos(2 * np.pi * (s / 3600 - 3.0) / 24)
            lines.append(f"weather,meter=north-weather,campus=north "
                         f"air_temp_c={temp[i] + diurnal:.3f} {edges[i] + s}")
    site = SyntheticSite("", lines, "", days)
    csv = ["date,canteen,meals,revenue"]
    canteen_toml, meter_toml = [], []
    for c in range(n_canteens):
        cid = f"canteen-{chr(ord('a') + c)}" if c < 26 else f"canteen-{c:03d}"
        site.canteens.append(cid)
        size = float(rng.uniform(0.5, 2.0))
        meals_by_type = {TERM: 1500.0, WEEKEND: 600.0, BREAK: 200.0}
        meals = np.array([meals_by_type[int(t)] for t in dtype]) * size \
            * (1 + rng.normal(0, 0.08, n)) * np.where(reporting, rng.uniform(0.95, 1.08), 1.0)
        meals = np.round(np.maximum(meals, 0)).astype(np.float64)
        for i, d in enumerate(days):
            csv.append(f"{d},{cid},{int(meals[i])},{meals[i] * 11.5:.2f}")
        truth = {u: _true_savings(rng, TARGETS[u]) for u in UTILITIES}
        site.actual[cid], site.counterfactual[cid] = {}, {}
        hbp, cbp = float(rng.uniform(11, 15)), float(rng.uniform(20, 24))
        base_shut = np.where(dtype == BREAK, 0.5, np.where(dtype == WEEKEND, 0.8, 1.0))
        mean_use = {
            "electricity": size * (250.0 * base_shut + 0.0) + 0.9 * meals
            + size * 18.0 * degree_days(temp, hbp, "hdd")
            + size * 35.0 * degree_days(temp, cbp, "cdd"),
            "water": size * 6.0 * base_shut + 0.015 * meals,
            "gas": size * 12.0 * base_shut + 0.06 * meals
            + size * 2.5 * degree_days(temp, hbp, "hdd"),
        }
        for u in UTILITIES:
            cf = mean_use[u] * (1 + _ar1(rng, n, 0.4, 0.05))
            actual = cf * np.where(reporting, 1.0 - truth[u], 1.0)
            site.counterfactual[cid][u], site.actual[cid][u] = cf, actual
            mid = str(cid) + "-" + u[:4]
            lines += _consumption_lines(rng, mid, cid, u, actual, edges, step_s,
                                        replace_at=n // 2 + int(rng.integers(-60, 60))
                                        if u == "electricity" else None)
            meter_toml.append(_meter_toml(mid, u, cid))
            if u == "electricity":
                meter_toml.append(_meter_toml(mid + "-2", u, cid))
        canteen_toml.append(
            f'[[canteens]]\nid = "{cid}"\ncampus = "north"\nweather_meter = "north-weather"\n'
            f'baseline = {{ start = "{first}", end = "{report_from.astype(date) - timedelta(1)}" }}\n'
            "targets = { electricity = 0.10, water = 0.10, gas = 0.05 }\n")
    site.lines = lines
    site.activity_csv = "\n".join(csv) + "\n"
    site.config_toml = _config_toml(tz, influx_url, breaks, meter_toml, canteen_toml)
    return site


def _consumption_lines(rng: np.random.Generator, meter: str, canteen: str, kind: str,
                       daily: NDArray[np.float64], edges: NDArray[np.int64], step_s: int,
                       replace_at: int | None) -> list[str]:
    """Per-interval consumption as ingest writes it; a lost reading folds into the next one."""
    fld = FIELD[kind]
    lost = _Meter(rng, len(daily), step_s).lost
    out: list[str] = []
    pending, since, k = 0.0, int(edges[0]), 0
    reading = float(rng.uniform(1000, 50000))
    for i, use in enumerate(daily):
        steps = int(edges[i + 1] - edges[i]) // step_s
        shares = _profile(steps) * use
        if replace_at is not None and i == replace_at:
            out.append(f"meter_events,meter={meter},campus=north,building={canteen},kind={kind},"
                       f"type=replacement before={reading:.3f},after=0 {edges[i]}")
            meter, reading = meter + "-2", 0.0
        for s, share in enumerate(shares):
            pending += share
            reading += share
            t = int(edges[i]) + (s + 1) * step_s
            if lost[k % len(lost)] and not (i == len(daily) - 1 and s == steps - 1):
                k += 1
                continue
            k += 1
            out.append(f"consumption,meter={meter},campus=north,building={canteen},"
                       f"canteen={canteen},kind={kind} {fld}={pending:.6f},"
                       f"interval_s={t - since} {t}")
            pending, since = 0.0, t
    return out


def _meter_toml(mid: str, kind: str, canteen: str) -> str:
    return (f'[[meters]]\nid = "{mid}"\nkind = "{kind}"\ncampus = "north"\n'
            f'building = "{canteen}"\ncanteen = "{canteen}"\nmqtt_topic = "campus/{mid}"\n')


def _config_toml(tz: str, influx_url: str, breaks: list[tuple[date, date]],
                 meters: list[str], canteens: list[str]) -> str:
    brk = ", ".join(f'["{a}", "{b}"]' for a, b in breaks)
    return "\n".join([
        f'[site]\nname = "synthetic campus"\ntimezone = "{tz}"\n',
        f'[influxdb]\nurl = "{influx_url}"\ndatabase = "campus"\n',
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n',
        f"[calendar]\nbreaks = [{brk}]\n",
        "[tariffs]\nelectricity_per_kwh = 0.65\nwater_per_m3 = 4.2\ngas_per_m3 = 3.1\n",
        '[[meters]]\nid = "north-weather"\nkind = "weather"\ncampus = "north"\n'
        'mqtt_topic = "campus/north-weather"\n',
        *meters, *canteens,
        '[reports]\nto = ["logistics@example.edu"]\n',
    ])


def write_site(url: str, site: SyntheticSite, db: str = "campus", chunk: int = 50_000) -> None:
    """POST the site's line protocol (seconds precision) to an InfluxDB 1.x at ``url``."""
    import requests

    requests.post(f"{url}/query", params={"q": f'CREATE DATABASE "{db}"'},
                  timeout=30).raise_for_status()
    for i in range(0, len(site.lines), chunk):
        resp = requests.post(f"{url}/write", params={"db": db, "precision": "s"},
                             data="\n".join(site.lines[i:i + chunk]).encode(), timeout=120)
        if resp.status_code != 204:
            raise RuntimeError(f"write failed ({resp.status_code}): {resp.text[:300]}")
