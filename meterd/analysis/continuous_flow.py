"""Continuous-flow ("leak") alarm for meters whose use normally drops to zero.

Domestic and small commercial meters (Kamstrup MULTICAL/flowIQ, Zenner) raise a *leak* info code
when the flow never stops: no period of at least one hour below a low threshold within 24 hours.
Canteens after hours, toilet blocks and dormitory rooms behave like that, so the rule transfers.
"""

from __future__ import annotations

import numpy as np

from meterd.analysis.hourly import BoolArray, FloatArray, last_true, rolling_min
from meterd.analysis.incidents import Alarm


def detect_continuous_flow(
    flow: FloatArray,
    step_s: int = 3600,
    threshold_m3h: float = 0.0,
    window_h: float = 24.0,
    quiet_h: float = 1.0,
    night_end: BoolArray | None = None,
    night_run_h: float = 12.0,
) -> Alarm:
    """Alarm while no quiet period has occurred within the last ``window_h`` hours.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        Mean flow per bin, m³/h, at the resolution the meter reports (NaN = no data).
    step_s : int
        Bin length, s.
    threshold_m3h : float
        A bin is quiet when its flow is at most this. The vendor rule uses zero; a small positive
        value (the smallest leak worth a call-out) ignores meter creep and 1-litre dribbles.
    window_h : float
        The alarm holds when no quiet period ended within this many hours (vendors: 24 h).
    quiet_h : float
        Length of the quiet period that clears the alarm (vendors: 1 h). Rounded to whole bins.
    night_end : array of bool, shape (n_bins,), optional
        Bins that close the site's night window. When given, the alarm also opens at the end of a
        night if flow has not stopped for ``night_run_h`` hours by then: a household or toilet
        block that kept running through the whole night is the strongest evidence, and saying so
        at dawn is earlier than waiting for the full ``window_h``.
    night_run_h : float
        Uninterrupted hours of flow at the end of the night that open the alarm early.

    Returns
    -------
    Alarm
        ``excess`` is the lowest flow seen in the window (the floor under which nothing ever
        fell, i.e. the leak rate); ``start_lag`` points to the first bin after the last quiet
        period. Bins with no data count as quiet, so a gap never raises the alarm by itself.

    References
    ----------
    .. [1] Kamstrup A/S, "flowIQ 2200 technical description", info codes: *Leak* is set when the
       flow has not been below the leak threshold for one continuous hour within 24 hours.
    .. [2] ZENNER International, "Minomess / EDC radio module: leakage alarm" (no zero-flow
       hour within 24 h, configurable).
    """
    win = max(1, round(window_h * 3600 / step_s))
    qlen = max(1, round(quiet_h * 3600 / step_s))
    n = flow.shape[1]
    quiet_bin = ~(flow > threshold_m3h)  # NaN counts as quiet
    # A quiet *period* ends at bin i when the last qlen bins were all quiet.
    # Bins before the start are not quiet: the first period ends at bin qlen - 1 at the earliest.
    period_end = quiet_period_ends(quiet_bin, qlen)
    # Bins since the last quiet period ended (-1: none yet): the onset of the continuous flow.
    idx = np.arange(n, dtype=np.int32)
    last_end = last_true(period_end)
    lag = np.where(last_end >= 0, idx - last_end - 1, idx)
    # No period end within the last ``win`` bins <=> the last one is at least ``win`` bins back.
    no_quiet = lag >= win - 1
    active = no_quiet.copy()
    active[:, : min(win, n) - 1] = False  # not enough history to claim "no quiet hour in 24 h"
    if night_end is not None:
        run_need = max(1, round(night_run_h * 3600 / step_s))
        dawn = night_end[None, :] & (lag + 1 >= run_need) & (last_end >= 0)
        latched = last_true(dawn)
        # Latched at a dawn that lies inside the current run of flow: stays on until flow stops.
        active |= (latched > last_end) & ~period_end
    # float32 rounding is monotone, so the float32 minimum equals the float64 minimum rounded.
    vals = flow.astype(np.float32)
    vals[np.isnan(flow)] = np.inf
    floor = rolling_min(vals, win)
    if night_end is not None:
        # Latched at dawn before a full window: the floor is that of the run so far.
        floor = np.where(no_quiet, floor, rolling_min(vals, run_need))
    excess = np.where(active & np.isfinite(floor), floor, np.float32(0.0))
    return Alarm("continuous_flow", active, excess, lag)


def quiet_period_ends(quiet: BoolArray, qlen: int) -> BoolArray:
    """Bins that end a run of at least ``qlen`` quiet bins (axis 1); none before the first
    ``qlen`` bins, whose past is unknown."""
    return rolling_min(np.ascontiguousarray(quiet).view(np.uint8), qlen, fill=0).view(bool)


def vendor_rule(flow: FloatArray, step_s: int = 3600) -> Alarm:
    """The vendor rule as shipped: zero threshold, one quiet hour in 24 h (the baseline to beat).

    References
    ----------
    .. [1] Kamstrup A/S, "flowIQ 2200 technical description", info code *Leak*.
    """
    alarm = detect_continuous_flow(flow, step_s, threshold_m3h=0.0, window_h=24.0,
                                   quiet_h=1.0 if step_s <= 3600 else step_s / 3600)
    alarm.kind = "vendor_continuous_flow"
    return alarm


__all__ = ["detect_continuous_flow", "quiet_period_ends", "vendor_rule"]
