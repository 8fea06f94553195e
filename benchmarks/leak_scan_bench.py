"""Scan benchmark: every leak detector over 10,000 meters x 90 days of hourly data, one core.

Usage: ``.venv/bin/python benchmarks/leak_scan_bench.py [--meters 10000] [--days 90] [--district]``.
Prints one row per detector and their total, then the whole engine as the daemon runs it (default
``[leaks]``, untagged meters, incidents merged); the query is excluded: data is generated in memory.
Set ``OMP_NUM_THREADS=1`` / ``OPENBLAS_NUM_THREADS=1`` to pin numpy to one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from meterd.analysis.bursts import detect_bursts
from meterd.analysis.continuous_flow import detect_continuous_flow
from meterd.analysis.hourly import Grid, local_calendar
from meterd.analysis.incidents import Alarm, episodes
from meterd.analysis.night_flow import detect_night_flow, night_ends
from meterd.analysis.quiet_hours import detect_lost_quiet_hours
from meterd.analysis.zero_use import quiet_day_share
from meterd.leaks.config import LeaksConfig
from meterd.leaks.engine import MeterInfo, detect


def households(n_meters: int, hours: int, rng: np.random.Generator) -> np.ndarray:
    """Hourly use, m³/h: taps on 60 % of the hours from 07:00 to 22:00, quiet at night."""
    h = np.arange(hours) % 24
    flow = np.where((h >= 7) & (h < 22), 1.0, 0.0)[None, :] * rng.exponential(
        0.05, (n_meters, hours))
    flow[rng.random(flow.shape) < 0.4] = 0.0
    return flow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meters", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--district", action="store_true",
                    help="meters that never stop (leak_eval_noise.py's LeakDB-like kind)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.days * 24
    if args.district:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from leak_eval_noise import noisy_meters

        flow = noisy_meters("district, LeakDB-like", args.meters, args.days)
    else:
        flow = households(args.meters, n, rng)
    flow[: args.meters // 20, n // 2 :] += 0.01  # 5 % leak from mid-period
    grid = Grid(1_735_689_600, n)
    s = LeaksConfig()
    ids = [f"m{i}" for i in range(args.meters)]
    t = time.perf_counter()
    cal = local_calendar(grid, "UTC")  # the synthetic day is in UTC
    timings = {"calendar": time.perf_counter() - t}
    dawn = night_ends(cal.hour)
    runs = {
        "normally_zero (auto)": lambda: quiet_day_share(flow, cal.day, 3600,
                                                        s.continuous.threshold_m3h),
        "night_flow": lambda: detect_night_flow(flow, cal.hour),
        "night_flow + day scaling": lambda: detect_night_flow(
            flow, cal.hour, scaling_days=s.night.scaling_days),
        "night_flow + day scaling + weekday profile": lambda: detect_night_flow(
            flow, cal.hour, scaling_days=s.night.scaling_days, weekday=cal.weekday),
        "continuous_flow": lambda: detect_continuous_flow(flow, 3600, s.continuous.threshold_m3h,
                                                          night_end=dawn),
        "bursts": lambda: detect_bursts(flow, k=s.bursts.k, h=s.bursts.h,
                                        min_excess_m3h=s.bursts.min_excess_m3h),
        "lost_quiet_hours": lambda: detect_lost_quiet_hours(
            flow, cal.hour.astype(np.int64), cal.day, 3600, s.continuous.threshold_m3h,
            s.continuous.early_days, s.continuous.early_min_days, s.continuous.early_evidence,
            s.continuous.early_margin),
    }
    counts = {}
    for name, fn in runs.items():
        t = time.perf_counter()
        out = fn()
        if isinstance(out, Alarm):
            counts[name] = len(episodes(out, ids, grid))
        timings[name] = time.perf_counter() - t
    print(f"{args.meters} meters x {args.days} days hourly ({flow.size:,} values)\n")
    print("| step | seconds | incidents |\n|---|---|---|")
    for name, sec in timings.items():
        print(f"| {name} | {sec:.2f} | {counts.get(name, '')} |")
    # The same rule again: left out of the total.
    scaled = {"night_flow + day scaling", "night_flow + day scaling + weekday profile"}
    print(f"| total | {sum(v for k, v in timings.items() if k not in scaled):.2f} | "
          f"{sum(v for k, v in counts.items() if k not in scaled)} |")
    # What the daemon runs: every detector as configured, untagged meters, merged incidents.
    meters = [MeterInfo(i, normally_zero=None) for i in ids]
    t = time.perf_counter()
    incidents = detect(flow, grid, cal, meters, s)
    print(f"| engine.detect, default [leaks], normally_zero = \"auto\" | "
          f"{time.perf_counter() - t:.2f} | {len(incidents)} |")


if __name__ == "__main__":
    main()
