"""Benchmark: the canteen report for 50 canteens over two school years, InfluxDB queries included.

Starts a private influxd, loads synthetic canteens (simulators/canteen_truth.py: hourly
consumption of electricity, water and gas, hourly weather, daily meals), then times
``meterd canteens`` stages and prints a table. Loading is not timed; the target is < 30 s for
queries + analysis + JSON + HTML.

    .venv/bin/python benchmarks/canteen_report_bench.py [--canteens 50] [--step-s 3600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tomllib
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meterd.canteens.activity import parse_activity, to_lines
from meterd.canteens.analyse import analyse, fetch_window, to_json
from meterd.canteens.config import load_canteens
from meterd.canteens.io import fetch_daily
from meterd.canteens.report import render_html
from meterd.config import parse_config
from meterd.sinks.influx.query import InfluxQL
from meterd.sinks.influx.v1 import V1Sink
from simulators.canteen_truth import generate, write_site
from simulators.local_servers import InfluxServer

START, END = date(2025, 9, 1), date(2026, 9, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--canteens", type=int, default=50)
    ap.add_argument("--step-s", type=int, default=3600, help="meter reading interval")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp, InfluxServer(Path(tmp)) as influxd:
        t = time.perf_counter()
        site = generate(args.seed, args.canteens, step_s=args.step_s, influx_url=influxd.url)
        cfg = parse_config(tomllib.loads(site.config_toml))
        canteens, _ = load_canteens(cfg)
        write_site(influxd.url, site)
        V1Sink(cfg.influxdb).write(to_lines(parse_activity(site.activity_csv,
                                                           [c.id for c in canteens]),
                                            cfg.site.timezone))
        rows.append(("generate + load (not timed)", time.perf_counter() - t,
                     f"{len(site.lines):,} points"))

        total = time.perf_counter()
        t = time.perf_counter()
        first, last = fetch_window(canteens, START, END)
        data = fetch_daily(InfluxQL(cfg.influxdb), canteens, first, last, cfg.site.timezone)
        rows.append(("InfluxQL daily queries", time.perf_counter() - t,
                     f"{len(data.use)} canteen-utility series x {len(data.days)} days"))
        t = time.perf_counter()
        results = analyse(cfg, canteens, data, START, END)
        rows.append(("fit baselines + savings", time.perf_counter() - t,
                     f"{sum(len(r.utilities) for r in results)} models"))
        t = time.perf_counter()
        doc = json.dumps(to_json(results, START, END))
        rows.append(("JSON", time.perf_counter() - t, f"{len(doc):,} bytes"))
        t = time.perf_counter()
        page = render_html(results, START, END, cfg.site.name, cfg.tariffs.currency)
        rows.append(("HTML with charts", time.perf_counter() - t, f"{len(page):,} bytes"))
        elapsed = time.perf_counter() - total
        rows.append(("TOTAL report (target < 30 s)", elapsed,
                     "PASS" if elapsed < 30 else "FAIL"))
        errors = [abs(u["savings_pct"] - site.true_savings_pct(c["id"], name, START, END))
                  for c in json.loads(doc)["canteens"] for name, u in c["utilities"].items()]
        rows.append(("max |savings_pct - truth| (pp)", max(errors), f"over {len(errors)}"))
    print(f"{'stage':<34}{'seconds':>10}  detail")
    for name, secs, detail in rows:
        print(f"{name:<34}{secs:>10.2f}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
