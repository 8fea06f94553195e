"""Speed-ups must not change results: the optimised detectors against verbatim copies of the
pre-optimisation implementations, on random data with gaps, bursts and leaks."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pytest

from meterd.analysis.bursts import detect_bursts
from meterd.analysis.continuous_flow import detect_continuous_flow
from meterd.analysis.hourly import BoolArray, FloatArray
from meterd.analysis.incidents import Alarm
from meterd.analysis.night_flow import night_ends


def _reference_bursts(
    flow: FloatArray,
    step_s: int = 3600,
    weeks: int = 4,
    min_weeks: int = 2,
    k: float = 1.0,
    h: float = 6.0,
    min_sigma_m3h: float = 0.05,
    min_excess_m3h: float = 0.2,
    scale_alpha: float = 0.02,
    close_bins: int = 2,
    method: Literal["cusum", "ewma"] = "cusum",
    ewma_lambda: float = 0.3,
    ewma_l: float = 3.0,
) -> Alarm:
    """Pre-optimisation detect_bursts (commit 9c48108), kept verbatim."""
    n_m, n = flow.shape
    lag = round(7 * 86400 / step_s)
    clean = np.full((n_m, n), np.nan, dtype=np.float32)
    active = np.zeros((n_m, n), dtype=bool)
    excess = np.zeros((n_m, n), dtype=np.float32)
    start_lag = np.zeros((n_m, n), dtype=np.int32)
    stat = np.zeros(n_m)
    spread = np.full(n_m, np.nan)
    since_zero = np.zeros(n_m, dtype=np.int64)
    calm = np.zeros(n_m, dtype=np.int64)
    on = np.zeros(n_m, dtype=bool)
    ewma_limit = ewma_l * np.sqrt(ewma_lambda / (2 - ewma_lambda))
    lags = [w * lag for w in range(1, weeks + 1)]
    for t in range(n):
        x = flow[:, t]
        past = np.stack([clean[:, t - L] if t >= L else np.full(n_m, np.nan) for L in lags], axis=1)
        enough = np.sum(~np.isnan(past), axis=1) >= min_weeks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            base = np.nanmedian(past, axis=1)
        r = x - base
        sigma = np.maximum(1.25 * np.nan_to_num(spread, nan=min_sigma_m3h), min_sigma_m3h)
        z = np.where(enough & ~np.isnan(r), r / sigma, 0.0)
        if method == "cusum":
            stat = np.maximum(0.0, stat + z - k)
            trip = stat > h
        else:
            stat = ewma_lambda * z + (1 - ewma_lambda) * stat
            trip = stat > ewma_limit
        since_zero = np.where(stat <= 0, 0, since_zero + 1)
        trip &= np.nan_to_num(r) > min_excess_m3h
        calm = np.where(on & (z < k), calm + 1, 0)
        closing = on & (calm >= close_bins)
        stat[closing] = 0.0
        on = (on & ~closing) | trip
        active[:, t] = on
        excess[:, t] = np.where(on, np.nan_to_num(r), 0.0)
        start_lag[:, t] = np.minimum(since_zero, t)
        normal = ~on & ~np.isnan(x)
        # Baseline learns only from normal bins; alarmed ones are replaced by the baseline.
        clean[:, t] = np.where(normal, x, np.where(np.isnan(base), np.nan, base))
        upd = normal & ~np.isnan(r)
        absr = np.abs(np.nan_to_num(r))
        spread = np.where(upd, np.where(np.isnan(spread), absr,
                                        (1 - scale_alpha) * spread + scale_alpha * absr), spread)
    return Alarm("burst", active, excess, start_lag)


def _reference_continuous_flow(
    flow: FloatArray,
    step_s: int = 3600,
    threshold_m3h: float = 0.0,
    window_h: float = 24.0,
    quiet_h: float = 1.0,
    night_end: BoolArray | None = None,
    night_run_h: float = 12.0,
) -> Alarm:
    """Pre-optimisation detect_continuous_flow (commit 9c48108), kept verbatim."""
    win = max(1, round(window_h * 3600 / step_s))
    qlen = max(1, round(quiet_h * 3600 / step_s))
    quiet_bin = ~(flow > threshold_m3h)  # NaN counts as quiet
    # A quiet *period* ends at bin i when the last qlen bins were all quiet.
    qc = np.cumsum(quiet_bin, axis=1)
    period_end = np.zeros_like(quiet_bin)
    period_end[:, qlen - 1 :] = qc[:, qlen - 1 :] - np.pad(qc, ((0, 0), (1, 0)))[:, : -qlen] == qlen
    pc = np.cumsum(period_end, axis=1, dtype=np.int64)
    recent = pc.copy()
    recent[:, win:] -= pc[:, :-win]
    n = flow.shape[1]
    active = recent == 0
    active[:, : min(win, n) - 1] = False  # not enough history to claim "no quiet hour in 24 h"
    # Bins since the last quiet period ended: the estimated onset of the continuous flow.
    idx = np.broadcast_to(np.arange(n), flow.shape)
    last_end = np.maximum.accumulate(np.where(period_end, idx, -1), axis=1)
    lag = np.where(last_end >= 0, idx - last_end - 1, idx)
    if night_end is not None:
        run_need = max(1, round(night_run_h * 3600 / step_s))
        dawn = night_end[None, :] & (lag + 1 >= run_need) & (last_end >= 0)
        latched = np.maximum.accumulate(np.where(dawn, idx, -1), axis=1)
        # Latched at a dawn that lies inside the current run of flow: stays on until flow stops.
        active |= (latched > last_end) & ~period_end
    vals = np.where(np.isnan(flow), np.inf, flow)
    floor = _reference_rolling_min(vals, win)
    if night_end is not None:
        # Latched at dawn before a full window: the floor is that of the run so far.
        floor = np.where(recent == 0, floor, _reference_rolling_min(vals, run_need))
    excess = np.where(active, np.where(np.isfinite(floor), floor, 0.0), 0.0)
    return Alarm("continuous_flow", active, excess.astype(np.float32), lag.astype(np.int32))


def _reference_rolling_min(x: FloatArray, width: int) -> FloatArray:
    """Causal rolling minimum over the last ``width`` bins (log-doubling, O(n log width))."""
    out = x.copy()
    span = 1
    while span < width:
        step = min(span, width - span)
        shifted = np.full_like(out, np.inf)
        shifted[:, step:] = out[:, :-step]
        np.minimum(out, shifted, out=out)
        span += step
    return out


def _random_flow(seed: int, n_m: int, days: int, step_s: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    per_day = 86400 // step_s
    n = days * per_day
    hour = (np.arange(n) * step_s // 3600) % 24
    day_use = ((hour >= 7) & (hour < 22)).astype(float)
    flow = day_use[None, :] * rng.exponential(rng.uniform(0.02, 0.5, (n_m, 1)), (n_m, n))
    flow[rng.random(flow.shape) < 0.4] = 0.0
    flow[rng.random(flow.shape) < 0.03] = np.nan  # gaps
    for m in range(n_m):
        a = int(rng.integers(0, n))
        if m % 3 == 0:
            flow[m, a : a + int(rng.integers(1, 48))] += rng.uniform(0.2, 3.0)  # burst
        elif m % 3 == 1:
            flow[m, a:] += rng.uniform(0.001, 0.05)  # continuous leak
    flow[n_m // 2, :] = np.nan  # a meter with no data at all
    return flow


def _assert_same(new: Alarm, old: Alarm) -> None:
    assert new.kind == old.kind
    for name in ("active", "excess", "start_lag"):
        a, b = getattr(new, name), getattr(old, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("step_s", [3600, 900])
@pytest.mark.parametrize("method", ["cusum", "ewma"])
def test_bursts_unchanged_by_optimisation(seed: int, step_s: int, method: str) -> None:
    days = 45 if step_s == 3600 else 25
    flow = _random_flow(seed, 60, days, step_s)
    for kw in ({}, {"h": 14.0, "min_excess_m3h": 0.29}, {"weeks": 3, "min_weeks": 1, "k": 0.5,
                                                       "close_bins": 1}):
        # The reference predates the repair close (session 12), a change of behaviour.
        new = detect_bursts(flow, step_s=step_s, method=method, repair_share=None,
                            **kw)  # type: ignore[arg-type]
        old = _reference_bursts(flow, step_s=step_s, method=method, **kw)  # type: ignore[arg-type]
        assert old.active.any()
        _assert_same(new, old)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("step_s", [3600, 900])
def test_continuous_flow_unchanged_by_optimisation(seed: int, step_s: int) -> None:
    flow = _random_flow(seed, 60, 20, step_s)
    hour = (np.arange(flow.shape[1]) * step_s / 3600) % 24
    dawn = night_ends(hour, step_s)
    for kw in ({}, {"threshold_m3h": 0.0015}, {"threshold_m3h": 0.0015, "night_end": dawn},
               {"threshold_m3h": 0.01, "window_h": 5.0, "quiet_h": 2.0, "night_end": dawn,
                "night_run_h": 3.0}):
        new = detect_continuous_flow(flow, step_s, **kw)  # type: ignore[arg-type]
        old = _reference_continuous_flow(flow, step_s, **kw)  # type: ignore[arg-type]
        assert old.active.any()
        _assert_same(new, old)
