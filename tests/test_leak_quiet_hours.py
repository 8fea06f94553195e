"""The lost-quiet-hours detector and the incident off-delay, on synthetic households."""

from __future__ import annotations

import numpy as np

from meterd.analysis.continuous_flow import vendor_rule
from meterd.analysis.hourly import Grid
from meterd.analysis.incidents import Incident, episodes, hold_open
from meterd.analysis.quiet_hours import detect_lost_quiet_hours, quiet_probability

DAYS = 42


def household(seed: int = 3) -> np.ndarray:
    """Still from 23:00 to 07:00, taps in about half of the daytime hours (whole litres)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(DAYS * 24) % 24
    use = np.where((hours >= 7) & (hours < 23), rng.exponential(0.02, hours.size) + 0.002, 0.0)
    use[rng.random(hours.size) < 0.5] = 0.0
    return np.round(use, 3)[None, :]


def run(flow: np.ndarray) -> np.ndarray:
    slot = np.arange(flow.shape[1]) % 24
    return detect_lost_quiet_hours(flow, slot, np.arange(flow.shape[1]) // 24).active[0]


def test_quiet_probability_uses_only_earlier_days() -> None:
    quiet = np.array([[True, False] * 5])  # slot 0 always quiet, slot 1 never
    p, n = quiet_probability(quiet, np.ones_like(quiet), np.array([0, 1] * 5), days=3)
    assert n[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]  # the current day never counts
    assert p[0, 8] == (3 + 1) / (3 + 2) and p[0, 9] == 1 / (3 + 2)


def test_leak_through_the_night_is_reported_before_the_vendor_rule() -> None:
    flow = household()
    onset = 35 * 24 + 15  # 15:00, a busy time of day
    flow[0, onset:] += 0.004
    alarm = run(flow)
    vendor = vendor_rule(flow).active[0]
    first, first_vendor = int(np.argmax(alarm)), int(np.argmax(vendor))
    assert not alarm[:onset].any() and not vendor[:onset].any()
    assert first < first_vendor and first - onset <= 16  # reported by dawn, not 24 h later
    assert alarm[first:].all()  # the leak never stops, so neither does the alarm


def test_a_nightly_appliance_is_learnt_not_alarmed() -> None:
    flow = household()
    hours = np.arange(flow.shape[1]) % 24
    flow[0, (hours >= 1) & (hours < 5)] += 0.02  # a softener regenerating every night
    assert not run(flow)[14 * 24 :].any()


def test_off_delay_joins_a_leak_that_pauses_and_keeps_it_open_until_sure() -> None:
    flow = household()
    flow[0, 30 * 24 + 2 :] += 0.006
    flow[0, 33 * 24 + 3] = 0.0  # one quiet hour: the vendor rule closes and later reopens
    grid = Grid(0, flow.shape[1])
    raw = episodes(vendor_rule(flow), ["m"], grid)
    assert len(raw) == 2
    now = grid.n * 3600
    held = hold_open(raw, 48 * 3600, now)
    assert len(held) == 1 and held[0].end is None
    assert held[0].volume_m3 == round(raw[0].volume_m3 + raw[1].volume_m3, 6)


def test_off_delay_closes_once_the_flow_has_stayed_away() -> None:
    inc = Incident("m", "continuous_flow", 0, 3600, 7200, 0.01, 0.02)
    assert hold_open([inc], 48 * 3600, 7200 + 47 * 3600)[0].end is None
    assert hold_open([inc], 48 * 3600, 7200 + 48 * 3600)[0].end == 7200
