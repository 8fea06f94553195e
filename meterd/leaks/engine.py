"""Run every configured leak detector over one flow grid and return merged incidents.

The replay CLI, the scheduled job and the evaluation harness all call :func:`detect`, so what the
harness measures is what the daemon does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from meterd.analysis.balance import detect_zone_balance, imbalance
from meterd.analysis.bursts import detect_bursts
from meterd.analysis.continuous_flow import detect_continuous_flow
from meterd.analysis.hourly import BoolArray, FloatArray, Grid, LocalCalendar
from meterd.analysis.incidents import (
    Alarm,
    Incident,
    episodes,
    hold_open,
    merge_overlapping,
    until_first,
)
from meterd.analysis.night_flow import day_classes, detect_night_flow, night_ends
from meterd.analysis.out_of_hours import detect_out_of_hours, empty_mask
from meterd.analysis.quiet_hours import detect_lost_quiet_hours
from meterd.analysis.reverse_flow import detect_reverse_flow
from meterd.analysis.stopped import detect_stopped
from meterd.analysis.zero_use import quiet_day_share, steady_flow
from meterd.leaks.config import BalanceSettings, LeaksConfig


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What the detectors need to know about one water meter (from ``[[meters]]``).

    ``normally_zero`` None: learn it from the meter's own data (:func:`quiet_day_share`).
    """

    id: str
    building: str = ""
    parent: str | None = None
    normally_zero: bool | None = False
    accuracy: float = 0.02


def detect(
    flow: FloatArray,
    grid: Grid,
    cal: LocalCalendar,
    meters: Sequence[MeterInfo],
    settings: LeaksConfig,
    breaks: Sequence[tuple[int, int]] = (),
    price_per_m3: float = 0.0,
) -> list[Incident]:
    """All incidents over ``grid`` for ``meters`` (rows of ``flow``), one per leak."""
    found: list[Incident] = []
    back = flow < 0
    if back.any():
        found = _reverse(flow, grid, [m.id for m in meters], settings)
        flow = np.where(back, np.nan, flow)  # the leak rules judge use, never negative
    scan = _Scan(flow, grid, cal, meters, settings, tuple(breaks), price_per_m3)
    # With zone balance on, a parent's night flow is judged on its zone's imbalance (_zones).
    zones = {m.parent for m in meters if m.parent is not None}
    share = _quiet_share(flow, cal, grid.step_s, meters, zones, settings)
    zero, flowing = _zero_masks(share, meters, zones, settings)
    found += _night_rule(scan, zones, flowing)
    found += _continuous_rules(scan, zero)
    found += _burst_rules(scan, share)
    found += _zones(scan)
    found += _out_of_hours(scan)
    return hold_open(merge_overlapping(found), round(settings.close_after_h * 3600),
                     grid.t0_s + grid.n * grid.step_s)


@dataclass(frozen=True, slots=True)
class _Scan:
    """One run's inputs, shared by the families of rules."""

    flow: FloatArray
    grid: Grid
    cal: LocalCalendar
    meters: Sequence[MeterInfo]
    settings: LeaksConfig
    breaks: tuple[tuple[int, int], ...]
    price_per_m3: float

    def incidents(self, rows: Sequence[int], alarm: Alarm,
                  labels: list[str] | None = None) -> list[Incident]:
        """``alarm`` over ``rows`` as priced incidents, labelled by meter id or ``labels``."""
        return episodes(alarm, labels or [self.meters[i].id for i in rows], self.grid,
                        self.price_per_m3, self.settings.min_rate_m3h)


