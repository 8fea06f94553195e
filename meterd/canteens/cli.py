"""``meterd canteens`` (savings against targets) and ``meterd activity import`` (meals CSV)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from meterd.config import Config, ConfigError, load_config

EXIT_CONFIG = 2
EXIT_DATA = 3


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("canteens", help="per-canteen consumption against savings targets",
                              description="Savings of each canteen against its baseline over "
                              "[--start, --end) or --month, with 90 percent uncertainty.")
    p.add_argument("-c", "--config", required=True, type=Path, help="meterd TOML config")
    p.add_argument("--start", type=_date, help="first day, YYYY-MM-DD (inclusive)")
    p.add_argument("--end", type=_date, help="last day, YYYY-MM-DD (exclusive)")
    p.add_argument("--month", type=_month, help="YYYY-MM: shorthand for that calendar month")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--html", type=Path, metavar="DIR", help="write a self-contained HTML report")
    p.set_defaults(func=run_canteens)

    a = subparsers.add_parser("activity", help="canteen activity data (meals served)")
    asub = a.add_subparsers(dest="activity_command", metavar="ACTION", required=True)
    imp = asub.add_parser("import", help="import a date,canteen,meals[,revenue] CSV")
    imp.add_argument("-c", "--config", required=True, type=Path, help="meterd TOML config")
    imp.add_argument("csv", type=Path, help="CSV with header date,canteen,meals[,revenue]")
    imp.set_defaults(func=run_activity_import)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _month(text: str) -> tuple[date, date]:
    try:
        first = date.fromisoformat(f"{text}-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM, got {text!r}") from None
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, nxt


def _window(args: argparse.Namespace) -> tuple[date, date]:
    if args.month is not None:
        if args.start or args.end:
            raise ValueError("give either --month or --start/--end, not both")
        return args.month  # type: ignore[no-any-return]
    if args.start is None or args.end is None:
        raise ValueError("give --start and --end (end exclusive), or --month YYYY-MM")
    if args.end <= args.start:
        raise ValueError(f"--end {args.end} must be after --start {args.start} (end exclusive)")
    return args.start, args.end


def _load(path: Path) -> tuple[Config, Any, Any]:
    from meterd.canteens.config import load_canteens

    cfg = load_config(path)
    canteens, reports = load_canteens(cfg)
    return cfg, canteens, reports


def run_canteens(args: argparse.Namespace) -> int:
    from meterd.canteens.analyse import analyse, fetch_window, to_json
    from meterd.canteens.io import fetch_daily
    from meterd.sinks.influx.query import InfluxQL, QueryError

    try:
        start, end = _window(args)
        cfg, canteens, _ = _load(args.config)
    except (ValueError, ConfigError) as exc:
        print(f"meterd canteens: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not canteens:
        print("meterd canteens: the config has no [[canteens]]", file=sys.stderr)
        return EXIT_CONFIG
    first, last = fetch_window(canteens, start, end)
    try:
        data = fetch_daily(InfluxQL(cfg.influxdb), canteens, first, last, cfg.site.timezone)
    except QueryError as exc:
        print(f"meterd canteens: {exc}", file=sys.stderr)
        return EXIT_DATA
    results = analyse(cfg, canteens, data, start, end)
    if args.html is not None:
        _write_html(args.html, results, start, end, cfg)
    if args.json:
        json.dump(to_json(results, start, end), sys.stdout, indent=1)
        print()
    elif args.html is None:
        _print_table(to_json(results, start, end))
    return 0


def _write_html(out_dir: Path, results: Any, start: date, end: date, cfg: Config) -> Path:
    from tqdm import tqdm

    from meterd.canteens.report import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(results, desc="canteen charts", unit="canteen", file=sys.stderr, disable=None)
    page = render_html(results, start, end, cfg.site.name, cfg.tariffs.currency, progress=bar)
    path = out_dir / f"canteens-{start}-{end}.html"
    path.write_text(page, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return path


def _print_table(doc: dict[str, Any]) -> None:
    print(f"{'canteen':<16}{'utility':<13}{'savings %':>10}{'±90 %':>8}{'target %':>9}  verdict")
    for c in doc["canteens"]:
        for u, v in c["utilities"].items():
            pct = "n/a" if v["savings_pct"] is None else f"{v['savings_pct']:.1f}"
            u90 = "" if v["savings_pct_u90"] is None else f"{v['savings_pct_u90']:.1f}"
            note = "" if v["qualified"] else "  (fallback baseline)"
            print(f"{c['id']:<16}{u:<13}{pct:>10}{u90:>8}{v['target_pct']:>9.1f}  "
                  f"{'met' if v['met'] else 'not met'}{note}")


def run_activity_import(args: argparse.Namespace) -> int:
    from meterd.canteens.activity import ActivityError, import_activity
    from meterd.daemon import build_sink
    from meterd.sinks.influx import SinkError

    try:
        cfg, canteens, _ = _load(args.config)
        sink = build_sink(cfg.influxdb)
        n = import_activity(args.csv, [c.id for c in canteens], cfg.site.timezone, sink.write)
    except (ConfigError, ActivityError) as exc:
        print(f"meterd activity import: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SinkError as exc:
        print(f"meterd activity import: nothing imported: {exc}", file=sys.stderr)
        return EXIT_DATA
    print(f"imported {n} rows from {args.csv}", file=sys.stderr)
    return 0
