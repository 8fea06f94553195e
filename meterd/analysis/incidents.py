"""Incidents: turning a detector's per-bin alarm state into opened and closed incidents.

Every detector returns an :class:`Alarm`: for each meter and bin, whether the alarm holds using
data up to the end of that bin, the excess flow it attributes to a leak, and how many bins back
the excess began. :func:`episodes` turns runs of alarm into :class:`Incident` records; the same
function serves the replay CLI, the scheduled job and the evaluation harness, so all three agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from meterd.analysis.hourly import BoolArray, FloatArray, Grid, true_runs

QUALITY_TYPES = ("stopped_meter", "reverse_flow")


@dataclass(slots=True)
class Alarm:
    """Per-bin output of one detector over ``meters`` (rows) and a :class:`Grid` (columns).

    ``active[m, i]`` uses only data up to the end of bin ``i``; ``excess`` is the flow above
    normal in m³/h; ``start_lag[m, i]`` is how many bins before ``i`` the excess began.
    """

    kind: str
    active: BoolArray
    excess: NDArray[np.float32]
    start_lag: NDArray[np.int32]


@dataclass(slots=True)
class Incident:
    """One leak (or data-quality) incident at a meter or zone; times are epoch seconds."""

    meter: str
    type: str
    start: int
    detected_at: int
    end: int | None
    rate_m3h: float
    volume_m3: float
    cost: float = 0.0
    detectors: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Identity that survives re-detection: one meter, one type, one start estimate."""
        return f"{self.meter}|{self.type}|{self.start}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alarm_empty(kind: str, shape: tuple[int, int]) -> Alarm:
    return Alarm(kind, np.zeros(shape, dtype=bool), np.zeros(shape, dtype=np.float32),
                 np.zeros(shape, dtype=np.int32))


def episodes(
    alarm: Alarm,
    meters: list[str],
    grid: Grid,
    price_per_m3: float = 0.0,
    min_rate_m3h: float = 0.0,
) -> list[Incident]:
    """Incidents from runs of ``alarm.active``, each detected at the end of its first bin.

    Parameters
    ----------
    alarm : Alarm
        A detector's output on ``grid``.
    meters : list of str
        Row labels of the alarm arrays.
    grid : Grid
        The time axis.
    price_per_m3 : float
        Water price used for the lost cost.
    min_rate_m3h : float
        Runs whose mean excess stays below this are dropped (too small to send a plumber).

    Returns
    -------
    list of Incident
        Ordered by ``detected_at``. An incident still active at the last bin has ``end=None``;
        its volume is counted up to the end of the grid.
    """
    out: list[Incident] = []
    for m, a, b in zip(*true_runs(alarm.active), strict=True):
        exc = alarm.excess[m, a:b].astype(float)
        rate = float(np.nanmean(exc)) if exc.size else 0.0
        if rate < min_rate_m3h:
            continue
        lag = int(alarm.start_lag[m, a])
        start_bin = max(int(a) - lag, 0)
        start = grid.t0_s + start_bin * grid.step_s
        end = None if b >= grid.n else grid.t0_s + int(b) * grid.step_s
        until = grid.t0_s + int(b) * grid.step_s
        volume = max(rate, 0.0) * (until - start) / 3600.0
        out.append(Incident(
            meter=meters[m], type=alarm.kind, start=start, detected_at=grid.bin_end_s(int(a)),
            end=end, rate_m3h=round(rate, 6), volume_m3=round(volume, 6),
            cost=round(volume * price_per_m3, 4), detectors=[alarm.kind]))
    out.sort(key=lambda inc: (inc.detected_at, inc.meter))
    return out


