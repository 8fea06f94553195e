"""Noisy meters that never stop: false incidents without a leak, and leaks found with one.

Usage: ``.venv/bin/python benchmarks/leak_eval_noise.py [--meters 60] [--days 365] [--step-min 60]
[--ramp-days 0] [--scale 1] [--seed 1]``

The simulated campus's night flow is smooth, so it cannot show how often a night rule cries wolf
on a real building whose hourly use is noisy. Each meter here is a never-zero building (0.2 m³/h
at night, 0.5 m³/h from 07:00 to 22:00) with seeded noise per bin of one of three kinds (uniform
0–20 L/h added, 5 % Gaussian, 10 % lognormal), in whole litres per hour, untagged
(``normally_zero = "auto"``). Three more kinds are district inflows, as in LeakDB, whose whole
demand follows a cycle: yearly ±20 % or weekly ±5 % with 1 % noise, and a LeakDB-like one (a
daily curve with peaks, a yearly cycle of 10–30 %, two busier days a week, 5 % noise per node
over 1–30 nodes). LeakDB's own pattern coefficients are not available here; these are ours.
``--step-min 30`` reads the meters every 30 minutes, LeakDB's own
step, with the same noise drawn per bin. On the clean meters every incident is false. Then the
same meters (same noise seed) get one step leak each, from a seeded random hour between day 60
and day 300, of 10, 20, 40 or 100 L/h (5–50 % of the night flow, a quarter of the meters each).
A leak is found by an incident on its meter detected after the onset and within 14 days (one
already open at the onset hides it). Printed per noise kind, for meterd (default ``[leaks]``,
or ``--leaks TOML``) and the LeakDB MNF reference: false incidents per meter-month (and their
count), leaks found per size, median delay over the leaks each found, and over the leaks both
found.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.leak_eval import leak_flow, load_settings
from benchmarks.leak_eval_zones import Zones, found_in
from meterd.analysis.hourly import FloatArray, Grid, local_calendar
from meterd.analysis.incidents import Incident, episodes
from meterd.analysis.night_flow import leakdb_reference
from meterd.leaks.engine import MeterInfo, detect

T0 = 1_735_689_600  # 2025-01-01 00:00 UTC, a Wednesday


def noisy_meters(kind: str, n_meters: int, days: int, seed: int = 1, per_hour: int = 1,
                 scale: float = 1.0) -> FloatArray:
    rng = np.random.default_rng(seed)
    t_days = np.arange(days * 24 * per_hour) / (24 * per_hour)
    hour = np.arange(days * 24 * per_hour) // per_hour % 24
    level = 0.2 + 0.3 * ((hour >= 7) & (hour < 22))
    shape = (n_meters, hour.size)

    def cycle(period_d: float, amplitude: float) -> FloatArray:
        phase = rng.uniform(0, 2 * np.pi, (n_meters, 1))
        return 1 + amplitude * np.sin(2 * np.pi * t_days / period_d + phase)

    def district() -> FloatArray:
        # A morning, midday and evening peak over a night floor of 0.2 m³/h, a yearly cycle of
        # 10-30 %, two days a week with busier daytime hours (not aligned with the weekend),
        # and 5 % noise per node over 1-30 nodes.
        h = hour + (np.arange(hour.size) % per_hour) / per_hour
        curve = 0.35 + 0.5 * np.exp(-(((h - 8) / 2.0) ** 2)) + 0.35 * np.exp(
            -(((h - 19.5) / 2.5) ** 2)) + 0.15 * np.exp(-(((h - 13) / 2.0) ** 2))
        amp = rng.uniform(0.1, 0.3, (n_meters, 1))
        year = 1 + amp * np.sin(2 * np.pi * t_days / 365 + rng.uniform(0, 2 * np.pi, (n_meters, 1)))
        shape_day = 1 + 0.08 * ((t_days % 7) >= 5) * np.sin(np.pi * h / 24)
        nodes = rng.integers(1, 31, (n_meters, 1))
        return (0.2 / 0.35 * curve * year * shape_day
                * (1 + 0.05 / np.sqrt(nodes) * rng.standard_normal(shape)))

    noise: dict[str, Callable[[], FloatArray]] = {
        "uniform 0–20 L/h": lambda: level + rng.uniform(0, 0.02, shape),
        "Gaussian 5 %": lambda: level * (1 + 0.05 * rng.standard_normal(shape)),
        "lognormal 10 %": lambda: level * rng.lognormal(0, 0.1, shape),
        "yearly ±20 %, 1 %": lambda: level * cycle(365, 0.2) * (1 + 0.01 * rng.standard_normal(shape)),
        "weekly ±5 %, 1 %": lambda: level * cycle(7, 0.05) * (1 + 0.01 * rng.standard_normal(shape)),
        "district, LeakDB-like": district,
    }
    return np.round(noise[kind]() * scale, 3)


LEAK_M3H = (0.01, 0.02, 0.04, 0.1)
KINDS = ("uniform 0–20 L/h", "Gaussian 5 %", "lognormal 10 %", "yearly ±20 %, 1 %",
         "weekly ±5 %, 1 %", "district, LeakDB-like")


def with_leaks(flow: FloatArray, seed: int = 2, per_hour: int = 1, ramp_days: float = 0.0,
               scale: float = 1.0) -> tuple[FloatArray, list[tuple[float, int]]]:
    """``flow`` with one leak per meter, and each leak's (m³/h, onset hour): a step, or with
    ``ramp_days`` an incipient leak growing linearly to its size over that many days."""
    rng = np.random.default_rng(seed)
    out, truth = flow.copy(), []
    for m in range(flow.shape[0]):
        rate, onset = LEAK_M3H[m % len(LEAK_M3H)] * scale, int(rng.integers(60 * 24, 300 * 24))
        out[m] += leak_flow(flow.shape[1], onset * per_hour, rate, ramp_days * 24 * per_hour)
        truth.append((rate, onset))
    return np.round(out, 3), truth


def found_delays(incidents: list[Incident], zones: Zones, truth: list[tuple[float, int]],
                 ramp_days: float = 0.0, prefix: str = "m") -> list[float | None]:
    """Delay in hours from each onset to its meter's report (meter ``prefix`` + row), scored
    as the zone suite does (within 14 days of the onset, plus the ramp)."""
    within = (14 + ramp_days) * 86400
    faults: list[dict[str, object]] = [
        {"kind": "leak", "rate": rate, "onset_s": float(zones.grid.t0_s + onset * 3600),
         "accept": {f"{prefix}{m}"}, "within_s": within} for m, (rate, onset) in enumerate(truth)]
    return [h[2] for h in found_in(incidents, faults)]


Scores = dict[str, tuple[int, list[float | None]]]  # method: (false incidents, delay per leak)


def median_cells(delays: dict[str, list[float | None]]) -> dict[str, str]:
    """Per method, its median delay over the leaks it found and over those every method found,
    as two Markdown cells ("–" where there are none)."""
    n = len(next(iter(delays.values())))
    both = [all(d[i] is not None for d in delays.values()) for i in range(n)]
    out = {}
    for name, ds in delays.items():
        got = [d for d in ds if d is not None]
        paired = [d for d, b in zip(ds, both, strict=True) if b and d is not None]
        out[name] = " | ".join(f"{np.median(x):.1f}" if x else "–" for x in (got, paired))
    return out


def table_rows(kind: str, res: Scores, truth: list[tuple[float, int]], sizes_m3h: list[float],
               months: float) -> list[str]:
    """One Markdown row per method: false incidents, leaks found per size, median delays over
    the leaks each found and over those every method found."""
    med = median_cells({name: delays for name, (_, delays) in res.items()})
    rows = []
    for name, (false, delays) in res.items():
        cells = [f"{sum(d is not None for d, (r, _) in zip(delays, truth, strict=True) if r == size)}"
                 f"/{sum(r == size for r, _ in truth)}" for size in sizes_m3h]
        rows.append(f"| {kind} | {name} | {false / months:.3f} ({false}) | {' | '.join(cells)} | "
                    f"{med[name]} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=60)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--leaks", type=Path, default=None, metavar="TOML")
    ap.add_argument("--ramp-days", type=float, default=0.0,
                    help="incipient leaks: grow linearly to their size over this many days")
    ap.add_argument("--step-min", type=int, choices=(15, 30, 60), default=60,
                    help="reading interval, minutes (LeakDB's is 30)")
    ap.add_argument("--seed", type=int, default=1,
                    help="noise seed (the leaks use seed + 1); tune on 1, check on others")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every flow and leak (1000: a LeakDB-sized inflow), to check "
                         "that no absolute threshold decides")
    args = ap.parse_args(argv)
    settings = load_settings(args.leaks)
    per_hour = 60 // args.step_min
    grid = Grid(T0, args.days * 24 * per_hour, args.step_min * 60)
    cal = local_calendar(grid, "UTC")
    ids = [f"m{i}" for i in range(args.meters)]
    months = args.meters * args.days / 30.4
    methods: dict[str, Callable[[FloatArray], list[Incident]]] = {
        "meterd": lambda f: detect(f, grid, cal, [MeterInfo(i, normally_zero=None) for i in ids],
                                   settings),
        "LeakDB MNF reference": lambda f: episodes(leakdb_reference(f, cal.hour, grid.step_s),
                                                   ids, grid),
    }
    sizes = " | ".join(f"{r * args.scale * 1000:g} L/h" for r in LEAK_M3H)
    print(f"{args.meters} never-zero meters x {args.days} days, read every {args.step_min} min; "
          "false = incidents per meter-month without a leak (their count); found per leak size "
          "(5-50 % of the night flow); median delay h\n")
    print(f"| noise | method | false | {sizes} | median delay h | median delay h, leaks both "
          "found |\n|---|---|---|" + "---|" * len(LEAK_M3H) + "---|---|")
    sizes_m3h = [r * args.scale for r in LEAK_M3H]
    for kind in KINDS:
        flow = noisy_meters(kind, args.meters, args.days, args.seed, per_hour, args.scale)
        leaky, truth = with_leaks(flow, args.seed + 1, per_hour, args.ramp_days, args.scale)
        zones = Zones(leaky, [], grid, cal)
        res: Scores = {name: (len(m(flow)), found_delays(m(leaky), zones, truth,
                                                         args.ramp_days))
                       for name, m in methods.items()}
        print("\n".join(table_rows(kind, res, truth, sizes_m3h, months)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
