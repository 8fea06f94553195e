"""LeakDB-structured scenarios: a Hanoi-sized district inflow with 0–2 repaired leaks a year.

Usage: ``.venv/bin/python benchmarks/leak_eval_leakdb.py [--scenarios 200] [--seed 1]
[--days 365] [--leaks TOML] [--link inflow|carries|loses|crosses] [--hourly] [--mqtt]``, or on
LeakDB's own scenarios: ``... --data LeakDB/Hanoi_CMH [--ids 1-1000] [--flow-file Link_1]
[--hourly] [--mqtt]`` (their layout: ``benchmarks/leakdb_files.py``).

``leak_eval_noise.py``'s district kinds give every meter one step leak that never ends. LeakDB's
scenarios (Vrachimis et al. 2018) are built differently, and this follows their structure, on
their Hanoi network's demands and pressures, with our own demand patterns (LeakDB's pattern
coefficients are stored in .mat files not available here):

- one inflow meter per scenario, read every 30 minutes for a year: the sum of the 31 nodal
  base demands of LeakDB's Hanoi network (``Hanoi_CMH.inp``: 5,539 m³/h in all, which are
  Fujiwara & Khang's 1990 demands in L/s read as m³/h, as LeakDB's generator reads them), each
  times its own weekly pattern (five daily harmonics with a weekday and a weekend shape, every
  coefficient randomised by ±10 % per node) and a yearly one (10–25 % amplitude, randomised
  the same way), with 5 % Gaussian noise per node and sample;
- 0, 1 or 2 leaks (35 %, 45 %, 20 %, as in a sample of LeakDB's own scenario list), each at a
  random node, with a hole of 2–20 cm, abrupt or incipient (half each); its start is uniform
  over the year, its end (the repair) uniform between the start and the year's end, and an
  incipient leak's hole grows linearly to its peak at a uniform time in between;
- a leak's outflow follows the orifice law at its node's pressure, 0.75 · A · √(2 g p), and the
  pressure falls with the inflow as that network's does: p = 70 m − loss · (Q / Q₀)^1.852,
  where 70 m is the reservoir's head over the nodes and the loss at base demand Q₀ is what
  EPANET gives for the node (0.3–6.4 m), scaled per scenario and node as LeakDB's 5–20 %
  uncertainty in pipe length, diameter and roughness scales it (:data:`HANOI_LOSS_M`). A leak
  runs a little stronger at night, as in a pressure-driven hydraulic model: a 2 cm hole loses
  about 31 m³/h, a 20 cm one 2,800–3,100 m³/h (about half the inflow);
- with ``--link``, the meter sits on a pipe inside the network instead (:data:`LINKS`).

A leak is found by an incident on its scenario's meter detected after the leak's start and no
later than a day after its end (a night rule needs the night to finish); one already open at
the start hides it. Every other incident is false. Printed for meterd (default ``[leaks]``, or
``--leaks TOML``) and the LeakDB MNF reference: false incidents per scenario-month (and their
count), leaks found by hole size and type, and the median delay from the leak's start over the
leaks each found and over those both found.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.leak_eval import load_settings, methods
from benchmarks.leak_eval_noise import median_cells
from benchmarks.leak_eval_zones import found_in
from benchmarks.leak_replay_mqtt import T0_REAL, MqttReplay
from benchmarks.leak_replay_noise_mqtt import compare_replay
from benchmarks.leakdb_files import (
    INFLOW,
    Leak,
    LeakDBData,
    LeakDBFormatError,
    leak_periods,
    open_root,
    parse_ids,
    period_labels,
    read_leakdb,
    scenario_ids,
)
from benchmarks.leakdb_score import incident_labels, leakdb_score
from meterd.analysis.hourly import FloatArray, Grid
from meterd.analysis.incidents import Incident

# Hanoi's nodal base demands, nodes 2-32, as LeakDB's Hanoi_CMH.inp gives them and its generator
# reads them: in m³/h, 5,539 in all (the numbers are Fujiwara & Khang's 1990 demands in L/s).
HANOI_M3H = (247.22, 236.11, 36.11, 201.39, 279.17, 375, 152.78, 145.83, 145.83, 138.89, 155.56,
             261.11, 170.83, 77.78, 86.11, 240.28, 373.61, 16.67, 354.17, 258.33, 134.72, 290.28,
             227.78, 47.22, 250, 102.78, 80.56, 100, 100, 29.17, 223.61)
# Head lost from the reservoir to each of those nodes at base demand, m: EPANET 2.2 (WNTR 1.5's
# EpanetSimulator) on Hanoi_CMH.inp. Its reservoir is at 100 m and every node at 30 m.
HANOI_LOSS_M = (0.27, 3.57, 3.99, 4.50, 5.03, 5.16, 5.30, 5.41, 5.50, 5.64, 5.75, 6.14, 6.09, 6.13,
                6.13, 5.47, 4.54, 3.90, 4.59, 5.46, 5.94, 5.14, 5.61, 5.89, 6.20, 6.25, 5.94, 6.37,
                6.45, 6.40, 6.28)
STATIC_PRESSURE_M, G = 70.0, 9.81
# LeakDB draws each pipe's length, diameter and roughness within 5-20 %; on Hanoi_CMH that
# scales a scenario's losses by a lognormal factor (sd 0.33 of the log) and each node's by
# another (0.07), as 60 such draws through EPANET showed.
LOSS_LOG_SD = (0.33, 0.07)
DIAMETER_BANDS = ((0.02, 0.05), (0.05, 0.1), (0.1, 0.15), (0.15, 0.2))
GRACE_S = 86400
STEP_S = 1800  # the scenarios' reading interval; leak times are in these bins
T0 = 1_735_689_600  # 2025-01-01 00:00 UTC, a Wednesday


def _daily_shape(weekend: bool) -> FloatArray:
    """Five harmonic coefficients (cos, sin) of a mean-1 day with morning and evening peaks."""
    h = np.arange(48) / 2
    shift = 1.5 if weekend else 0.0
    day = (0.45 + 0.9 * np.exp(-(((h - 7.5 - shift) / 1.8) ** 2))
           + 0.55 * np.exp(-(((h - 13 - shift / 2) / 2.5) ** 2))
           + 0.8 * np.exp(-(((h - 20) / 2.2) ** 2)))
    spec = np.fft.rfft(day / day.mean())[1:6] / 24
    return np.stack([spec.real, -spec.imag])


def _node_patterns(rng: np.random.Generator, n_bins: int, per_hour: int) -> FloatArray:
    """(nodes, bins) multipliers: weekly x yearly, every coefficient randomised by ±10 %."""
    t = np.arange(n_bins) / per_hour
    day_phase = 2 * np.pi * (t % 24) / 24
    k = np.arange(1, 6)[:, None]
    cos, sin = np.cos(k * day_phase), np.sin(k * day_phase)
    weekend = np.isin((t // 24) % 7, (3, 4))  # 2025-01-01 is a Wednesday: days 3, 4 are Sat, Sun
    n = len(HANOI_M3H)
    out = np.empty((n, n_bins))
    amp, phase = rng.uniform(0.1, 0.25), rng.uniform(-0.3, 0.3)
    for node in range(n):
        week = np.where(weekend, 0.0, 1.0)
        for is_weekend in (False, True):
            a, b = _daily_shape(is_weekend) * rng.uniform(0.9, 1.1, (2, 5))
            curve = 1 + (a[:, None] * cos + b[:, None] * sin).sum(axis=0)
            week = np.where(weekend == is_weekend, curve, week)
        year = 1 + amp * rng.uniform(0.9, 1.1) * np.sin(2 * np.pi * t / 8766 + phase
                                                         + rng.uniform(-0.1, 0.1))
        out[node] = week * year
    return out


def _leaks(rng: np.random.Generator, n_bins: int) -> list[Leak]:
    count = int(rng.choice(3, p=(0.35, 0.45, 0.2)))
    out = []
    for _ in range(count):
        start = int(rng.integers(0, n_bins - 1))
        end = int(rng.integers(start + 1, n_bins + 1))
        incipient = bool(rng.random() < 0.5)
        peak = int(rng.integers(start, end)) if incipient else start
        out.append(Leak(int(rng.integers(len(HANOI_M3H))), float(rng.uniform(0.02, 0.2)),
                        incipient, start, peak, end))
    return out


def _hole_share(leak: Leak, n_bins: int) -> FloatArray:
    """Share of the leak's full hole area open in each bin."""
    i = np.arange(n_bins)
    ramp = np.clip((i - leak.start + 1) / max(leak.peak - leak.start + 1, 1), 0, 1)
    return np.where((i >= leak.start) & (i < leak.end), ramp, 0.0)


