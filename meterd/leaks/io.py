"""InfluxQL adapter: water consumption from InfluxDB into a flow grid; incidents back as lines.

The detectors never see InfluxDB; this module is the only place that knows the schema
(``consumption`` points with ``volume_m3`` and ``interval_s``, tagged ``meter`` and ``kind``).
A water meter with no consumption in the window (a flowmeter or flow sensor that reports only
``flow_m3h``, no register) is read from its ``water`` readings instead: the mean of the flow
readings stamped inside each bin, NaN for a bin without one. A negative mean (reverse flow) is
counted and logged as a rejection and kept: the engine opens a ``reverse_flow`` incident on a
run of them and shows the leak rules, which judge use, an unknown bin instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from tqdm import tqdm

from meterd.analysis.hourly import FloatArray, Grid, bin_consumption
from meterd.analysis.incidents import Incident
from meterd.config import Config
from meterd.fields import CONSUMPTION_MEASUREMENT
from meterd.leaks.engine import MeterInfo
from meterd.normalise.rejects import REJECTS
from meterd.reading import Reading
from meterd.sinks.influx.lineprotocol import encode
from meterd.sinks.influx.query import tag_regex

log = logging.getLogger(__name__)
Query = Callable[[str], list[dict[str, Any]]]


def water_meters(cfg: Config) -> list[MeterInfo]:
    """The configured water meters, in config order."""
    return [MeterInfo(m.id, m.building, m.parent,
                      None if m.normally_zero == "auto" else m.normally_zero, m.accuracy)
            for m in cfg.meters if m.kind == "water"]


def flow_rate_query(start_s: int, end_s: int, step_s: int, meter_ids: list[str]) -> str:
    # A rate reading describes the moment it is stamped: [start, end) holds the grid's bins.
    return (f'SELECT mean("flow_m3h") FROM "water" WHERE "meter" =~ {tag_regex(meter_ids)} '
            f'AND time >= {start_s}s AND time < {end_s}s '
            f'GROUP BY time({step_s}s), "meter" fill(none)')


def consumption_query(start_s: int, end_s: int) -> str:
    # Points are stamped at the END of their interval, so (start, end] holds the grid's data.
    return (f'SELECT "volume_m3", "interval_s" FROM "{CONSUMPTION_MEASUREMENT}" '
            f"WHERE \"kind\" = 'water' AND time > {start_s}s AND time <= {end_s}s "
            f'GROUP BY "meter"')


def fetch_flow(query: Query, meters: Sequence[MeterInfo], grid: Grid,
               max_interval_s: float | None = None, chunk_s: int = 7 * 86400,
               progress: bool = False, new_from_s: int | None = None) -> FloatArray:
    """Flow grid (m³/h) of ``meters`` over ``grid``; meters without data are all NaN.

    Queried ``chunk_s`` at a time, so a long replay never asks InfluxDB for one response holding
    every point of every meter; ``progress`` shows a bar on stderr. ``new_from_s``: bins before
    it were read by an earlier run (the scheduled job re-reads its history every hour), so their
    negative means are not counted as rejections again.
    """
    rows = {m.id: i for i, m in enumerate(meters)}
    parts: dict[str, list[np.ndarray]] = {}
    end = grid.t0_s + grid.n * grid.step_s
    edges = [*range(grid.t0_s, end, max(chunk_s, grid.step_s)), end]
    for meter, series in _chunked(query, consumption_query, edges, rows, "consumption", progress):
        vals = _values(meter, series)
        if vals is not None:
            parts.setdefault(meter, []).append(vals)
    flow = np.full((len(meters), grid.n), np.nan)
    for meter, chunks in parts.items():
        t, vol, iv = np.concatenate(chunks).T
        flow[rows[meter]] = bin_consumption(grid, t, vol, iv, max_interval_s)
    rate_only = {m: i for m, i in rows.items() if m not in parts}
    if rate_only:
        def rates_sql(a: int, b: int) -> str:
            return flow_rate_query(a, b, grid.step_s, list(rate_only))

        for meter, series in _chunked(query, rates_sql, edges, rate_only, "flow rates", progress):
            for ts, mean in series["values"]:
                i = (int(ts) - grid.t0_s) // grid.step_s
                if mean is None or not 0 <= i < grid.n:
                    continue
                # Kept for the reverse-flow rule; the leak rules never see it.
                if mean < 0 and (new_from_s is None or int(ts) >= new_from_s):
                    REJECTS.reject("leaks", "negative_flow",
                                   f"meter {meter}: mean flow {mean} m³/h in the bin at {ts}: "
                                   "reverse flow, or a sensor mounted backwards; the leak "
                                   "rules treat the bin as unknown")
                flow[rate_only[meter], i] = float(mean)
    return flow


def _chunked(query: Query, sql: Callable[[int, int], str], edges: list[int],
             rows: dict[str, int], what: str, progress: bool
             ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(meter, series) of ``rows``' meters, one query per span between ``edges``."""
    for a, b in tqdm(list(pairwise(edges)), desc=f"reading {what}", unit="chunk",
                     disable=not progress, leave=False):
        for series in query(sql(a, b)):
            meter = (series.get("tags") or {}).get("meter")
            if meter in rows:
                yield meter, series


def _values(meter: str, series: dict[str, Any]) -> np.ndarray | None:
    """(time, volume_m3, interval_s) rows of one series; None (and a counted rejection) if the
    server sent something that is not numbers."""
    cols = series["columns"]
    try:
        vals = np.array([[np.nan if v is None else float(v) for v in row]
                         for row in series["values"]], dtype=float)
    except (TypeError, ValueError) as exc:
        REJECTS.reject("leaks", "bad_consumption", f"meter {meter}: {exc}")
        return None
    if vals.size == 0:
        return None
    return vals[:, [cols.index(c) for c in ("time", "volume_m3", "interval_s")]]


def incident_lines(incidents: Sequence[Incident], measurement: str,
                   tags_of: dict[str, dict[str, str]]) -> list[str]:
    """Line protocol, one point per incident at its start time (rewritten as it evolves).

    Series = ``meter`` + ``type`` tags, time = start estimate, so re-writing an incident when it
    grows or closes overwrites the same point instead of adding another.
    """
    lines = []
    for inc in incidents:
        tags = {**tags_of.get(inc.meter, {}), "meter": inc.meter, "type": inc.type}
        fields = {"detected_at": float(inc.detected_at), "rate_m3h": inc.rate_m3h,
                  "volume_m3": inc.volume_m3, "cost": inc.cost,
                  "open": 1.0 if inc.end is None else 0.0}
        if inc.end is not None:
            fields["end"] = float(inc.end)
        lines.append(encode(Reading(measurement, tags, fields, inc.start * 1_000_000_000,
                                    inc.meter)))
    return lines


def meter_tags(cfg: Config) -> dict[str, dict[str, str]]:
    """Tags of each water meter (campus, building) so incidents group like readings."""
    out = {m.id: {k: v for k, v in m.tags.items() if k != "meter"} for m in cfg.meters}
    for m in cfg.meters:
        if m.parent:
            out.setdefault(f"zone:{m.parent}", out.get(m.parent, {}))
    return out
