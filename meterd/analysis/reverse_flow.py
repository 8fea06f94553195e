"""Reverse flow: water running back through a meter (data quality, and a backflow warning)."""

from __future__ import annotations

import numpy as np

from meterd.analysis.hourly import FloatArray, last_true
from meterd.analysis.incidents import Alarm


def detect_reverse_flow(
    flow: FloatArray,
    step_s: int = 3600,
    min_h: float = 1.0,
    tolerance_m3h: float = 0.0015,
) -> Alarm:
    """Alarm while a meter's mean flow has stayed below ``-tolerance_m3h`` for ``min_h``.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        The meters' signed mean flow per bin, m³/h (a flow sensor's ``flow_m3h``); NaN unknown.
    step_s : int
        Bin length, s.
    min_h : float
        How long the flow must have run backwards, h (at least one bin).
    tolerance_m3h : float
        Zero-point jitter of the sensor: a bin mean above ``-tolerance_m3h`` is not reverse flow.

    Returns
    -------
    Alarm
        ``reverse_flow``, a data-quality incident, never a leak: ``excess`` is zero, since water
        that runs back is not lost, and the leak rules never see a negative bin (the engine makes
        it unknown). An unknown bin ends a run: nothing says the water still runs backwards.

    Notes
    -----
    A use meter never runs backwards in normal service. A run of negative bins means the sensor
    is mounted against the flow (every bin negative from installation), or backflow: pressure
    on the customer side above the main's, which can draw water of unknown quality into the
    supply (EN 1717). Meter vendors raise the same condition as an info code (Kamstrup's
    "reverse flow", Diehl's "backflow").

    References
    ----------
    .. [1] EN 1717:2000, "Protection against pollution of potable water in water installations
       and general requirements of devices to prevent pollution by backflow".
    .. [2] Kamstrup A/S, flowIQ 2200 technical description: info codes (reverse flow).
    """
    need = max(1, round(min_h * 3600 / step_s))
    back = np.nan_to_num(flow, nan=0.0) < -tolerance_m3h
    run = np.where(back, np.arange(flow.shape[1]) - last_true(~back), 0)  # negative bins in a row
    n = flow.shape
    return Alarm("reverse_flow", run >= need, np.zeros(n, dtype=np.float32),
                 np.maximum(run - 1, 0).astype(np.int32))