def leak_outflow(demand: FloatArray, leaks: list[Leak], losses: FloatArray, q0: float
                 ) -> FloatArray:
    """Outflow of ``leaks``, m³/h per bin, on a network whose demand is ``demand``: the orifice
    law, 0.75 · A · √(2 g p), at each leak node's pressure p = 70 m − loss · (Q / q0)^1.852,
    where Q is the inflow, leaks included (settled in a few fixed-point steps), and ``loss`` is
    the node's head loss at inflow ``q0`` (Hazen-Williams: losses grow as Q^1.852)."""
    outflow = np.zeros(demand.size)
    for _ in range(4):
        q = demand + outflow
        outflow = np.zeros(demand.size)
        for leak in leaks:
            p = np.maximum(STATIC_PRESSURE_M - losses[leak.node] * (q / q0) ** 1.852, 0.0)
            area = np.pi * leak.diameter_m**2 / 4 * _hole_share(leak, demand.size)
            outflow += 0.75 * area * np.sqrt(2 * G * p) * 3600
    return outflow


def scenario(rng: np.random.Generator, n_bins: int, per_hour: int, link: str = "inflow"
             ) -> tuple[FloatArray, list[Leak]]:
    """One scenario's flow at its meter, m³/h per bin, and its leaks: the inflow, or (``link``)
    a pipe inside the network (:data:`LINKS`)."""
    base = np.asarray(HANOI_M3H, dtype=float)[:, None] * rng.uniform(0.9, 1.1, (len(HANOI_M3H), 1))
    demand = base * _node_patterns(rng, n_bins, per_hour)
    demand *= 1 + 0.05 * rng.standard_normal(demand.shape)
    total = demand.sum(axis=0)
    spread, per_node = LOSS_LOG_SD
    losses = np.asarray(HANOI_LOSS_M) * np.exp(spread * rng.standard_normal()
                                               + per_node * rng.standard_normal(len(HANOI_M3H)))
    leaks = _leaks(rng, n_bins)
    outflow = leak_outflow(total, leaks, losses, float(base.sum()))
    if link == "inflow":
        return np.round(total + outflow, 3), leaks
    part = demand[rng.random(len(HANOI_M3H)) < 0.3].sum(axis=0)  # the nodes the pipe feeds
    share = rng.uniform(0.1, 0.5) * outflow
    flow = {"carries": part + share, "loses": part - share,
            "crosses": part - np.median(part) + share}[link]
    return np.round(flow, 3), leaks


