"""Stopped meters: a register that does not advance while its zone does (data quality)."""

from __future__ import annotations

import numpy as np

from meterd.analysis.hourly import FloatArray
from meterd.analysis.incidents import Alarm


def detect_stopped(
    flow: FloatArray,
    zone_flow: FloatArray,
    step_s: int = 3600,
    window_h: float = 48.0,
    zone_min_m3: float = 1.0,
) -> Alarm:
    """Alarm when a meter records nothing for ``window_h`` while its zone used ``zone_min_m3``.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        The meters' flow, m³/h (a stuck register reports zero consumption, not NaN).
    zone_flow : array of float, shape (n_meters, n_bins)
        Flow of each meter's zone (its parent, or the sum of its siblings), m³/h.
    step_s : int
        Bin length, s.
    window_h : float
        How long the meter must stand still.
    zone_min_m3 : float
        Zone volume in that window that makes standing still implausible, m³.

    Returns
    -------
    Alarm
        A data-quality alarm, never a leak: ``excess`` is zero.

    References
    ----------
    .. [1] Lambert, A., & Hirner, W. (2000). IWA Blue Pages: apparent losses from customer
       meter inaccuracies (stopped meters) in the water balance.
    """
    win = max(1, round(window_h * 3600 / step_s))
    step_h = step_s / 3600

    def rolling_sum(x: FloatArray) -> FloatArray:
        c = np.cumsum(x, axis=1)
        out = c.copy()
        out[:, win:] -= c[:, :-win]
        out[:, : win - 1] = np.nan
        return out

    # NaN bins count as movement: a meter that is merely offline is not "stopped".
    moved = rolling_sum(np.where(np.isnan(flow), 1.0, flow))
    zone = rolling_sum(np.nan_to_num(zone_flow)) * step_h
    active = (moved == 0) & (zone >= zone_min_m3)
    n = flow.shape
    return Alarm("stopped_meter", active, np.zeros(n, dtype=np.float32),
                 np.full(n, win - 1, dtype=np.int32))
