"""Leak detection evaluation: synthetic leaks injected on real DAIAD household demand.

Usage::

    .venv/bin/python benchmarks/leak_eval.py [--split heldout|dev] [--zip PATH] [--seed 42]

Prints a markdown table per method (meterd's detectors, the vendor continuous-flow rule and the
LeakDB MNF reference): leaks found by size, false incidents per meter-month and median delay.

Protocol (fixed so the numbers can be reproduced):
- Households are sorted by key; even positions are the development half (used for tuning),
  odd positions the held-out half (reported).
- Per household, ``--onsets`` onset hours are drawn (seeded) among hours with >= 35 days of
  history before and >= 90 % observed data in the following 72 h. Each trial is a 49-day window
  (35 days before onset, 14 after) starting at local midnight; alternate trials get a continuous
  leak (2–60 L/h, log-uniform) or a burst (0.3–2 m³/h, uniform), added to every observed bin
  from the onset hour (at a random minute) to the end of the window.
- A leak is found when an incident on that row is detected after the onset and within 14 days;
  the delay is ``detected_at - onset``. A leak hidden inside an incident already open before the
  onset is counted as missed.
- Leak volumes are quantised to whole litres per bin, as the real register reports them.
- A burst is "caught by the first full hour" when it is detected no later than the end of the
  first hourly bin that lies wholly after its onset (the first reading that shows all of it).
- False incidents: the same method on the clean full-year series of the same households, per
  meter-month of observed data. DAIAD has no leak labels, so *every* incident on the clean data
  counts (the strict reading, the same for every method). The column "of which on >= 24 h runs"
  says how many of them overlap a run of >= 24 h of uninterrupted non-zero use (possible real
  leaks; this is exactly what the vendor rule fires on).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from meterd.analysis.continuous_flow import vendor_rule
from meterd.analysis.hourly import FloatArray, Grid, local_calendar, true_runs
from meterd.analysis.incidents import Incident, episodes
from meterd.analysis.night_flow import leakdb_reference
from meterd.leaks.config import LeaksConfig, parse_leaks
from meterd.leaks.daiad import read_daiad
from meterd.leaks.engine import MeterInfo, detect

DEFAULT_ZIP = Path(__file__).resolve().parents[1].parent / "shared/data/daiad/swm_trialA.zip"
BEFORE_D, AFTER_D = 35, 14
Method = Callable[[FloatArray, Grid], list[Incident]]


def methods(settings: LeaksConfig) -> dict[str, Method]:
    def meterd(flow: FloatArray, grid: Grid) -> list[Incident]:
        cal = local_calendar(grid, "UTC")
        info = [MeterInfo(str(i), normally_zero=None) for i in range(flow.shape[0])]  # "auto"
        return detect(flow, grid, cal, info, settings)

    def vendor(flow: FloatArray, grid: Grid) -> list[Incident]:
        return episodes(vendor_rule(flow, grid.step_s), _ids(flow), grid)

    def leakdb(flow: FloatArray, grid: Grid) -> list[Incident]:
        hour = local_calendar(grid, "UTC").hour
        return episodes(leakdb_reference(flow, hour, grid.step_s), _ids(flow), grid)

    return {"meterd": meterd, "vendor continuous-flow": vendor, "LeakDB MNF reference": leakdb}


def _ids(flow: FloatArray) -> list[str]:
    return [str(i) for i in range(flow.shape[0])]


def split(names: list[str], which: str) -> list[int]:
    order = sorted(range(len(names)), key=lambda i: names[i])
    return [i for pos, i in enumerate(order) if pos % 2 == (1 if which == "heldout" else 0)]


def make_trials(flow: FloatArray, rows: list[int], n_onsets: int, rng: np.random.Generator,
                ramp_h: float = 0.0) -> tuple[FloatArray, list[dict[str, float]]]:
    """Windows of real demand with one injected leak or burst each, and their ground truth;
    ``ramp_h`` > 0 makes the leaks (not the bursts) incipient (:func:`leak_flow`)."""
    length = (BEFORE_D + AFTER_D) * 24
    windows, truth = [], []
    for r in rows:
        obs = ~np.isnan(flow[r])
        ahead = np.convolve(obs, np.ones(72), "full")[71:]  # observed bins in [i, i + 72)
        cands = [d for d in range(BEFORE_D, flow.shape[1] // 24 - AFTER_D)
                 if obs[(d - BEFORE_D) * 24 : d * 24].mean() >= 0.5]
        for j in range(n_onsets):
            if not cands:
                break
            day = int(rng.choice(cands))
            hour = int(rng.integers(0, 24))
            onset_bin = BEFORE_D * 24 + hour
            start = (day - BEFORE_D) * 24
            if ahead[start + onset_bin] < 0.9 * 72:
                continue
            w = flow[r, start : start + length].copy()
            kind = "leak" if j % 2 == 0 else "burst"
            rate = (float(np.exp(rng.uniform(np.log(0.002), np.log(0.060)))) if kind == "leak"
                    else float(rng.uniform(0.3, 2.0)))
            minute = float(rng.uniform(0, 1))  # the onset falls inside the hour
            w += register_steps(leak_flow(length, onset_bin + minute, rate,
                                          ramp_h if kind == "leak" else 0.0))
            windows.append(w)
            truth.append({"row": len(windows) - 1, "kind": kind, "rate": rate,
                          "onset_s": (onset_bin + minute) * 3600})
    return np.stack(windows), truth


def leak_flow(n_bins: int, onset_h: float, rate: float, ramp_h: float = 0.0) -> FloatArray:
    """Mean extra flow per hourly bin of a leak from ``onset_h`` (hours after the first bin's
    start) that grows linearly to ``rate`` m³/h over ``ramp_h`` hours (0: at once), integrated
    exactly so a leak starting mid-bin adds only its share of that bin."""
    u = np.clip(np.arange(n_bins + 1, dtype=np.float64) - onset_h, 0.0, None)
    if ramp_h <= 0:
        return np.diff(rate * u)
    return np.diff(rate * np.where(u < ramp_h, u * u / (2 * ramp_h), u - ramp_h / 2))


def register_steps(extra: FloatArray, litre: float = 0.001) -> FloatArray:
    """Extra flow per hourly bin as a litre register would report it (whole litres per bin).

    DAIAD's own readings are whole litres; an injected leak must be quantised the same way, or
    a detector could key on the fractional litres that only injected flow has.
    """
    register = np.floor(np.cumsum(extra) / litre + 1e-9)
    return np.diff(register, prepend=0.0) * litre


def natural_runs(flow: FloatArray, min_h: int = 24) -> np.ndarray:
    """Bins inside runs of >= ``min_h`` consecutive non-zero hours (possible real leaks)."""
    busy = np.nan_to_num(flow) > 0
    out = np.zeros_like(busy)
    for m, a, b in zip(*true_runs(busy), strict=True):
        if b - a >= min_h:
            out[m, a:b] = True
    return out


def score(method: Method, flow: FloatArray, rows: list[int], trials: FloatArray,
          truth: list[dict[str, float]]) -> dict[str, object]:
    grid = Grid(0, trials.shape[1])
    by_row: dict[int, list[Incident]] = {}
    for inc in method(trials, grid):
        by_row.setdefault(int(inc.meter), []).append(inc)
    # (kind, size, delay h or None, by the first full hour, type of the incident that found it)
    hits: list[tuple[str, float, float | None, bool, str]] = []
    for t in truth:
        onset = t["onset_s"]
        first_full_end = (onset // 3600 + 2) * 3600  # end of the first bin wholly after onset
        found, by = None, ""
        for inc in by_row.get(int(t["row"]), []):
            open_at_onset = inc.detected_at <= onset and (inc.end is None or inc.end > onset)
            if open_at_onset:
                break  # already-open incident: the new leak is never reported
            if onset < inc.detected_at <= onset + AFTER_D * 86400:
                found, by = (inc.detected_at - onset) / 3600, inc.type
                break
        in_time = found is not None and onset + found * 3600 <= first_full_end
        hits.append((str(t["kind"]), t["rate"], found, in_time, by))
    clean = flow[rows]
    fgrid = Grid(0, clean.shape[1])
    nat = natural_runs(clean)
    n_false = n_nat = 0
    types: dict[str, int] = {}
    for inc in method(clean, fgrid):
        m = int(inc.meter)
        a = inc.start // 3600
        b = (inc.end // 3600) if inc.end is not None else clean.shape[1]
        if nat[m, a : max(b, a + 1)].any():
            n_nat += 1
        else:
            n_false += 1
        types[inc.type] = types.get(inc.type, 0) + 1
    months = float(np.sum(~np.isnan(clean)) / 730)
    return {"hits": hits, "false": n_false / months, "natural": n_nat / months,
            "clean_by_type": {k: v / months for k, v in types.items()}}


BANDS = [("leak", 0.002, 0.005, "leak 2–5 L/h"), ("leak", 0.005, 0.015, "leak 5–15 L/h"),
         ("leak", 0.015, 0.0601, "leak 15–60 L/h"), ("burst", 0.3, 1.0, "burst 0.3–1 m³/h"),
         ("burst", 1.0, 2.01, "burst 1–2 m³/h")]


def band_cells(hits: Sequence[tuple[object, ...]], bands: Sequence[tuple[str, float, float, str]]
               ) -> list[str]:
    """"found/total" per (kind, low, high) band of ``(kind, size, delay or None, ...)`` hits,
    then the recall over all hits."""
    cells = []
    for kind, lo, hi, _ in bands:
        sel = [h for h in hits if h[0] == kind and lo <= float(h[1]) < hi]  # type: ignore[arg-type]
        cells.append(f"{sum(h[2] is not None for h in sel)}/{len(sel)}")
    found = sum(h[2] is not None for h in hits)
    return [*cells, f"{found / max(len(hits), 1):.3f}"]


def table(results: dict[str, dict[str, object]]) -> str:
    head = ["method", *[b[3] for b in BANDS], "recall", "clean-data incidents /meter-month",
            "of which on >= 24 h runs", "median delay h (leaks)", "median delay h (bursts)",
            "bursts by first full hour"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        hits = res["hits"]
        assert isinstance(hits, list)
        cells = [name, *band_cells(hits, BANDS)]
        found = [h for h in hits if h[2] is not None]
        cells += [f"{res['false'] + res['natural']:.3f}", f"{res['natural']:.3f}"]  # type: ignore[operator]
        for kind in ("leak", "burst"):
            d = [h[2] for h in found if h[0] == kind]
            cells.append(f"{np.median(d):.1f}" if d else "–")
        bursts = [h for h in hits if h[0] == "burst"]
        cells.append(f"{sum(h[3] for h in bursts)}/{len(bursts)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detector_table(res: dict[str, object]) -> str:
    """One method's finds, clean-data incidents and median delays by the type of the incident
    that reported each leak first (an incident takes the type of its earliest detection)."""
    hits = res["hits"]
    clean = res["clean_by_type"]
    assert isinstance(hits, list) and isinstance(clean, dict)
    head = ["first detector", *[b[3] for b in BANDS], "clean-data incidents /meter-month",
            "median delay h (leaks)", "median delay h (bursts)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind in sorted({h[4] for h in hits if h[2] is not None} | set(clean)):
        mine = [h if h[4] == kind else (*h[:2], None, *h[3:]) for h in hits]
        cells = [kind, *band_cells(mine, BANDS)[:-1], f"{clean.get(kind, 0.0):.3f}"]
        for what in ("leak", "burst"):
            d = [h[2] for h in mine if h[0] == what and h[2] is not None]
            cells.append(f"{np.median(d):.1f}" if d else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(zip_path: Path, which: str, seed: int, n_onsets: int,
        settings: LeaksConfig | None = None, ramp_h: float = 0.0) -> dict[str, dict[str, object]]:
    names, _, flow = read_daiad(zip_path)
    rows = split(names, which)
    trials, truth = make_trials(flow, rows, n_onsets, np.random.default_rng(seed), ramp_h)
    return {name: score(m, flow, rows, trials, truth)
            for name, m in methods(settings or LeaksConfig()).items()}


def trial_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options that pick the trial set, shared by the benchmarks built on it."""
    ap.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    ap.add_argument("--split", choices=("heldout", "dev"), default="heldout")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--onsets", type=int, default=8, help="trials per household")
    return ramp_args(ap)


