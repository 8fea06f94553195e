"""Zone (DMA) leak evaluation: mains leaks between a parent meter and its children, and child leaks.

Usage::

    .venv/bin/python benchmarks/leak_eval_zones.py [--suite daiad|sim|both] [--split heldout|dev]
                                                   [--zip PATH] [--seed 42]

Prints a markdown table per suite for meterd's detectors (``meterd.leaks.engine.detect`` with
``MeterInfo(parent=...)``), the LeakDB MNF reference and the vendor continuous-flow rule, the two
references run on every meter of the zone (parent and children).

DAIAD suite (protocol fixed so the numbers can be reproduced):
- Only the households of one half (``leak_eval.split``) are used. Each of ``--trials`` trials
  (seeded) takes a 49-day window (35 days before the onset, 14 after) starting at a random local
  midnight; its zone is a random 10-20 of the households that report >= 95 % of that window
  (one that mostly does not report is not a member then). The parent meter reads the sum of the
  children as a district meter would: with a fixed per-zone calibration error (uniform ±1 %)
  and 1-litre resolution, so its night flow is never zero and the balance never exactly zero.
  A missing child reading makes that hour's balance unknown.
- One injected fault per window, cycling through four kinds, from a random minute of a random
  hour of day 36, in whole litres per hour (``leak_eval.register_steps``):
  mains leak (5-200 L/h log-uniform, on the parent only: a pipe between the parent and its
  children leaks, so zone balance and the parent's MNF see it and no child does), mains burst
  (0.3-2 m³/h, parent only), child leak (2-60 L/h log-uniform, on one child and hence also on
  the parent) and child burst (0.3-2 m³/h). 5-200 L/h is about 0.1-4x the night flow of such a
  zone (median zone MNF ~10 L/h): from a weeping joint to a pipe-joint failure.
- Found = an incident detected after the onset and within 14 days on the right meter: the parent
  or ``zone:<parent>`` for mains faults, the child for child faults. A fault hidden inside an
  incident already open at the onset on those meters is missed. Delay = ``detected_at - onset``.
- False incidents: the same method on the same windows without the fault, per meter-month of
  observed data (parent and children). An incident overlapping a run of >= 24 h of uninterrupted
  use in the clean data (for a parent or zone: in any of its children) is counted as "natural",
  not false, as in ``leak_eval.py``. Data-quality incidents (stopped meter) are not counted.
  "zone false" counts only the parent/zone incidents, per zone-month. "all clean-data" is false
  plus natural: every non-quality incident on the clean windows, the strict count docs/detection.md
  uses for households.

Simulator suite: ``simulators.campus`` campuses of 12 buildings (three zones of four), 120 days of
hourly water data from the deterministic model with the same ±1 % parent calibration error and
1-litre resolution. Each run has one leak starting on day 60 at 01:30, 07:30, 13:30 or 19:30
local time: either between zone 1's parent and its children (mains, sizes below; found on the
parent or ``zone:<parent>``), or inside one building of zone 1 (an office, a canteen and a
dormitory, whose own night use differs; found on that building's meter). The two other zones
and clean campuses are the controls for false incidents (no natural runs). meterd gets the
campus's ``[calendar] breaks`` as the daemon does (``job.break_ordinals``). Held-out seeds are
``--seed`` and the next two; the dev seeds used for tuning are 7, 8 and 9. Every run has an exact
twin, the same campus without the leak: an incident that the method also had open on its twin at
the same detection time would have been raised without the leak, so it finds nothing (a night
rule that fires every weekend does not "find" a slow leak by firing on the next weekend).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.leak_eval import (
    AFTER_D,
    BEFORE_D,
    DEFAULT_ZIP,
    band_cells,
    leak_flow,
    load_settings,
    natural_runs,
    ramp_args,
    register_steps,
    split,
)
from meterd.analysis.continuous_flow import vendor_rule
from meterd.analysis.hourly import FloatArray, Grid, LocalCalendar, local_calendar
from meterd.analysis.incidents import QUALITY_TYPES, Incident, episodes
from meterd.analysis.night_flow import leakdb_reference
from meterd.leaks.config import LeaksConfig
from meterd.leaks.daiad import read_daiad
from meterd.leaks.engine import MeterInfo, detect

KINDS = ("mains leak", "child leak", "mains burst", "child burst")
MAINS_LPH = (5.0, 200.0)
CHILD_LPH = (2.0, 60.0)
BURST_M3H = (0.3, 2.0)
BANDS = [("mains leak", 0.005, 0.020, "mains 5–20 L/h"), ("mains leak", 0.020, 0.060, "mains 20–60 L/h"),
         ("mains leak", 0.060, 0.2001, "mains 60–200 L/h"), ("mains burst", 0.3, 2.01, "mains burst"),
         ("child leak", 0.002, 0.0601, "child 2–60 L/h"), ("child burst", 0.3, 2.01, "child burst")]
SIM_LEAKS_M3H = (0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class Zones:
    """A stack of zones: flow rows, the meter list (parents and children) and the calendar."""

    flow: FloatArray
    meters: list[MeterInfo]
    grid: Grid
    cal: LocalCalendar
    children: dict[str, list[str]] = field(default_factory=dict)  # parent id -> child ids
    breaks: tuple[tuple[int, int], ...] = ()  # [calendar] breaks as date ordinals, as job.py


Method = Callable[[Zones], list[Incident]]


def methods(settings: LeaksConfig) -> dict[str, Method]:
    """meterd as the daemon runs it, and the two references on every meter of each zone."""
    def meterd(z: Zones) -> list[Incident]:
        return detect(z.flow, z.grid, z.cal, z.meters, settings, z.breaks)

    def vendor(z: Zones) -> list[Incident]:
        return episodes(vendor_rule(z.flow, z.grid.step_s), [m.id for m in z.meters], z.grid)

    def leakdb(z: Zones) -> list[Incident]:
        alarm = leakdb_reference(z.flow, z.cal.hour, z.grid.step_s)
        return episodes(alarm, [m.id for m in z.meters], z.grid)

    return {"meterd": meterd, "vendor continuous-flow": vendor, "LeakDB MNF reference": leakdb}


# --- building zones -------------------------------------------------------------------------


def parent_reading(children: FloatArray, bias: float) -> FloatArray:
    """What a district meter over ``children`` reads: their sum, calibration error, 1 L steps.

    Missing child readings are telemetry gaps, not missing water, but their use is unknown, so
    the parent sums the observed children and is missing only when every child is.
    """
    total = np.nansum(children, axis=0) * (1.0 + bias)
    total[np.all(np.isnan(children), axis=0)] = np.nan
    return np.round(total, 3)


def stack_zones(blocks: Sequence[tuple[str, FloatArray, FloatArray]], grid: Grid, tz: str) -> Zones:
    """Zones from (name, parent row, children rows) blocks, ids ``<name>/P`` and ``<name>/c<j>``;
    every meter ``normally_zero = "auto"``, as the config default."""
    rows, meters, kids = [], [], {}
    for name, parent, children in blocks:
        pid = f"{name}/P"
        rows.append(parent)
        meters.append(MeterInfo(pid, building=name, normally_zero=None))
        kids[pid] = [f"{name}/c{j}" for j in range(children.shape[0])]
        rows.extend(children)
        meters.extend(MeterInfo(c, building=name, parent=pid, normally_zero=None)
                      for c in kids[pid])
    return Zones(np.stack(rows), meters, grid, local_calendar(grid, tz), kids)


# --- DAIAD trials ---------------------------------------------------------------------------


def draw_fault(kind: str, rng: np.random.Generator) -> float:
    lo, hi = (MAINS_LPH if kind == "mains leak" else CHILD_LPH if kind == "child leak"
              else (BURST_M3H[0] * 1000, BURST_M3H[1] * 1000))
    if "burst" in kind:
        return float(rng.uniform(lo, hi)) / 1000.0
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) / 1000.0


def zone_trials(flow: FloatArray, rows: list[int], n_trials: int, rng: np.random.Generator,
                ramp_h: float = 0.0) -> tuple[Zones, Zones, list[dict[str, object]]]:
    """49-day windows of real zones with one injected fault each, the same windows clean, and
    the truth. A zone is 10-20 households of ``rows`` that report >= 95 % of the window (a
    household that mostly does not report is not a member of the zone at that time)."""
    length = (BEFORE_D + AFTER_D) * 24
    blocks, clean, truth = [], [], []
    for j in range(n_trials):
        start = int(rng.integers(0, flow.shape[1] // 24 - BEFORE_D - AFTER_D)) * 24
        w = flow[rows, start : start + length]
        members = np.flatnonzero(np.mean(~np.isnan(w), axis=1) >= 0.95)
        if members.size < 10:
            continue
        kids = w[rng.permutation(members)[: int(rng.integers(10, 21))]]
        kind = KINDS[j % len(KINDS)]
        onset_bin = BEFORE_D * 24 + int(rng.integers(0, 24))
        minute, rate, bias = float(rng.uniform(0, 1)), draw_fault(kind, rng), rng.uniform(-.01, .01)
        child = int(rng.integers(0, kids.shape[0]))
        name = f"t{j}"
        clean.append((name, parent_reading(kids, float(bias)), kids))
        kids = kids.copy()
        extra = register_steps(leak_flow(length, onset_bin + minute, rate,
                                         0.0 if "burst" in kind else ramp_h))
        if kind.startswith("child"):
            kids[child] += extra  # missing bins stay missing
        parent = parent_reading(kids, float(bias))
        if kind.startswith("mains"):
            parent += extra
        blocks.append((name, parent, kids))
        target = f"{name}/c{child}" if kind.startswith("child") else f"{name}/P"
        accept = {target} | ({f"zone:{name}/P"} if kind.startswith("mains") else set())
        truth.append({"kind": kind, "rate": rate, "onset_s": (onset_bin + minute) * 3600,
                      "accept": accept})
    grid = Grid(0, length)
    return stack_zones(blocks, grid, "UTC"), stack_zones(clean, grid, "UTC"), truth


# --- scoring --------------------------------------------------------------------------------


def hits(method: Method, trials: Zones, truth: list[dict[str, object]],
         twin: Sequence[Incident] = ()) -> list[tuple[str, float, float | None]]:
    """(kind, rate, delay h or None) per injected fault. ``twin``: the method's incidents on the
    same data without the fault; an incident that was open there too at its detection time
    would have been raised without the fault, so it finds nothing."""
    return found_in(method(trials), truth, twin)


def found_in(incidents: Sequence[Incident], truth: list[dict[str, object]],
             twin: Sequence[Incident] = ()) -> list[tuple[str, float, float | None]]:
    """:func:`hits` on incidents already detected."""
    by_meter: dict[str, list[Incident]] = {}
    for inc in incidents:
        if inc.type not in QUALITY_TYPES and not _also_in(twin, inc):
            by_meter.setdefault(inc.meter, []).append(inc)
    out = []
    for t in truth:
        onset = float(t["onset_s"])  # type: ignore[arg-type]
        accept = t["accept"]
        assert isinstance(accept, set)
        incs = sorted((i for m in accept for i in by_meter.get(m, [])), key=lambda i: i.detected_at)
        found = None
        for inc in incs:
            if inc.detected_at <= onset and (inc.end is None or inc.end > onset):
                break  # already open: the new fault is never reported
            if onset < inc.detected_at <= onset + float(t.get("within_s", AFTER_D * 86400)):  # type: ignore[arg-type]
                found = (inc.detected_at - onset) / 3600
                break
        out.append((str(t["kind"]), float(t["rate"]), found))  # type: ignore[arg-type]
    return out


def _also_in(twin: Sequence[Incident], inc: Incident) -> bool:
    return any(t.meter == inc.meter and t.detected_at <= inc.detected_at
               and (t.end is None or t.end > inc.detected_at) for t in twin)


def false_rates(method: Method, clean: Zones, natural: bool = True) -> dict[str, float]:
    """False and natural-run incidents per meter-month, and zone-level false per zone-month."""
    index = {m.id: i for i, m in enumerate(clean.meters)}
    nat = natural_runs(clean.flow) if natural else np.zeros(clean.flow.shape, dtype=bool)
    for pid, kids in clean.children.items():
        nat[index[pid]] = nat[[index[c] for c in kids]].any(axis=0)
    n_false = n_nat = n_zone = 0
    for inc in method(clean):
        if inc.type in QUALITY_TYPES:
            continue
        meter = inc.meter.removeprefix("zone:")
        a = (inc.start - clean.grid.t0_s) // clean.grid.step_s
        b = clean.grid.n if inc.end is None else (inc.end - clean.grid.t0_s) // clean.grid.step_s
        if nat[index[meter], a : max(b, a + 1)].any():
            n_nat += 1
        else:
            n_false += 1
            n_zone += meter in clean.children
    obs = ~np.isnan(clean.flow)
    months = float(obs.sum() / 730)
    zone_months = float(sum(obs[index[p]].sum() for p in clean.children) / 730)
    return {"false": n_false / months, "natural": n_nat / months, "zone": n_zone / zone_months}


def table(results: dict[str, dict[str, object]]) -> str:
    head = ["method", *[b[3] for b in BANDS], "recall", "false /meter-month",
            "natural-run /meter-month", "all clean-data /meter-month", "zone false /zone-month",
            "median delay h (mains leaks)",
            "median delay h (child leaks)", "median delay h (bursts)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        hs = res["hits"]
        assert isinstance(hs, list)
        cells = [name, *band_cells(hs, BANDS)]
        found = [h for h in hs if h[2] is not None]
        cells += [f"{res['false']:.3f}", f"{res['natural']:.3f}",
                  f"{float(res['false']) + float(res['natural']):.3f}", f"{res['zone']:.3f}"]
        for kinds in (("mains leak",), ("child leak",), ("mains burst", "child burst")):
            d = [h[2] for h in found if h[0] in kinds]
            cells.append(f"{np.median(d):.1f}" if d else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_daiad(zip_path: Path, which: str, seed: int, n_trials: int,
              settings: LeaksConfig | None = None, ramp_h: float = 0.0
              ) -> dict[str, dict[str, object]]:
    names, _, flow = read_daiad(zip_path)
    trials, clean, truth = zone_trials(flow, split(names, which), n_trials,
                                       np.random.default_rng(seed), ramp_h)
    out: dict[str, dict[str, object]] = {}
    for name, m in methods(settings or LeaksConfig()).items():
        out[name] = {"hits": hits(m, trials, truth), **false_rates(m, clean)}
    return out


# --- simulator suite ------------------------------------------------------------------------


SIM_T0 = 1_709_222_400  # 2024-03-01 00:00 at the campus (UTC+8), mid-term
SIM_ONSETS_H = (1.5, 7.5, 13.5, 19.5)  # local clock hour of the onset on day 60
SIM_BUILDINGS = ("w-office-003", "w-canteen-001", "w-dormitory-002")  # in zone 1
SIM_BUILDING_M3H = (0.01, 0.03, 0.1, 0.3)
SIM_INCIPIENT_M3H = (0.1, 0.3)  # incipient leaks, mains and buildings: ramps of SIM_RAMP_D
SIM_RAMP_D, SIM_RAMP_WINDOW_D = 60, 58  # ... found within SIM_RAMP_WINDOW_D days of the onset
SIM_DEV_SEEDS = (7, 8, 9)


def sim_zones(seed: int, leak: tuple[str, float, float, float] | None, days: int = 120
              ) -> tuple[Zones, dict[str, str]]:
    """Hourly water flow of a simulated 12-building campus, with ``(meter, m³/h, onset s after
    the start, ramp s)`` leaking if given; also the map from simulator meter ids to zone row
    ids."""
    from simulators.campus.campus_config import build_campus
    from simulators.campus.model import values_at

    campus = build_campus(12, seed, SIM_T0, name=f"z{seed}")
    if leak is not None:
        campus = campus.with_leak(leak[0], leak[1], SIM_T0 + leak[2], leak[3])
    rng = np.random.default_rng(seed)
    edges = SIM_T0 + 3600.0 * np.arange(days * 24 + 1)
    hourly = {m.id: np.round(np.diff(values_at(campus, m, edges)["volume_m3"]), 3)
              for m in campus.meters if m.kind == "water"}
    blocks, ids = [], {}
    for p in (m for m in campus.meters if m.kind == "water" and m.children):
        kids = np.stack([hourly[c] for c in p.children])
        parent = np.round(hourly[p.id] * (1 + float(rng.uniform(-0.01, 0.01))), 3)
        name = f"s{seed}-{p.id}"
        blocks.append((name, parent, kids))
        ids[p.id] = f"{name}/P"
        ids.update((c, f"{name}/c{j}") for j, c in enumerate(p.children))
    z = stack_zones(blocks, Grid(SIM_T0, days * 24), campus.timezone)
    # Scored on times relative to the start, as the DAIAD trials; the calendar stays the campus's.
    z = Zones(z.flow, z.meters, Grid(0, z.grid.n), z.cal, z.children,
              tuple((a.toordinal(), b.toordinal()) for a, b in campus.breaks))
    return z, ids


def sim_faults() -> list[tuple[str, str, float, float]]:
    """(kind, simulator meter, m³/h, ramp s) of every simulated fault: mains leaks on zone 1,
    leaks inside one building of each kind (office, canteen, dormitory) of that zone, and
    incipient leaks in both places that grow to their size over ``SIM_RAMP_D`` days."""
    ramp = SIM_RAMP_D * 86400.0
    return [*[("mains leak", "w-zone-01", v, 0.0) for v in SIM_LEAKS_M3H],
            *[("building leak", b, v, 0.0) for b in SIM_BUILDINGS for v in SIM_BUILDING_M3H],
            *[("mains incipient", "w-zone-01", v, ramp) for v in SIM_INCIPIENT_M3H],
            *[("building incipient", b, v, ramp) for b in SIM_BUILDINGS
              for v in SIM_INCIPIENT_M3H]]


def run_sim(seeds: Sequence[int], settings: LeaksConfig | None = None, progress: bool = True
            ) -> dict[str, dict[str, object]]:
    """Per seed, fault and onset hour one campus with that fault; clean campuses for false."""
    ms = methods(settings or LeaksConfig())
    hs: dict[str, list[tuple[str, float, float | None]]] = {name: [] for name in ms}
    clean = {s: sim_zones(s, None)[0] for s in seeds}
    twins = {(name, s): m(z) for name, m in ms.items() for s, z in clean.items()}
    plan = [(s, f, h) for s in seeds for f in sim_faults() for h in SIM_ONSETS_H]
    for seed, (kind, meter, size, ramp), hour in tqdm(plan, desc="sim trials",
                                                      disable=not progress):
        onset = 60 * 86400 + hour * 3600
        z, ids = sim_zones(seed, (meter, size, onset, ramp))
        accept = {ids[meter]} | ({f"zone:{ids[meter]}"} if kind.startswith("mains") else set())
        truth = [{"kind": kind, "rate": size, "onset_s": onset, "accept": accept,
                  "within_s": (SIM_RAMP_WINDOW_D if ramp else AFTER_D) * 86400}]
        for name, m in ms.items():
            hs[name] += hits(m, z, truth, twins[name, seed])
    out: dict[str, dict[str, object]] = {}
    for name, m in ms.items():
        falses = [false_rates(m, z, natural=False) for z in clean.values()]
        out[name] = {"hits": hs[name], **{k: float(np.mean([f[k] for f in falses]))
                                          for k in ("false", "natural", "zone")}}
    return out


SIM_BANDS = [*[("mains leak", v, v * 1.001, f"mains {v * 1000:g} L/h") for v in SIM_LEAKS_M3H],
             *[("building leak", v, v * 1.001, f"building {v * 1000:g} L/h")
               for v in SIM_BUILDING_M3H],
             *[(f"{where} incipient", v, v * 1.001, f"{where} incipient {v * 1000:g} L/h")
               for where in ("mains", "building") for v in SIM_INCIPIENT_M3H]]
SIM_DELAYS = ("mains leak", "building leak", "mains incipient", "building incipient")


def sim_table(results: dict[str, dict[str, object]]) -> str:
    head = ["method", *[b[3] for b in SIM_BANDS], "recall", "false /meter-month",
            "zone false /zone-month", *[f"median delay h ({k})" for k in SIM_DELAYS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        hs = res["hits"]
        assert isinstance(hs, list)
        cells = [name, *band_cells(hs, SIM_BANDS), f"{res['false']:.3f}", f"{res['zone']:.3f}"]
        for kind in SIM_DELAYS:
            d = [h[2] for h in hs if h[0] == kind and h[2] is not None]
            cells.append(f"{np.median(d):.1f}" if d else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("daiad", "sim", "both"), default="both")
    ap.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    ap.add_argument("--split", choices=("heldout", "dev"), default="heldout")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--trials", type=int, default=240, help="zone windows with one fault each")
    args = ramp_args(ap).parse_args(argv)
    settings = load_settings(args.leaks)
    if args.suite in ("daiad", "both"):
        if not args.zip.exists():
            print(f"DAIAD data not found at {args.zip}", file=sys.stderr)
            return 2
        res = run_daiad(args.zip, args.split, args.seed, args.trials, settings,
                        args.ramp_days * 24)
        n = len(res["meterd"]["hits"])  # type: ignore[arg-type]
        ramp = f", leaks ramping over {args.ramp_days:g} days" if args.ramp_days else ""
        print(f"DAIAD zones, {args.split} half, {n} injected faults, seed {args.seed}{ramp}\n")
        print(table(res) + "\n")
    if args.suite in ("sim", "both"):
        seeds = [args.seed + i for i in range(3)] if args.split == "heldout" else list(SIM_DEV_SEEDS)
        res = run_sim(seeds, settings)
        print(f"Simulated campus, seeds {seeds}, one leak per run on day 60 of 120 at "
              f"{', '.join(f'{h:g}' for h in SIM_ONSETS_H)} h local; incipient leaks ramp over "
              f"{SIM_RAMP_D} days and count when found within {SIM_RAMP_WINDOW_D} days\n")
        print(sim_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