# A pipe inside a looped network, without a hydraulic model: the demand of a random ~30 % of
# the nodes, plus or minus 10-50 % of the leaks' outflow.
LINKS = {"inflow": "the network's inflow",
         "carries": "a pipe that carries part of every leak's outflow",
         "loses": "a pipe that loses flow to a leak drawn through another path (its repair is "
                  "a rise)",
         "crosses": "a loop pipe whose flow changes direction twice a day, the leaks pushing it "
                    "forward"}


def scenarios(n: int, seed: int, days: int = 365, per_hour: int = 2, link: str = "inflow"
              ) -> tuple[FloatArray, list[list[Leak]]]:
    rng = np.random.default_rng(seed)
    rows, truth = zip(*(scenario(rng, days * 24 * per_hour, per_hour, link) for _ in range(n)),
                      strict=True)
    return np.stack(rows), list(truth)


@dataclass
class Score:
    false: int
    delays: list[tuple[Leak, float | None]]  # per leak: delay h from its start, or None
    found_by: list[str]  # per leak: type of the incident that found it ("" if none)
    false_by: dict[str, int]  # false incidents by type


def score(incidents: list[Incident], truth: list[list[Leak]], grid: Grid,
          truth_step_s: int = STEP_S) -> Score:
    """False incidents, and per leak period its delay, as the module docstring scores them
    (meter ``str(row)`` is scenario ``row``; leak times in bins of ``truth_step_s``)."""
    periods = [(row, p) for row, leaks in enumerate(truth) for p in leak_periods(leaks)]
    spans: dict[str, list[tuple[int, int]]] = {}
    for row, p in periods:
        start = grid.t0_s + p.start * truth_step_s
        spans.setdefault(str(row), []).append((start, grid.t0_s + p.end * truth_step_s
                                               + GRACE_S))
    false_by: dict[str, int] = {}
    for i in incidents:
        if not any(a < i.detected_at <= b for a, b in spans.get(i.meter, [])):
            false_by[i.type] = false_by.get(i.type, 0) + 1
    where = [(m, a, b) for m, sp in spans.items() for a, b in sp]  # in the order of periods
    faults: list[dict[str, object]] = [
        {"kind": "leak", "rate": p.diameter_m, "onset_s": a, "within_s": b - a, "accept": {m}}
        for (m, a, b), (_, p) in zip(where, periods, strict=True)]
    delays = [h[2] for h in found_in(incidents, faults)]
    by_time = {(i.meter, i.detected_at): i.type for i in incidents}
    found_by = ["" if d is None else by_time[(m, round(a + d * 3600))]
                for (m, a, _), d in zip(where, delays, strict=True)]
    return Score(sum(false_by.values()),
                 [(p, d) for (_, p), d in zip(periods, delays, strict=True)], found_by, false_by)


