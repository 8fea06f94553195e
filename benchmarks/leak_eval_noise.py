"""False incidents on stationary noisy meters: buildings and mains that never stop, with no leak.

Usage: ``.venv/bin/python benchmarks/leak_eval_noise.py [--meters 60] [--days 365]``

The simulated campus's night flow is smooth, so it cannot show how often a night rule cries wolf
on a real building whose hourly use is noisy. Each meter here is a never-zero building (0.2 m³/h
at night, 0.5 m³/h from 07:00 to 22:00) with seeded hourly noise of one of three kinds (uniform
0–20 L/h added, 5 % Gaussian, 10 % lognormal), in whole litres, untagged (``normally_zero =
"auto"``). Every incident is false. Printed: incidents per meter-month for meterd (default
``[leaks]``, or ``--leaks TOML``) and the LeakDB MNF reference.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.leak_eval import load_settings
from meterd.analysis.hourly import FloatArray, Grid, local_calendar
from meterd.analysis.incidents import episodes
from meterd.analysis.night_flow import leakdb_reference
from meterd.leaks.engine import MeterInfo, detect

T0 = 1_735_689_600  # 2025-01-01 00:00 UTC, a Wednesday


def noisy_meters(kind: str, n_meters: int, days: int, seed: int = 1) -> FloatArray:
    rng = np.random.default_rng(seed)
    hour = np.arange(days * 24) % 24
    level = 0.2 + 0.3 * ((hour >= 7) & (hour < 22))
    shape = (n_meters, hour.size)
    noise: dict[str, Callable[[], FloatArray]] = {
        "uniform 0–20 L/h": lambda: level + rng.uniform(0, 0.02, shape),
        "Gaussian 5 %": lambda: level * (1 + 0.05 * rng.standard_normal(shape)),
        "lognormal 10 %": lambda: level * rng.lognormal(0, 0.1, shape),
    }
    return np.round(noise[kind](), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=60)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--leaks", type=Path, default=None, metavar="TOML")
    args = ap.parse_args(argv)
    settings = load_settings(args.leaks)
    grid = Grid(T0, args.days * 24)
    cal = local_calendar(grid, "UTC")
    ids = [f"m{i}" for i in range(args.meters)]
    months = args.meters * args.days / 30.4
    print(f"{args.meters} never-zero meters x {args.days} days, no leak: incidents per meter-month\n")
    print("| noise | meterd | LeakDB MNF reference |\n|---|---|---|")
    for kind in ("uniform 0–20 L/h", "Gaussian 5 %", "lognormal 10 %"):
        flow = noisy_meters(kind, args.meters, args.days)
        ours = detect(flow, grid, cal, [MeterInfo(i, normally_zero=None) for i in ids], settings)
        ref = episodes(leakdb_reference(flow, cal.hour), ids, grid)
        print(f"| {kind} | {len(ours) / months:.3f} | {len(ref) / months:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
