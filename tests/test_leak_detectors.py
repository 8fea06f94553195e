"""Unit tests of the pure leak detectors: synthetic flows with known leaks, and causality."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from meterd.analysis.balance import detect_zone_balance, imbalance
from meterd.analysis.bursts import detect_bursts
from meterd.analysis.continuous_flow import detect_continuous_flow, vendor_rule
from meterd.analysis.hourly import Grid, bin_consumption, local_calendar, rolling_mean
from meterd.analysis.incidents import Incident, episodes, merge_overlapping
from meterd.analysis.night_flow import detect_night_flow, leakdb_reference, night_minimum
from meterd.analysis.out_of_hours import detect_out_of_hours, empty_mask
from meterd.analysis.quiet_hours import detect_lost_quiet_hours
from meterd.analysis.reverse_flow import detect_reverse_flow
from meterd.analysis.stopped import detect_stopped
from meterd.leaks.config import LeaksConfig, parse_leaks
from meterd.leaks.engine import MeterInfo, detect

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday
DAYS = 42


def household(n_days: int = DAYS, seed: int = 1) -> np.ndarray:
    """Hourly household-like use: zero at night, random taps by day, a weekday lunch peak."""
    rng = np.random.default_rng(seed)
    hours = np.arange(n_days * 24) % 24
    flow = np.where((hours >= 7) & (hours < 23), rng.exponential(0.02, hours.size), 0.0)
    flow[rng.random(hours.size) < 0.5] = 0.0
    flow[(hours == 12)] += 0.15  # big but normal every day
    return np.round(flow, 3)  # 1-litre resolution


def cal(n: int, step_s: int = 3600, tz: str = "UTC") -> np.ndarray:
    return local_calendar(Grid(T0, n, step_s), tz).hour


def test_bin_consumption_keeps_resolution_and_marks_gaps() -> None:
    grid = Grid(T0, 6)
    ends = np.array([T0 + 3600, T0 + 7200, T0 + 5 * 3600])
    flow = bin_consumption(grid, ends, np.array([0.01, 0.0, 0.3]), np.array([3600, 3600, 3 * 3600]))
    assert flow[0] == pytest.approx(0.01) and flow[1] == 0.0
    assert np.isnan(flow[2:5]).all() and np.isnan(flow[5])  # a 3 h gap is unknown, not spread


def test_a_missed_reading_does_not_pile_two_hours_into_one() -> None:
    grid = Grid(T0, 4)
    ends = T0 + np.array([3600, 3 * 3600, 4 * 3600]) - 5.0  # 5 s early, and 02:00 never came
    flow = bin_consumption(grid, ends, np.array([0.01, 0.02, 0.01]), np.array([3600, 7200, 3600]))
    assert flow[0] == pytest.approx(0.01) and flow[3] == pytest.approx(0.01)
    assert np.isnan(flow[1:3]).all()  # 20 L over two hours: not 20 L/h in one of them


def test_a_long_interval_with_no_use_is_known_to_be_zero() -> None:
    grid = Grid(T0, 5)
    ends = T0 + np.array([3600.0, 4 * 3600, 5 * 3600])
    flow = bin_consumption(grid, ends, np.array([0.01, 0.0, 0.002]), np.array([3600, 3 * 3600, 3600]))
    assert flow.tolist() == pytest.approx([0.01, 0.0, 0.0, 0.0, 0.002])


def test_clock_jitter_below_half_a_step_still_fills_one_bin() -> None:
    grid = Grid(T0, 2)
    flow = bin_consumption(grid, T0 + np.array([3590.0, 7190.0]), np.array([0.01, 0.02]),
                           np.array([3590.0, 3600.0]))
    assert flow.tolist() == pytest.approx([0.01, 0.02])


def test_local_calendar_follows_the_site_zone() -> None:
    hour = local_calendar(Grid(T0, 24), "Asia/Shanghai").hour
    assert hour[0] == 8.0 and hour[18] == 2.0


def test_rolling_mean_is_causal_over_the_last_bins() -> None:
    out = rolling_mean(np.array([[1.0, 2.0, 3.0, 4.0]]), 2)
    assert np.isnan(out[0, 0]) and out[0, 1:].tolist() == [1.5, 2.5, 3.5]


def test_continuous_flow_fires_after_a_day_without_a_quiet_hour() -> None:
    flow = household()[None, :]
    onset = 20 * 24 + 14
    leaky = flow.copy()
    leaky[0, onset:] += 0.004
    assert not detect_continuous_flow(flow, threshold_m3h=0.0015).active.any()
    alarm = detect_continuous_flow(leaky, threshold_m3h=0.0015)
    first = int(np.argmax(alarm.active[0]))
    assert onset < first <= onset + 24
    inc = episodes(alarm, ["m"], Grid(T0, flow.shape[1]))[0]
    assert inc.start <= T0 + onset * 3600 and inc.end is None
    assert inc.rate_m3h == pytest.approx(0.004, abs=1e-3)


def test_continuous_flow_at_15_minute_resolution_needs_a_full_quiet_hour() -> None:
    flow = np.full((1, 4 * 48), 0.01)
    flow[0, 100:103] = 0.0  # three quiet quarters are not a quiet hour
    assert detect_continuous_flow(flow, step_s=900).active[0, -1]
    flow[0, 150:154] = 0.0
    assert not detect_continuous_flow(flow, step_s=900).active[0, -1]


def test_vendor_rule_counts_any_flow_as_use() -> None:
    flow = np.full((1, 48), 0.001)
    assert vendor_rule(flow).active[0, 30]
    assert not detect_continuous_flow(flow, threshold_m3h=0.0015).active.any()


def test_night_flow_flags_a_persistent_rise_and_leaves_it_out_of_the_baseline() -> None:
    n = DAYS * 24
    rng = np.random.default_rng(3)
    flow = (2.0 + 0.05 * rng.standard_normal(n))[None, :]  # a zone that never sleeps
    leak_at = 25 * 24 + 10
    flow[0, leak_at:] += 0.6
    hour = cal(n)
    nights = night_minimum(flow, hour)
    assert nights.mnf.shape[1] == DAYS and (hour[nights.end_bin] == 4).all()
    alarm = detect_night_flow(flow, hour, persist_nights=2)
    first = int(np.argmax(alarm.active[0]))
    assert first == 27 * 24 + 4  # confirmed at the end of the second leaky night
    assert alarm.active[0, first:].all()  # the leak never became the baseline
    assert float(alarm.excess[0, -1]) == pytest.approx(0.6, abs=0.15)


def test_leakdb_reference_flags_a_20_percent_rise() -> None:
    n = DAYS * 24
    flow = np.full((1, n), 1.0)
    flow[0, 20 * 24 :] = 1.3
    alarm = leakdb_reference(flow, cal(n))
    assert int(np.argmax(alarm.active[0])) == 20 * 24 + 4
    assert not leakdb_reference(np.full((1, n), 1.0), cal(n)).active.any()


def test_burst_caught_within_the_hour_but_lunch_peak_is_not_an_alarm() -> None:
    base = household()
    assert not detect_bursts(base[None, :]).active.any()
    for step_s, reps in ((3600, 1), (900, 4)):
        flow = np.repeat(base, reps)[None, :]
        at = (30 * 24 + 15) * reps + 1
        flow[0, at:] += 0.5
        alarm = detect_bursts(flow, step_s=step_s)
        assert int(np.argmax(alarm.active[0])) == at  # detected at the end of the first bin
        assert float(alarm.excess[0, at + 2]) == pytest.approx(0.5, abs=0.1)


def _rising_inflow(days: int, rng: np.random.Generator) -> np.ndarray:
    """Hourly inflow of a district whose demand grows 0.5 % a day (a season), 1 % noise."""
    t = np.arange(days * 24)
    daily = 1 + 0.4 * np.sin(2 * np.pi * (t % 24 - 9) / 24)
    return 1000 * daily * (1 + 0.005 * t / 24) * (1 + 0.01 * rng.standard_normal(t.size))


def test_a_long_burst_closes_at_its_repair_though_the_season_moved_on() -> None:
    """A 40-day burst on a district inflow whose demand grows meanwhile: the baseline stands
    still while the alarm runs, so after the repair the flow stays above it. The alarm closes
    at the repair (the flow falls below the same hour a week before by half the burst), and
    the burst rule, blind while its baseline is learnt again, raises nothing after it."""
    flow = _rising_inflow(100, np.random.default_rng(11))[None, :]
    onset, repair = 30 * 24 + 5, 70 * 24 + 13
    flow[0, onset:repair] += 300.0
    alarm = detect_bursts(flow)
    assert alarm.active[0, onset + 3:repair].all() and not alarm.active[0, :onset].any()
    assert repair <= int(np.flatnonzero(alarm.active[0])[-1]) + 1 <= repair + 2
    assert detect_bursts(flow, repair_share=None).active[0, repair:].all()  # before: never


def test_a_burst_shorter_than_a_week_closes_as_before() -> None:
    """Within its first week an alarm closes only once the flow is back at its baseline."""
    flow = _rising_inflow(60, np.random.default_rng(12))[None, :]
    flow[0, 30 * 24 + 5:33 * 24] += 300.0
    alarm, old = detect_bursts(flow), detect_bursts(flow, repair_share=None)
    assert np.array_equal(alarm.active, old.active) and alarm.active.any()


def test_zone_balance_finds_a_leak_between_meters() -> None:
    n = 20 * 24
    rng = np.random.default_rng(5)
    kids = [1.0 + 0.3 * rng.random(n), 0.5 + 0.2 * rng.random(n)]
    parent = (kids[0] + kids[1]) * 1.01  # parent reads 1 % high: normal, not a leak
    parent[300:] += 0.3
    diff, sigma = imbalance(parent, kids, 0.02, [0.02, 0.02])
    alarm = detect_zone_balance(diff[None, :], sigma[None, :])
    first = int(np.argmax(alarm.active[0]))
    assert alarm.active[0, first:].all() and 300 <= first < 306
    assert not alarm.active[0, :300].any()
    assert float(np.mean(alarm.excess[0, 320:])) == pytest.approx(0.3, abs=0.05)


def test_out_of_hours_use_during_a_break() -> None:
    n = 4 * 24
    grid = Grid(T0, n)
    c = local_calendar(grid, "UTC")
    first_day = int(c.day[0])
    empty = empty_mask(c.hour, c.day, [(first_day + 2, first_day + 3)])
    flow = np.full((1, n), 0.3)
    alarm = detect_out_of_hours(flow, empty, min_hours=3)
    assert alarm.active[0, 2 * 24 + 2] and not alarm.active[0, 12]


def test_stopped_meter_is_data_quality_not_a_leak() -> None:
    n = 4 * 24
    flow = np.full((1, n), 0.1)
    flow[0, 30:] = 0.0
    alarm = detect_stopped(flow, np.full((1, n), 1.0), window_h=24)
    assert int(np.argmax(alarm.active[0])) == 30 + 23
    incs = episodes(alarm, ["m"], Grid(T0, n))
    assert incs[0].type == "stopped_meter" and incs[0].volume_m3 == 0


REVERSE_ON = parse_leaks({"reverse": {"enabled": True}})


def test_reverse_flow_needs_min_h_of_negative_bins_beyond_the_jitter() -> None:
    """Zero-point jitter is not reverse flow, and an unknown bin ends a run: each run must
    show ``min_h`` of its own, and its start is its first negative bin."""
    flow = np.array([[0.1, -0.001, -0.001, -0.2, -0.2, -0.2, np.nan, -0.2, -0.2, 0.1]])
    alarm = detect_reverse_flow(flow, min_h=2)
    np.testing.assert_array_equal(np.flatnonzero(alarm.active[0]), [4, 5, 8])
    assert [int(alarm.start_lag[0, i]) for i in (4, 5, 8)] == [1, 2, 1]
    assert not alarm.excess.any()


def test_reverse_flow_is_one_quality_incident_beside_a_leak_the_rules_still_find() -> None:
    """Backflow every night from day 40, and a leak from day 50 on the same meter: one
    ``reverse_flow`` incident (open, no water lost) that never merges into the leak, and the
    reversed bins are unknown to the leak rules, so nothing is called a leak before day 50."""
    n = 60 * 24
    rng = np.random.default_rng(2)
    hour = np.arange(n) % 24
    flow = (1.0 + 0.5 * ((hour >= 7) & (hour < 22))) * (1 + 0.02 * rng.standard_normal(n))
    flow[50 * 24 + 10 :] += 0.4
    back = (np.arange(n) >= 40 * 24) & (hour >= 2) & (hour < 5)
    flow = np.where(back, -0.3, flow)[None, :]
    grid = Grid(T0, n)
    incs = detect(flow, grid, local_calendar(grid, "UTC"), [MeterInfo("m")], REVERSE_ON)
    rev = [i for i in incs if i.type == "reverse_flow"]
    assert [(i.start, i.detected_at, i.end, i.volume_m3) for i in rev] == [
        (T0 + (40 * 24 + 2) * 3600, T0 + (40 * 24 + 3) * 3600, None, 0.0)]
    leaks = [i for i in incs if i.type != "reverse_flow"]
    assert leaks and all(i.detected_at > T0 + (50 * 24 + 10) * 3600 for i in leaks), leaks
    assert all("reverse_flow" not in i.detectors for i in leaks)


def test_a_sensor_mounted_backwards_is_one_reverse_flow_incident_and_nothing_else() -> None:
    """Every bin negative from installation: the signed night minimum is no use, so the leak
    rules see only unknown bins, and one open ``reverse_flow`` incident says why; with the rule
    off (the default: a looped main may run either way) there is no incident at all."""
    n = 40 * 24
    rng = np.random.default_rng(4)
    hour = np.arange(n) % 24
    use = (0.4 + 0.6 * ((hour >= 7) & (hour < 22))) * (1 + 0.05 * rng.standard_normal(n))
    use[20 * 24 :] *= np.linspace(1.0, 0.6, n - 20 * 24)  # night use falling: a rise, signed
    grid = Grid(T0, n)
    cal = local_calendar(grid, "UTC")
    incs = detect(-use[None, :], grid, cal, [MeterInfo("m")], REVERSE_ON)
    assert [(i.type, i.start, i.end) for i in incs] == [("reverse_flow", T0, None)]
    assert detect(-use[None, :], grid, cal, [MeterInfo("m")], LeaksConfig()) == []
    named = parse_leaks({"reverse": {"enabled": True, "meters": ["other"]}})
    assert detect(-use[None, :], grid, cal, [MeterInfo("m")], named) == []


def test_same_leak_seen_by_two_detectors_is_one_incident() -> None:
    flow = household()[None, :]
    flow[0, 30 * 24 + 3 :] += 0.01
    grid = Grid(T0, flow.shape[1])
    incs = (episodes(detect_continuous_flow(flow, threshold_m3h=0.0015), ["m"], grid)
            + episodes(detect_night_flow(flow, cal(flow.shape[1]), persist_nights=1), ["m"], grid))
    merged = merge_overlapping(incs)
    assert len(incs) == 2 and len(merged) == 1
    assert sorted(merged[0].detectors) == ["continuous_flow", "night_flow"]


def test_a_merged_incident_keeps_the_amounts_of_the_detection_that_saw_most_water() -> None:
    """A short step alarm trips on the noisiest bins, so its rate runs high; the night-flow
    incident it joins has weeks of nights behind its rate. The largest rate used to win, with
    the largest volume from the other detection."""
    night = Incident("m", "night_flow", T0, T0 + 3600, None, 0.029, 20.9, 41.8, ["night_flow"])
    step = Incident("m", "step_change", T0 + 7200, T0 + 9000, T0 + 86400, 0.035, 0.8, 1.6,
                    ["step_change"])
    (merged,) = merge_overlapping([night, step])
    assert (merged.rate_m3h, merged.volume_m3, merged.cost) == (0.029, 20.9, 41.8)
    assert merged.detectors == ["night_flow", "step_change"]
    (bigger_step,) = merge_overlapping([replace(step, volume_m3=30.0), night])
    assert (bigger_step.type, bigger_step.rate_m3h, bigger_step.volume_m3) == (
        "night_flow", 0.035, 30.0)


@pytest.mark.parametrize("cut_day", [26, 31, 37])
def test_detectors_are_causal(cut_day: int) -> None:
    """Results up to t never change when data after t is appended."""
    flow = np.stack([household(seed=s) for s in range(3)])
    flow[0, 24 * 25 + 7 :] += 0.01
    flow[1, 24 * 30 + 11 :] += 0.6
    cut = cut_day * 24 + 5
    hour = cal(flow.shape[1])
    runs = [
        lambda f, h: detect_continuous_flow(f, threshold_m3h=0.0015),
        lambda f, h: detect_night_flow(f, h),
        lambda f, h: leakdb_reference(f, h),
        lambda f, h: detect_bursts(f),
        lambda f, h: detect_lost_quiet_hours(f, h.astype(int), np.arange(h.size) // 24),
        lambda f, h: detect_reverse_flow(-f),
    ]
    for run in runs:
        full, part = run(flow, hour), run(flow[:, :cut], hour[:cut])
        np.testing.assert_array_equal(full.active[:, :cut], part.active)
        np.testing.assert_array_equal(full.excess[:, :cut], part.excess)
        np.testing.assert_array_equal(full.start_lag[:, :cut], part.start_lag)