def ramp_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--ramp-days`` and ``--leaks``, shared by the DAIAD benchmarks."""
    ap.add_argument("--ramp-days", type=float, default=0.0,
                    help="incipient leaks: grow linearly to their size over this many days "
                         "(default 0: full size at the onset)")
    ap.add_argument("--leaks", type=Path, default=None, metavar="TOML",
                    help="a TOML file whose [leaks] table replaces the default settings "
                         "(to compare variants on the dev split)")
    return ap


def load_settings(path: Path | None) -> LeaksConfig:
    """The ``[leaks]`` table of ``path`` (defaults if None or absent), validated as the daemon does."""
    if path is None:
        return LeaksConfig()
    with path.open("rb") as fh:
        return parse_leaks(tomllib.load(fh).get("leaks", {}))


def main(argv: list[str] | None = None) -> int:
    ap = trial_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = ap.parse_args(argv)
    if not args.zip.exists():
        print(f"DAIAD data not found at {args.zip}", file=sys.stderr)
        return 2
    results = run(args.zip, args.split, args.seed, args.onsets, load_settings(args.leaks),
                  args.ramp_days * 24)
    n = len(results["meterd"]["hits"])  # type: ignore[arg-type]
    ramp = f", leaks ramping over {args.ramp_days:g} days" if args.ramp_days else ""
    print(f"DAIAD trial A, {args.split} half, {n} injected leaks/bursts, seed {args.seed}{ramp}\n")
    print(table(results))
    print("\nmeterd by the detector that reported each leak first:\n")
    print(detector_table(results["meterd"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