def rows(res: dict[str, Score], months: float) -> list[str]:
    """Markdown rows: false incidents, leaks found by hole size and type, median delays."""
    med = median_cells({name: [d for _, d in s.delays] for name, s in res.items()})
    out = []
    for name, s in res.items():
        cells = []
        for lo, hi in DIAMETER_BANDS:
            for incipient in (False, True):
                got = [d for lk, d in s.delays if lo <= lk.diameter_m < hi
                       and lk.incipient == incipient]
                cells.append(f"{sum(d is not None for d in got)}/{len(got)}")
        found = sum(d is not None for _, d in s.delays)
        out.append(f"| {name} | {s.false / months:.3f} ({s.false}) | {found}/{len(s.delays)} | "
                   f"{' | '.join(cells)} | {med[name]} |")
    return out


def detector_rows(s: Score, months: float) -> list[str]:
    """Markdown rows of one method by the type of the incident that found each leak period."""
    out = ["| first detector | leak periods found | median delay h | false |", "|---|---|---|---|"]
    for kind in sorted({k for k in s.found_by if k} | set(s.false_by)):
        d = [dl for (_, dl), k in zip(s.delays, s.found_by, strict=True)
             if k == kind and dl is not None]
        med = f"{np.median(d):.1f}" if d else "–"
        n = s.false_by.get(kind, 0)
        out.append(f"| {kind} | {len(d)} | {med} | {n / months:.3f} ({n}) |")
    return out


def leakdb_rows(runs: dict[str, list[Incident]], data: LeakDBData, grid: Grid) -> list[str]:
    """Markdown rows of LeakDB's own scores (:mod:`benchmarks.leakdb_score`), per reading of
    the data's own step."""
    truth = np.stack([period_labels(leaks, data.flow.shape[1]) for leaks in data.truth])
    out = ["| method | F1 | TPR | TNR | SED |", "|---|---|---|---|---|"]
    for name, incs in runs.items():
        alarm = incident_labels(incs, *truth.shape, grid.t0_s, data.step_s)
        sc = leakdb_score(truth, alarm)
        out.append(f"| {name} | {sc.f1:.3f} | {sc.tpr:.3f} | {sc.tnr:.4f} | {sc.sed:.3f} |")
    return out


def header() -> str:
    bands = " | ".join(f"{lo * 100:g}–{hi * 100:g} cm {t}" for lo, hi in DIAMETER_BANDS
                       for t in ("abrupt", "incipient"))
    return (f"| method | false | found | {bands} | median delay h | median delay h, leaks both "
            "found |\n|---|---|---|" + "---|" * (2 * len(DIAMETER_BANDS)) + "---|---|")


def _data(args: argparse.Namespace) -> LeakDBData:
    """The scenarios: LeakDB's own from ``--data``, or generated (as 30-min readings from T0)."""
    if args.data is not None:
        root = open_root(args.data)
        ids = parse_ids(args.ids) if args.ids else scenario_ids(root)
        if not ids:
            raise LeakDBFormatError(f"{args.data}: no Scenario-<id> folders")
        return read_leakdb(root, ids, args.flow_file, progress=sys.stderr.isatty())
    flow, truth = scenarios(args.scenarios, args.seed, args.days, link=args.link)
    return LeakDBData(list(range(1, args.scenarios + 1)), flow, truth, T0, STEP_S, 0)