def merge_overlapping(incidents: list[Incident]) -> list[Incident]:
    """One incident per leak: detections on the same meter that overlap in time are merged.

    The earliest detection keeps its type, start and ``detected_at``; later detectors of the same
    leak are listed in ``detectors`` and extend its end. Rate, volume and cost are those of the
    detection that saw the most water: a short provisional step alarm, tripped on the noisiest
    bins, overstated the rate of the night-flow incident it joined when the largest rate won.
    Data-quality incidents never merge into leaks, so a stopped meter is not reported as a leak
    and vice versa.
    """
    merged: list[Incident] = []
    open_by_meter: dict[tuple[str, bool], Incident] = {}
    for inc in sorted(incidents, key=lambda i: (i.detected_at, i.meter, i.type)):
        quality = inc.type in QUALITY_TYPES
        cur = open_by_meter.get((inc.meter, quality))
        if cur is not None and (cur.end is None or cur.end >= inc.detected_at):
            if inc.type not in cur.detectors:
                cur.detectors.append(inc.type)
            cur.end = None if inc.end is None or cur.end is None else max(cur.end, inc.end)
            if inc.volume_m3 > cur.volume_m3:  # amounts of one detection, the one that saw most
                cur.rate_m3h, cur.volume_m3, cur.cost = inc.rate_m3h, inc.volume_m3, inc.cost
            continue
        copy = Incident(**{**inc.to_dict(), "detectors": list(inc.detectors)})
        merged.append(copy)
        open_by_meter[(inc.meter, quality)] = copy
    return merged


def hold_open(incidents: list[Incident], hold_s: int, now_s: int) -> list[Incident]:
    """Close an incident only after ``hold_s`` seconds without alarm (an alarm off-delay).

    Flow that pauses and resumes within ``hold_s`` is the same leak, not a new one: a dripping
    cistern stops for an hour, a buried leak drops below the threshold on a cold night. Such
    detections join the open incident. ``now_s`` is the end of the data: an incident that stopped
    less than ``hold_s`` before it is still open (``end`` is None), because whether it resumes
    is not yet known. Once closed, ``end`` is when the alarm last stopped.

    References
    ----------
    .. [1] ANSI/ISA-18.2-2016, "Management of Alarm Systems for the Process Industries"
       (off-delay timers against chattering alarms).
    """
    out: list[Incident] = []
    last: dict[tuple[str, bool], Incident] = {}
    for inc in sorted(incidents, key=lambda i: (i.detected_at, i.meter, i.type)):
        key = (inc.meter, inc.type in QUALITY_TYPES)
        cur = last.get(key)
        if cur is not None and cur.end is not None and inc.detected_at - cur.end <= hold_s:
            cur.end = inc.end
            cur.volume_m3 = round(cur.volume_m3 + inc.volume_m3, 6)
            cur.cost = round(cur.cost + inc.cost, 4)
            cur.rate_m3h = max(cur.rate_m3h, inc.rate_m3h)
            cur.detectors.extend(d for d in inc.detectors if d not in cur.detectors)
            continue
        copy = Incident(**{**inc.to_dict(), "detectors": list(inc.detectors)})
        out.append(copy)
        last[key] = copy
    for inc in out:
        if inc.end is not None and now_s - inc.end < hold_s:
            inc.end = None
    return out


def excess_volume(excess: FloatArray, step_h: float) -> float:
    """Total volume (m³) of a per-bin excess flow series (m³/h)."""
    return float(np.nansum(np.clip(excess, 0.0, None)) * step_h)


def until_first(alarm: Alarm, ends: BoolArray) -> Alarm:
    """``alarm`` with each run of active bins cut after the first bin of ``ends`` (shape
    (n_bins,)) inside it: a provisional alarm that a later verdict (the night's) replaces."""
    active = alarm.active.copy()
    idx = np.flatnonzero(ends)
    for m in np.flatnonzero(active.any(axis=1)):
        row = active[m]
        starts = np.flatnonzero(row & ~np.r_[False, row[:-1]])
        stops = np.flatnonzero(row & ~np.r_[row[1:], False])
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            i = int(np.searchsorted(idx, a))
            cut = min(int(idx[i]), b) if i < idx.size else b
            row[cut + 1 : b + 1] = False
    return Alarm(alarm.kind, active, alarm.excess, alarm.start_lag)