def _night_rule(scan: _Scan, zones: set[str], flowing: BoolArray) -> list[Incident]:
    """``[leaks.night]`` on every meter that is not normally zero, and not a zone parent whose
    zone balance judges its night instead."""
    s, s_n = scan.settings, scan.settings.night
    # Rules run only on the meters they may report: their alarms are masked to the bins where
    # the meter is of their family, and each meter's state is its own.
    rows = [i for i, m in enumerate(scan.meters)
            if (s_n.normally_zero_meters or m.normally_zero is not True)
            and not (s.balance.enabled and m.id in zones)
            and (s_n.normally_zero_meters or flowing[i].any())]
    if not s_n.enabled or not rows:
        return []
    alarm = _night_flow(scan.flow[rows], scan.grid, scan.cal, s, scan.breaks,
                        s_n.allowance_m3h, s_n.allowance_rel, demand=True)
    # Otherwise a parent's night flow is still its zone's: report it as the zone.
    ids = [scan.meters[i].id for i in rows]
    return scan.incidents(rows, alarm if s_n.normally_zero_meters else _only(alarm, flowing[rows]),
                          [f"zone:{m}" if m in zones else m for m in ids])


def _continuous_rules(scan: _Scan, zero: BoolArray) -> list[Incident]:
    """``[leaks.continuous]`` and its early rule, lost quiet hours, on normally-zero meters."""
    s_n, s_c, step = scan.settings.night, scan.settings.continuous, scan.grid.step_s
    rows = [i for i, m in enumerate(scan.meters)
            if s_c.all_meters or (m.normally_zero is not False and zero[i].any())]
    if not s_c.enabled or not rows:
        return []
    dawn = None if s_c.night_run_h is None else night_ends(scan.cal.hour, step,
                                                            (s_n.start_h, s_n.end_h))
    where = None if s_c.all_meters else zero[rows]
    flow = scan.flow[rows]
    out = scan.incidents(rows, _only(detect_continuous_flow(
        flow, step, s_c.threshold_m3h, s_c.window_h, s_c.quiet_h, dawn, s_c.night_run_h or 0.0),
        where))
    if s_c.early:
        slot = (scan.cal.hour * 3600 // step).astype(np.int64)
        out += scan.incidents(rows, _only(detect_lost_quiet_hours(
            flow, slot, scan.cal.day, step, s_c.threshold_m3h, s_c.early_days,
            s_c.early_min_days, s_c.early_evidence, s_c.early_margin), where))
    return out


def _burst_rules(scan: _Scan, share: FloatArray) -> list[Incident]:
    """``[leaks.bursts]`` on every meter, and ``[leaks.steps]`` on those that never stop."""
    s_b, step = scan.settings.bursts, scan.grid.step_s
    out: list[Incident] = []
    if s_b.enabled and scan.meters:
        out += scan.incidents(range(len(scan.meters)), detect_bursts(
            scan.flow, step, s_b.weeks, s_b.min_weeks, s_b.k, s_b.h, s_b.min_sigma_m3h,
            s_b.min_excess_m3h, close_bins=s_b.close_bins, method=s_b.method))
    if scan.settings.steps.enabled and scan.meters:  # share NaN, not known yet, is not 0
        out += scan.incidents(*_steps(scan.flow, share == 0.0, scan.cal, scan.settings, step))
    return out


def _out_of_hours(scan: _Scan) -> list[Incident]:
    """``[leaks.out_of_hours]``: use in the named buildings while they should be empty."""
    s_o = scan.settings.out_of_hours
    rows = [i for i, m in enumerate(scan.meters)
            if not s_o.buildings or m.building in s_o.buildings]
    if not s_o.enabled or not rows:
        return []
    cal = scan.cal
    empty = empty_mask(cal.hour, cal.day, list(scan.breaks), (s_o.night_start_h, s_o.night_end_h))
    return scan.incidents(rows, detect_out_of_hours(scan.flow[rows], empty, scan.grid.step_s,
                                                    s_o.allowance_m3h, s_o.min_hours))


def _reverse(flow: FloatArray, grid: Grid, ids: list[str], settings: LeaksConfig
             ) -> list[Incident]:
    """``[leaks.reverse]`` on the meters it names (empty: all)."""
    s_r = settings.reverse
    rows = [i for i, m in enumerate(ids) if s_r.enabled and (not s_r.meters or m in s_r.meters)]
    if not rows:
        return []
    alarm = detect_reverse_flow(flow[rows], grid.step_s, s_r.min_h, s_r.tolerance_m3h)
    return episodes(alarm, [ids[i] for i in rows], grid)


def _quiet_share(flow: FloatArray, cal: LocalCalendar, step_s: int,
                 meters: Sequence[MeterInfo], parents: set[str], settings: LeaksConfig
                 ) -> FloatArray:
    """:func:`quiet_day_share` of the meters that need it (NaN for the rest): ``"auto"`` ones
    (:func:`_zero_masks`) and, with ``[leaks.steps]`` on, every meter (:func:`_steps`)."""
    s_c = settings.continuous
    rows = [i for i, m in enumerate(meters) if settings.steps.enabled
            or (m.normally_zero is None and m.id not in parents)]
    share = np.full(flow.shape, np.nan)
    if rows:
        share[rows] = quiet_day_share(flow[rows], cal.day, step_s, s_c.threshold_m3h,
                                      s_c.quiet_h, settings.zero_days, settings.zero_min_days)
    return share


def _zero_masks(share: FloatArray, meters: Sequence[MeterInfo], parents: set[str],
                settings: LeaksConfig) -> tuple[BoolArray, BoolArray]:
    """Per meter and bin: whether it is a normally-zero meter then, and whether it is one with a
    night flow. Tagged meters are what they are told; ``normally_zero = "auto"`` ones are what
    their last ``zero_days`` say (``share``, :func:`quiet_day_share`), and neither while that
    is not yet known. An untagged parent is a main: its quiet hours are only its children's
    coinciding, and its zone balance watches it.
    """
    told = np.array([bool(m.normally_zero) for m in meters], dtype=bool)
    zero = np.repeat(told[:, None], share.shape[1], axis=1)
    flowing = ~zero
    auto = [i for i, m in enumerate(meters) if m.normally_zero is None and m.id not in parents]
    zero[auto] = share[auto] >= settings.zero_share
    flowing[auto] = share[auto] < settings.zero_share
    return zero, flowing


def _steps(flow: FloatArray, never_quiet: BoolArray, cal: LocalCalendar, settings: LeaksConfig,
           step_s: int) -> tuple[list[int], Alarm]:
    """``[leaks.steps]`` while a meter's flow has not stopped on any recent day and is steady."""
    s_b, s_s = settings.bursts, settings.steps
    night = (settings.night.start_h, settings.night.end_h)
    rows = [i for i in range(flow.shape[0]) if never_quiet[i].any()]
    where = never_quiet[rows] & steady_flow(flow[rows], step_s, s_s.steady, s_s.steady_min_m3h)
    keep = np.asarray(where.any(axis=1), dtype=bool)  # a trickling household: skip its CUSUM
    rows, where = [r for r, k in zip(rows, keep.tolist(), strict=True) if k], where[keep]
    alarm = detect_bursts(flow[rows], step_s, s_b.weeks, s_b.min_weeks, s_b.k, s_s.h,
                          s_s.min_sigma_m3h, 0.0, close_bins=s_b.close_bins, method=s_b.method,
                          rel_sigma=s_s.rel_sigma, rel_excess=s_s.rel_excess,
                          persist_bins=max(1, round(s_s.persist_h * 3600 / step_s)),
                          kind="step_change", **_spread_by_hour(s_s.spread_days, step_s))
    # Provisional: the night that follows decides. Held on, a step alarm on a rise in
    # legitimate use would never close, as alarmed bins never enter the hour-of-week baseline.
    return rows, until_first(_only(alarm, where), night_ends(cal.hour, step_s, night))


class _SpreadArgs(TypedDict, total=False):
    spread_slots: int
    scale_alpha: float


def _spread_by_hour(days: float | None, step_s: int) -> _SpreadArgs:
    """``detect_bursts`` keywords for one spread per bin of the day (``steps.spread_days``)."""
    return {} if days is None else {"spread_slots": 86400 // step_s, "scale_alpha": 1 / days}


def _only(alarm: Alarm, where: BoolArray | None) -> Alarm:
    """``alarm`` with its active bins restricted to ``where`` (None: unchanged)."""
    if where is None:
        return alarm
    return Alarm(alarm.kind, alarm.active & where, alarm.excess, alarm.start_lag)


def _night_flow(flow: FloatArray, grid: Grid, cal: LocalCalendar, settings: LeaksConfig,
                breaks: Sequence[tuple[int, int]], allowance_m3h: float | FloatArray,
                allowance_rel: float, demand: bool = False) -> Alarm:
    """``[leaks.night]`` on meters or zone imbalances; the allowance differs between them, and
    day scaling and the weekday profile apply only to ``demand`` (a meter's own flow): an
    imbalance has no day use or week of its own."""
    s_n = settings.night
    kinds = day_classes(cal.weekday, cal.day, list(breaks)) if s_n.day_types else None
    return detect_night_flow(
        flow, cal.hour, grid.step_s, (s_n.start_h, s_n.end_h), s_n.window_days, s_n.min_history,
        allowance_m3h, allowance_rel, s_n.k_mad, s_n.persist_nights, s_n.strong_factor, s_n.early,
        kinds, s_n.learn_margin, None if s_n.cusum_h is None else (s_n.cusum_k, s_n.cusum_h),
        s_n.spread_days, s_n.scaling_days if demand and s_n.day_scaling else None,
        cal.weekday if demand and s_n.weekday_profile else None, s_n.mad_efficiency)


def _rounding_allowance(s_z: BalanceSettings, n_children: list[int]) -> FloatArray:
    """Night allowance per zone: at least three standard deviations of the rounding noise of an
    hourly imbalance, each of the n + 1 meters adding a register-step difference of variance
    step²/6 (two independent uniform roundings)."""
    noise = s_z.resolution_m3 * np.sqrt((np.asarray(n_children) + 1) / 6.0)
    return np.maximum(s_z.night_allowance_m3h, 3.0 * noise)


def _zones(scan: _Scan) -> list[Incident]:
    """Zone balance and the zone's night imbalance per parent with children, and stopped
    children while their parent flows."""
    flow, grid, cal, meters, settings = scan.flow, scan.grid, scan.cal, scan.meters, scan.settings
    price_per_m3, breaks = scan.price_per_m3, scan.breaks
    index = {m.id: i for i, m in enumerate(meters)}
    kids: dict[str, list[int]] = {}
    for i, m in enumerate(meters):
        if m.parent is not None and m.parent in index:
            kids.setdefault(m.parent, []).append(i)
    if not kids:
        return []
    out: list[Incident] = []
    parents = sorted(kids)
    s_z = settings.balance
    if s_z.enabled:
        pairs = [imbalance(flow[index[p]], [flow[c] for c in kids[p]], meters[index[p]].accuracy,
                           [meters[c].accuracy for c in kids[p]], s_z.min_sigma_m3h)
                 for p in parents]
        diff = np.stack([d for d, _ in pairs])
        sigma = np.stack([s for _, s in pairs])
        alarm = detect_zone_balance(diff, sigma, grid.step_s, s_z.k, s_z.h, s_z.baseline_days)
        out.extend(episodes(alarm, [f"zone:{p}" for p in parents], grid, price_per_m3,
                            settings.min_rate_m3h))
        s_n = settings.night
        if s_n.enabled:
            # The imbalance's normal level is the meters' calibration, near zero: no relative
            # allowance; its spread (k_mad) and the fixed allowance cover resolution.
            alarm = _night_flow(diff, grid, cal, settings, breaks,
                                _rounding_allowance(s_z, [len(kids[p]) for p in parents]), 0.0)
            out.extend(episodes(alarm, [f"zone:{p}" for p in parents], grid, price_per_m3,
                                settings.min_rate_m3h))
    s_s = settings.stopped
    rows = [c for p in parents for c in kids[p]]
    if s_s.enabled:
        zone = np.stack([flow[index[meters[c].parent or ""]] for c in rows])
        alarm = detect_stopped(flow[rows], zone, grid.step_s, s_s.window_h, s_s.zone_min_m3)
        out.extend(episodes(alarm, [meters[c].id for c in rows], grid))
    return out
