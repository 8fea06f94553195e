"""The daemon's hourly leak job end to end, against a real InfluxDB 1.x: how long one run takes.

Usage: ``.venv/bin/python benchmarks/leak_job_bench.py [--meters 1000] [--days 35]``

``leak_scan_bench.py`` times the detectors on arrays in memory; this times what the daemon does
each ``[leaks] interval_s``: query ``history_days`` of consumption for every water meter, bin
it, run the engine, reconcile with ``leaks.sqlite`` and hand the incidents' lines on. A local
``influxd`` gets ``--meters`` household-like meters of hourly consumption (as in the scan
benchmark, 5 % of them leaking from mid-period). Two runs are timed: the first (every incident
new) and one an hour later with that hour's points added (the steady state). The query alone
is timed in the same run, as the baseline the job is compared against.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.leak_scan_bench import households
from meterd.config import load_config
from meterd.leaks.io import fetch_flow, water_meters
from meterd.leaks.job import LeakJob, grid_until
from meterd.sinks.influx.query import InfluxQL
from simulators.local_servers import InfluxServer

T0 = 1_735_689_600  # 2025-01-01 00:00 UTC


def load(url: str, use: np.ndarray, first_hour: int, per_post: int = 200) -> None:
    """``use[:, k]`` as consumption points stamped at the end of hour ``first_hour + k``."""
    for m0 in range(0, use.shape[0], per_post):
        rows = [f"consumption,meter=m{m},kind=water volume_m3={v},interval_s=3600i "
                f"{T0 + (first_hour + k + 1) * 3600}"
                for m in range(m0, min(m0 + per_post, use.shape[0]))
                for k, v in enumerate(use[m].tolist())]
        r = requests.post(f"{url}/write", params={"db": "campus", "precision": "s"},
                          data="\n".join(rows), timeout=600)
        r.raise_for_status()


def config(path: Path, url: str, n_meters: int, days: int) -> Path:
    meters = "".join(f'[[meters]]\nid = "m{m}"\nkind = "water"\nmqtt_topic = "w/m{m}"\n'
                     for m in range(n_meters))
    path.write_text(f'[influxdb]\nurl = "{url}"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
                    f"[leaks]\nhistory_days = {days}\n{meters}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--days", type=int, default=35, help="[leaks] history_days")
    args = ap.parse_args(argv)
    hours = args.days * 24
    use = households(args.meters, hours + 1, np.random.default_rng(0))
    use[: args.meters // 20, hours // 2 :] += 0.01  # 5 % leak from mid-period
    use = np.round(use, 3)  # whole litres, as registers report
    with tempfile.TemporaryDirectory() as tmp, InfluxServer(Path(tmp)) as srv:
        requests.post(f"{srv.url}/query", params={"q": "CREATE DATABASE campus"}, timeout=10)
        t = time.perf_counter()
        load(srv.url, use[:, :hours], 0)
        loaded = time.perf_counter() - t
        cfg = load_config(config(Path(tmp) / "meterd.toml", srv.url, args.meters, args.days))
        query = InfluxQL(cfg.influxdb).query
        lines: list[str] = []
        job = LeakJob(cfg, query, lines.extend, Path(tmp) / "state")
        timings = {}
        for label, hour in (("first run", hours), ("an hour later", hours + 1)):
            if hour > hours:
                load(srv.url, use[:, hours:], hours)
            now = datetime.fromtimestamp(T0 + hour * 3600, UTC)
            grid = grid_until(int(now.timestamp()), 3600, args.days)
            t = time.perf_counter()
            fetch_flow(query, water_meters(cfg), grid)
            fetched = time.perf_counter() - t
            t = time.perf_counter()
            events = job.run_once(now)
            timings[label] = (fetched, time.perf_counter() - t, len(events))
        job.close()
    print(f"{args.meters} meters x {args.days} days hourly ({args.meters * hours:,} points, "
          f"loaded in {loaded:.1f} s), influxd 1.x on loopback\n")
    print("| run | query alone s | whole job s | of which not the query s | incidents reported |")
    print("|---|---|---|---|---|")
    for label, (fetched, whole, n) in timings.items():
        print(f"| {label} | {fetched:.2f} | {whole:.2f} | {whole - fetched:.2f} | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
