"""Meters whose use normally stops, learnt from their own data (``normally_zero = "auto"``)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from meterd.analysis.hourly import Grid, local_calendar
from meterd.analysis.zero_use import quiet_day_share
from meterd.config import ConfigError, parse_config
from meterd.leaks.config import LeaksConfig
from meterd.leaks.engine import MeterInfo, detect
from meterd.leaks.io import water_meters
from tests.test_leak_detectors import T0, household

DAYS = 42


def main_flow(n_days: int = DAYS, seed: int = 2) -> np.ndarray:
    """A building main: never below 0.2 m³/h, busier by day."""
    rng = np.random.default_rng(seed)
    hours = np.arange(n_days * 24) % 24
    return np.round(0.2 + 0.3 * ((hours >= 7) & (hours < 22)) + rng.uniform(0, 0.02, hours.size), 3)


def test_household_is_normally_zero_and_a_main_is_not() -> None:
    flow = np.stack([household(), main_flow()])
    day = np.arange(flow.shape[1]) // 24
    share = quiet_day_share(flow, day)
    assert np.isnan(share[:, : 7 * 24]).all()  # fewer than 7 observed days behind it
    assert (share[0, 7 * 24 :] == 1.0).all()
    assert (share[1, 7 * 24 :] == 0.0).all()


def test_share_is_causal_and_counts_only_previous_days() -> None:
    flow = household()[None, :]
    flow[0, 20 * 24 :] += 0.01  # a leak: no quiet hour from day 20
    day = np.arange(flow.shape[1]) // 24
    full = quiet_day_share(flow, day, days=10)
    for cut in (20 * 24 + 3, 25 * 24, 33 * 24 + 17):
        np.testing.assert_array_equal(quiet_day_share(flow[:, :cut], day[:cut], days=10), full[:, :cut])
    assert full[0, 20 * 24 + 23] == 1.0  # the leak's own day is not in its estimate
    assert full[0, 25 * 24] == pytest.approx(0.5)  # 5 leak days of the last 10


def test_missing_data_is_never_quiet() -> None:
    flow = main_flow()[None, :]
    flow[0, 10 * 24 : 12 * 24] = np.nan  # a telemetry gap, not a quiet day
    share = quiet_day_share(flow, np.arange(flow.shape[1]) // 24)
    assert np.nanmax(share) == 0.0
    assert share[0, 15 * 24] == 0.0


def test_quiet_period_at_15_minutes_needs_a_full_hour() -> None:
    flow = np.repeat(main_flow(), 4)[None, :]
    flow[0, 3::96] = 0.0  # one quiet quarter hour a day: not a quiet hour
    day = np.arange(flow.shape[1]) // 96
    assert np.nanmax(quiet_day_share(flow, day, step_s=900)) == 0.0
    flow[0, 4::96] = flow[0, 5::96] = flow[0, 6::96] = 0.0
    assert np.nanmin(quiet_day_share(flow, day, step_s=900)) == 1.0


def _incidents(flow: np.ndarray, zero: bool | None) -> list[tuple[str, str]]:
    grid = Grid(T0, flow.shape[1])
    meters = [MeterInfo(f"m{i}", normally_zero=zero) for i in range(flow.shape[0])]
    incs = detect(flow, grid, local_calendar(grid, "UTC"), meters, LeaksConfig())
    return sorted((i.meter, t) for i in incs for t in i.detectors)


def test_auto_meters_get_the_detectors_their_data_calls_for() -> None:
    flow = np.stack([household(), main_flow()])
    flow[:, 30 * 24 + 14 :] += 0.03  # the same leak on both
    auto = _incidents(flow, None)
    assert ("m0", "continuous_flow") in auto and ("m0", "night_flow") not in auto
    assert ("m1", "night_flow") in auto and ("m1", "continuous_flow") not in auto
    # As if each had been tagged by hand.
    assert [x for x in auto if x[0] == "m0"] == [x for x in _incidents(flow[:1], True)]
    assert [("m1", t) for _, t in _incidents(flow[1:], False)] == [x for x in auto if x[0] == "m1"]


def test_an_untagged_main_raises_no_continuous_flow_alarm() -> None:
    flow = main_flow()[None, :]
    assert _incidents(flow, None) == []
    assert ("m0", "continuous_flow") in _incidents(flow, True)  # what tagging it wrongly would do


def _config(hint: str) -> str:
    return f"""
[mqtt]
url = "mqtt://127.0.0.1:1883"

[[meters]]
id = "w1"
kind = "water"
mqtt_topic = "meters/w1"
{hint}
"""


@pytest.mark.parametrize(("hint", "expected"), [("", None), ('normally_zero = "auto"', None),
                                                ("normally_zero = true", True),
                                                ("normally_zero = false", False)])
def test_normally_zero_defaults_to_auto(hint: str, expected: bool | None) -> None:
    assert water_meters(parse_config(tomllib.loads(_config(hint))))[0].normally_zero is expected


def test_normally_zero_rejects_other_words() -> None:
    with pytest.raises(ConfigError, match="normally_zero"):
        parse_config(tomllib.loads(_config('normally_zero = "sometimes"')))


def test_an_untagged_parent_is_a_main_watched_by_its_zone() -> None:
    kids = np.stack([household(seed=3), household(seed=4)])
    parent = kids.sum(axis=0)  # quiet whenever both households are: every night
    parent[30 * 24 + 14 :] += 0.03  # a pipe leak between the parent and its children
    flow = np.vstack([parent, kids])
    grid = Grid(T0, flow.shape[1])

    def incidents(hint: bool | None) -> set[tuple[str, str]]:
        meters = [MeterInfo("P", normally_zero=hint),
                  *[MeterInfo(f"c{i}", parent="P", normally_zero=None) for i in range(2)]]
        incs = detect(flow, grid, local_calendar(grid, "UTC"), meters, LeaksConfig())
        return {(i.meter, t) for i in incs for t in i.detectors}

    auto = incidents(None)
    assert {m for m, _ in auto} == {"zone:P"}
    assert ("P", "continuous_flow") in incidents(True)  # a hand tag is still obeyed
