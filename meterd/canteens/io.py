"""InfluxQL adapter: daily arrays for the canteen analysis, aggregated by the server.

Every query groups by ``time(1d)`` in the site time zone, so InfluxDB returns one row per local
day instead of every reading. Consumption points that carry a data gap (``interval_s`` above
:data:`GAP_S`) are fetched individually too, so the analysis can spread them over the days they
cover (see :func:`meterd.analysis.baseline.spread_gaps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from meterd.canteens.config import CanteenConfig
from meterd.sinks.influx.query import tag_regex

# A consumption point covering more than this is a gap lump, not an ordinary reading; shorter
# gaps stay on the day they end, which moves at most a few hours of use across midnight.
GAP_S = 6 * 3600
# How far past the window to look for a gap lump that started inside it.
GAP_LOOKAHEAD = timedelta(days=31)

FIELD = {"electricity": "energy_kwh", "water": "volume_m3", "gas": "volume_m3",
         "heat": "energy_kwh"}


class QueryClient(Protocol):
    def query(self, q: str, epoch: str = "s") -> list[dict[str, Any]]: ...


@dataclass
class Gaps:
    end_s: list[float] = field(default_factory=list)
    length_s: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)


@dataclass
class DailyData:
    """Daily arrays over local dates ``days``; ``edges_s[i]`` is day i's local midnight."""

    days: NDArray[np.datetime64]
    edges_s: NDArray[np.int64]
    use: dict[tuple[str, str], NDArray[np.float64]] = field(default_factory=dict)
    gaps: dict[tuple[str, str], Gaps] = field(default_factory=dict)
    meals: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    revenue: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    temp: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    def series(self, store: dict[Any, NDArray[np.float64]], key: Any) -> NDArray[np.float64]:
        return store.get(key, np.full(len(self.days), np.nan))


def local_midnights(first: date, end: date, tz: ZoneInfo) -> NDArray[np.int64]:
    """Epoch seconds of local midnight for every date in ``[first, end]`` (both included)."""
    out, d = [], first
    while d <= end:
        out.append(int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()))
        d += timedelta(days=1)
    return np.array(out, dtype=np.int64)


def fetch_daily(client: QueryClient, canteens: list[CanteenConfig], start: date, end: date,
                tz: str) -> DailyData:
    """Daily consumption, gap lumps, meals, revenue and mean temperature for ``[start, end)``.

    Four queries cover every canteen at once; the server does the daily sums.
    """
    zone = ZoneInfo(tz)
    days = np.arange(np.datetime64(start), np.datetime64(end), dtype="datetime64[D]")
    edges = local_midnights(start, end, zone)
    data = DailyData(days, edges)
    index = {int(t): i for i, t in enumerate(edges[:-1])}
    t0, t1 = int(edges[0]), int(edges[-1])
    window = f"time >= {t0}s AND time < {t1}s"
    group = f"fill(none) tz('{tz}')"
    ids = tag_regex([c.id for c in canteens])
    _fill(data, client.query(
        f'SELECT sum("energy_kwh") AS kwh, sum("volume_m3") AS m3 FROM "consumption" '
        f'WHERE {window} AND "canteen" =~ {ids} GROUP BY time(1d), "canteen", "kind" {group}'),
        index, lambda tags, cols: {(tags["canteen"], tags["kind"]): _pick(tags["kind"], cols)},
        data.use)
    _gaps(data, client.query(
        f'SELECT "energy_kwh", "volume_m3", "interval_s" FROM "consumption" '
        f'WHERE time > {t0}s AND time < {t1 + int(GAP_LOOKAHEAD.total_seconds())}s '
        f'AND "interval_s" > {GAP_S} AND "canteen" =~ {ids} GROUP BY "canteen", "kind"'))
    _fill(data, client.query(
        f'SELECT sum("meals") AS meals, sum("revenue") AS revenue FROM "canteen_activity" '
        f'WHERE {window} AND "canteen" =~ {ids} GROUP BY time(1d), "canteen" {group}'),
        index, lambda tags, cols: {tags["canteen"]: cols["meals"]}, data.meals)
    _fill(data, client.query(
        f'SELECT sum("revenue") AS revenue FROM "canteen_activity" '
        f'WHERE {window} AND "canteen" =~ {ids} GROUP BY time(1d), "canteen" {group}'),
        index, lambda tags, cols: {tags["canteen"]: cols["revenue"]}, data.revenue)
    weather = sorted({c.weather_meter for c in canteens if c.weather_meter})
    if weather:
        _fill(data, client.query(
            f'SELECT mean("air_temp_c") AS t FROM "weather" WHERE {window} '
            f'AND "meter" =~ {tag_regex(weather)} GROUP BY time(1d), "meter" {group}'),
            index, lambda tags, cols: {tags["meter"]: cols["t"]}, data.temp)
    return data


def _pick(kind: str, cols: dict[str, Any]) -> Any:
    return cols["kwh"] if FIELD.get(kind) == "energy_kwh" else cols["m3"]


def _fill(data: DailyData, series: list[dict[str, Any]], index: dict[int, int],
          extract: Any, store: dict[Any, NDArray[np.float64]]) -> None:
    """Place each series' daily values into ``store`` by the key ``extract`` returns."""
    for s in series:
        tags = s.get("tags") or {}
        cols = s["columns"]
        for row in s.get("values") or []:
            named = dict(zip(cols, row, strict=True))
            i = index.get(int(named["time"]))
            if i is None:
                continue  # a bucket of a DST-shifted midnight outside the window
            for key, value in extract(tags, named).items():
                if value is None:
                    continue
                arr = store.setdefault(key, np.full(len(data.days), np.nan))
                arr[i] = (0.0 if np.isnan(arr[i]) else arr[i]) + float(value)


def _gaps(data: DailyData, series: list[dict[str, Any]]) -> None:
    for s in series:
        tags = s.get("tags") or {}
        key = (tags.get("canteen", ""), tags.get("kind", ""))
        cols = s["columns"]
        value_col = "energy_kwh" if FIELD.get(key[1]) == "energy_kwh" else "volume_m3"
        g = data.gaps.setdefault(key, Gaps())
        for row in s.get("values") or []:
            named = dict(zip(cols, row, strict=True))
            if named.get(value_col) is None or named.get("interval_s") is None:
                continue
            g.end_s.append(float(named["time"]))
            g.length_s.append(float(named["interval_s"]))
            g.value.append(float(named[value_col]))