def _title(args: argparse.Namespace, data: LeakDBData, step: int) -> str:
    days = data.flow.shape[1] * data.step_s / 86400
    what = (f"LeakDB scenarios from {args.data} ({args.flow_file})" if args.data is not None
            else f"LeakDB-structured scenarios, seed {args.seed}, meter on {LINKS[args.link]}")
    n_leaks = sum(map(len, data.truth))
    n_periods = sum(len(leak_periods(t)) for t in data.truth)
    return (f"{len(data.ids)} {what} x {days:g} days, read every {data.step_s // 60} min, judged "
            f"at {step // 60} min: {n_leaks} leaks in {n_periods} leak periods, "
            f"{sum(not t for t in data.truth)} scenarios without one; false = incidents per "
            "scenario-month outside every leak (their count); found = leak periods found\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=200)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=1, help="tune on 1, check on others")
    ap.add_argument("--leaks", type=Path, default=None, metavar="TOML")
    ap.add_argument("--link", choices=LINKS, default="inflow",
                    help="where the meter sits: " + "; ".join(f"{k}: {v}" for k, v in LINKS.items()))
    ap.add_argument("--data", type=Path, default=None, metavar="DIR",
                    help="score LeakDB's own scenarios instead: a network folder holding "
                         "Scenario-<id>/ (e.g. LeakDB/Hanoi_CMH), or a zip file of one; see "
                         "benchmarks/leakdb_files.py")
    ap.add_argument("--ids", default=None, metavar="N-M,...",
                    help="with --data: the scenarios to read (default: every Scenario-<id>)")
    ap.add_argument("--flow-file", default=INFLOW, metavar="LINK",
                    help="with --data: the Flows/<LINK>.csv the meter reads (default: %(default)s, "
                         "the inflow LeakDB's MNF algorithm reads)")
    ap.add_argument("--hourly", action="store_true",
                    help="judge the 30-min readings on [leaks] step_s = 3600, the default: "
                         "hourly means of each two readings, as meterd leaks bins them")
    ap.add_argument("--mqtt", action="store_true",
                    help="also replay the flows through MQTT, the daemon and meterd leaks, as a "
                         "flow sensor's flow_m3h readings, and check the incidents are the same")
    args = ap.parse_args(argv)
    if args.mqtt and (args.leaks or args.hourly):
        ap.error("--mqtt runs the default [leaks] on the readings' own step: the replay's "
                 "config carries only step_s")
    try:
        data = _data(args)
    except ValueError as e:  # LeakDBFormatError names the file and line
        ap.error(str(e))
    step = 3600 if args.hourly else data.step_s
    if step % data.step_s:
        ap.error(f"--hourly needs readings that divide an hour, not every {data.step_s} s")
    settings = load_settings(args.leaks).model_copy(update={"step_s": step})
    per = step // data.step_s
    keep = data.flow.shape[1] // per * per  # a last, partial bin is not judged
    flow = data.flow[:, :keep].reshape(data.flow.shape[0], -1, per).mean(axis=2)
    # Generated scenarios replayed through MQTT keep the replay's documented calendar
    # (2015-01-01); LeakDB's own keep theirs, whose weekly pattern starts on their first day.
    t0 = T0_REAL if args.mqtt and args.data is None else data.t0_s
    grid = Grid(t0, flow.shape[1], step)
    ms: dict[str, Callable[[FloatArray, Grid], list[Incident]]] = methods(settings)
    runs = {name: ms[name](flow, grid) for name in ("meterd", "LeakDB MNF reference")}
    replay = MqttReplay(settings=settings, rates=True, origin_s=t0) if args.mqtt else None
    if replay is not None:
        runs = {"meterd via MQTT": replay(flow, grid), **runs}
    print(_title(args, data, step))
    if data.unlisted:
        print(f"note: {data.unlisted} labelled leak periods have no Leaks/*_info.csv (a second "
              "leak at one node overwrites the first's); they are scored, in no size band\n",
              file=sys.stderr)
    if data.label_mismatches:
        print(f"warning: {data.label_mismatches} scenarios' Labels.csv do not mark exactly the "
              "spans of their Leaks/*_info.csv; the info files are scored\n", file=sys.stderr)
    months = len(data.ids) * flow.shape[1] * step / 86400 / 30.4
    scores = {name: score(incs, data.truth, grid, data.step_s) for name, incs in runs.items()}
    print(header())
    print("\n".join(rows(scores, months)))
    print("\nmeterd by the detector that found each leak period first:\n")
    print("\n".join(detector_rows(scores["meterd"], months)))
    print("\nLeakDB's own scores, per reading (an incident labels the readings from its "
          "detected_at to its end):\n")
    print("\n".join(leakdb_rows(runs, data, grid)))
    if replay is None:
        return 0
    return compare_replay([runs["meterd"]], [runs["meterd via MQTT"]], replay)


if __name__ == "__main__":
    sys.exit(main())
