"""``meterd leaks``: replay leak detection causally over a period of data in InfluxDB."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from meterd.analysis.hourly import Grid, local_calendar
from meterd.analysis.incidents import Incident
from meterd.config import Config, ConfigError, load_config
from meterd.leaks.config import leaks_config
from meterd.leaks.engine import detect
from meterd.leaks.io import Query, fetch_flow, incident_lines, meter_tags, water_meters
from meterd.leaks.job import break_ordinals


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "leaks", help="replay water leak detection over a period",
        description="Replay leak detection causally over [start, end]: each detected_at is when "
                    "the hourly daemon would first have reported the incident.")
    p.add_argument("-c", "--config", required=True, help="meterd TOML config")
    p.add_argument("--start", required=True, type=_iso, help="ISO time, e.g. 2025-03-01T00:00+08:00")
    p.add_argument("--end", required=True, type=_iso, help="ISO time (exclusive)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--write", action="store_true",
                   help="also write the incidents that closed by --end to InfluxDB, as the "
                        "daemon does (a backfill of Grafana's annotations for the time before "
                        "meterd ran); those still open are the daemon's to report")
    p.set_defaults(func=_run)


def _iso(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def replay(cfg: Config, query: Query, start: datetime, end: datetime,
           progress: bool = False) -> list[Incident]:
    """Incidents detected in ``[start, end)``, computed from ``history_days`` before ``start``;
    ``progress``: a bar on stderr while the data is read."""
    s = leaks_config(cfg)
    t0 = int(start.timestamp()) // s.step_s * s.step_s - s.history_days * 86400
    n = (int(end.timestamp()) - t0) // s.step_s
    if n <= 0:
        raise ValueError("--end must be after --start")
    grid = Grid(t0, n, s.step_s)
    meters = water_meters(cfg)
    flow = fetch_flow(query, meters, grid, s.max_interval_s, progress=progress)
    found = detect(flow, grid, local_calendar(grid, cfg.site.timezone), meters, s,
                   break_ordinals(cfg), cfg.tariffs.water_per_m3)
    lo = int(start.timestamp())
    return [i for i in found if lo <= i.detected_at <= int(end.timestamp())]


def _fmt(ts: int | None) -> str:
    return "open" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _run(args: argparse.Namespace) -> int:
    from meterd.sinks.influx import SinkError
    from meterd.sinks.influx.query import InfluxQL

    try:
        cfg = load_config(args.config)
        if args.end <= args.start:
            raise ValueError("--end must be after --start")
        incidents = replay(cfg, InfluxQL(cfg.influxdb).query, args.start, args.end,
                           progress=sys.stderr.isatty())
        if args.write:
            _write_closed(cfg, incidents)
    except (ConfigError, SinkError, ValueError) as exc:
        print(f"meterd leaks: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{**i.to_dict(), "start": _iso_s(i.start),
                           "detected_at": _iso_s(i.detected_at),
                           "end": None if i.end is None else _iso_s(i.end)} for i in incidents],
                         indent=2))
        return 0
    print(f"{'meter':<20} {'type':<16} {'start (UTC)':<17} {'detected (UTC)':<17} "
          f"{'end (UTC)':<17} {'m3/h':>8} {'m3':>9} {'cost':>9}")
    for i in incidents:
        print(f"{i.meter:<20} {i.type:<16} {_fmt(i.start):<17} {_fmt(i.detected_at):<17} "
              f"{_fmt(i.end):<17} {i.rate_m3h:>8.3f} {i.volume_m3:>9.2f} {i.cost:>9.2f}")
    print(f"{len(incidents)} incident(s)")
    return 0


def _write_closed(cfg: Config, incidents: list[Incident]) -> None:
    """The closed ``incidents`` into the incidents measurement; a count on stderr."""
    from meterd.daemon import build_sink

    closed = [i for i in incidents if i.end is not None]
    measurement = leaks_config(cfg).measurement
    build_sink(cfg.influxdb).write(incident_lines(closed, measurement, meter_tags(cfg)))
    print(f"wrote {len(closed)} closed incident(s) to {measurement!r}; "
          f"{len(incidents) - len(closed)} still open at --end left to the daemon",
          file=sys.stderr)


def _iso_s(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
