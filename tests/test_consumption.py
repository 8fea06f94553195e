"""ConsumptionDeriver: data-driven cases in tests/cases/consumption/<name>/ plus the rules in code.

Each case folder holds ``meterd.toml``, ``input.jsonl`` (``{"meter", "ts" (s), "fields"}`` per line)
and ``expected.jsonl`` (the derived readings in order, ``ts`` in seconds). Pure data, no servers.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from meterd.config import Config, load_config, parse_config
from meterd.normalise.consumption import ConsumptionDeriver, decode_state, state_key
from meterd.normalise.rejects import REJECTS
from meterd.reading import Reading

CASES = Path(__file__).parent / "cases" / "consumption"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
T0 = 1_704_067_200


def _reading(cfg: Config, meter: str, ts_s: float, fields: dict[str, float]) -> Reading:
    m = cfg.meter(meter)
    return Reading(m.kind, m.tags, fields, round(ts_s * 1e9), meter)


def _load_case(name: str) -> tuple[Config, list[Reading], list[dict[str, Any]]]:
    d = CASES / name
    cfg = load_config(d / "meterd.toml")
    lines = (d / "input.jsonl").read_text().splitlines()
    readings = [_reading(cfg, x["meter"], x["ts"], x["fields"]) for x in map(json.loads, lines)]
    expected = [json.loads(line) for line in (d / "expected.jsonl").read_text().splitlines()]
    return cfg, readings, expected


def _as_dict(r: Reading) -> dict[str, Any]:
    return {"measurement": r.measurement, "ts": r.ts_ns / 1e9, "tags": r.tags, "fields": r.fields}


def _water(**extra: Any) -> Config:
    meter = {"id": "w1", "kind": "water", "campus": "north", "mqtt_topic": "m/w1", **extra}
    return parse_config({"mqtt": {}, "meters": [meter]})


def _series(cfg: Config, values: Sequence[tuple[float, float]], meter: str = "w1",
            field: str = "volume_m3") -> list[Reading]:
    return [_reading(cfg, meter, T0 + t, {field: v}) for t, v in values]


def _consumption(out: list[Reading]) -> list[tuple[float, float]]:
    return [(r.ts_ns / 1e9 - T0, r.fields["volume_m3"]) for r in out if r.measurement == "consumption"]


def _events(out: list[Reading]) -> list[str]:
    return [r.tags["type"] for r in out if r.measurement == "meter_events"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case(name: str) -> None:
    cfg, readings, expected = _load_case(name)
    out, _ = ConsumptionDeriver(cfg, {}).derive(readings)
    assert [_as_dict(r) for r in out] == expected
    for r in out:
        assert all(type(v) is float for v in r.fields.values()), r


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_state_round_trip(name: str) -> None:
    """Deriving up to any split, restarting from the committed state, then the rest == all at once."""
    cfg, readings, _ = _load_case(name)
    whole, whole_state = ConsumptionDeriver(cfg, {}).derive(readings)
    for split in range(len(readings) + 1):
        first, state = ConsumptionDeriver(cfg, {}).derive(readings[:split])
        rest, more = ConsumptionDeriver(cfg, state).derive(readings[split:])
        assert first + rest == whole, f"split at {split}"
        assert {**state, **more} == whole_state


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_one_reading_per_batch_equals_one_batch(name: str) -> None:
    cfg, readings, _ = _load_case(name)
    whole, _ = ConsumptionDeriver(cfg, {}).derive(readings)
    d = ConsumptionDeriver(cfg, {})
    assert [r for x in readings for r in d.derive([x])[0]] == whole


@pytest.mark.parametrize("name", CASE_NAMES)
def test_redelivery_after_crash_never_double_counts(name: str) -> None:
    """An unacknowledged batch delivered again after a restart derives no consumption."""
    cfg, readings, _ = _load_case(name)
    _, state = ConsumptionDeriver(cfg, {}).derive(readings)
    again, more = ConsumptionDeriver(cfg, state).derive(readings)
    assert [r for r in again if r.measurement == "consumption"] == []
    assert more == {}


def test_state_is_per_meter_and_field_json() -> None:
    cfg = parse_config({"mqtt": {}, "meters": [
        {"id": "site:h1", "kind": "heat", "mqtt_topic": "m/h1"}]})
    r = _reading(cfg, "site:h1", T0, {"energy_kwh": 5.0, "volume_m3": 2.0, "flow_m3h": 1.0})
    _, state = ConsumptionDeriver(cfg, {}).derive([r])
    assert state == {
        "cons:site:h1:energy_kwh": json.dumps({"v": 5.0, "ts": T0 * 10**9}, separators=(",", ":")),
        "cons:site:h1:volume_m3": json.dumps({"v": 2.0, "ts": T0 * 10**9}, separators=(",", ":")),
    }
    assert state_key("site:h1", "volume_m3") == "cons:site:h1:volume_m3"


def test_pending_jump_survives_restart() -> None:
    cfg = _water(max_rate_per_h=10.0)
    _, state = ConsumptionDeriver(cfg, {}).derive(_series(cfg, [(0, 100.0), (900, 5000.0)]))
    assert decode_state(state["cons:w1:volume_m3"]) == (100.0, T0 * 10**9, 5000.0, (T0 + 900) * 10**9)
    out, _ = ConsumptionDeriver(cfg, state).derive(_series(cfg, [(900, 5000.0), (1800, 5001.0)]))
    # The redelivered spike must not confirm itself; the next consistent reading does.
    assert _consumption(out) == [(1800, 1.0)]


def test_int_values_become_float_points() -> None:
    cfg = _water()
    out, _ = ConsumptionDeriver(cfg, {}).derive(_series(cfg, [(0, 10), (60, 12)]))
    assert out[0].fields == {"volume_m3": 2.0, "interval_s": 60.0}
    assert type(out[0].fields["volume_m3"]) is float


def test_meter_taken_from_tags_when_reading_meter_unset() -> None:
    cfg = _water()
    rs = [Reading("water", {"meter": "w1"}, {"volume_m3": v}, (T0 + t) * 10**9) for t, v in
          [(0, 1.0), (60, 1.5)]]
    out, _ = ConsumptionDeriver(cfg, {}).derive(rs)
    assert _consumption(out) == [(60, 0.5)]


def test_readings_without_cumulative_fields_are_skipped() -> None:
    cfg = _water()
    rs = [_reading(cfg, "w1", T0 + t, {"flow_m3h": 1.0}) for t in (0, 60)]
    assert ConsumptionDeriver(cfg, {}).derive(rs) == ([], {})


def test_unknown_meter_is_a_counted_rejection() -> None:
    cfg = _water()
    before = REJECTS.total("unknown_meter")
    r = Reading("water", {"meter": "ghost"}, {"volume_m3": 1.0}, T0 * 10**9, "ghost")
    assert ConsumptionDeriver(cfg, {}).derive([r]) == ([], {})
    assert REJECTS.total("unknown_meter") == before + 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_invalid_register_value_is_rejected_without_touching_state(bad: float) -> None:
    cfg = _water()
    before = REJECTS.total("invalid_value")
    out, _ = ConsumptionDeriver(cfg, {}).derive(_series(cfg, [(0, 1.0), (60, bad), (120, 2.0)]))
    assert _consumption(out) == [(120, 1.0)]
    assert REJECTS.total("invalid_value") == before + 1


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"v": "x", "ts": 1}', '{"v": 1.0}',
                                  '{"v": 1.0, "ts": 1.5}', '{"v": 1.0, "ts": 1, "pv": 2.0}'])
def test_unreadable_state_is_rejected_and_starts_afresh(text: str) -> None:
    cfg = _water()
    before = REJECTS.total("bad_state")
    d = ConsumptionDeriver(cfg, {"cons:w1:volume_m3": text, "other:key": "not ours"})
    assert REJECTS.total("bad_state") == before + 1
    out, _ = d.derive(_series(cfg, [(0, 7.0), (60, 8.0)]))
    assert _consumption(out) == [(60, 1.0)]  # first reading only set state: nothing invented


def test_implausible_jump_is_counted_in_rejects() -> None:
    cfg = _water(max_rate_per_h=10.0)
    before = REJECTS.total("implausible_jump")
    out, _ = ConsumptionDeriver(cfg, {}).derive(_series(cfg, [(0, 1.0), (60, 900.0)]))
    assert _events(out) == ["implausible_jump"]
    assert REJECTS.total("implausible_jump") == before + 1


def test_drop_far_from_register_max_is_not_a_rollover() -> None:
    cfg = _water(register_max=100_000.0)
    # 99990 -> 20000 would wrap by 30010 (30 % of the range): a backwards step, not a wrap.
    # 50000 -> 10 is far from the top: a replacement, not a wrap.
    out, _ = ConsumptionDeriver(cfg, {}).derive(_series(cfg, [(0, 99_990.0), (60, 20_000.0)]))
    assert (_events(out), _consumption(out)) == (["backwards"], [])
    out, _ = ConsumptionDeriver(cfg, {}).derive(_series(cfg, [(0, 50_000.0), (60, 10.0)]))
    assert (_events(out), _consumption(out)) == (["replacement"], [(60, 10.0)])


def test_rollover_without_register_max_is_a_replacement() -> None:
    cfg = _water()
    out, _ = ConsumptionDeriver(cfg, {}).derive(_series(cfg, [(0, 99_990.0), (60, 5.0)]))
    assert (_events(out), _consumption(out)) == (["replacement"], [(60, 5.0)])


def test_implausible_rollover_waits_for_confirmation() -> None:
    cfg = _water(register_max=1000.0, max_rate_per_h=10.0)
    # Wrapping 995 -> 40 claims 45 m3 in 15 min: implausible; the next reading settles it.
    out, _ = ConsumptionDeriver(cfg, {}).derive(
        _series(cfg, [(0, 995.0), (900, 40.0), (1800, 41.0)]))
    assert _events(out) == ["implausible_jump"]
    assert _consumption(out) == [(1800, 1.0)]


def test_second_spike_replaces_the_first() -> None:
    cfg = _water(max_rate_per_h=10.0)
    out, _ = ConsumptionDeriver(cfg, {}).derive(
        _series(cfg, [(0, 100.0), (900, 5000.0), (1800, 9000.0), (2700, 101.0)]))
    assert _events(out) == ["implausible_jump", "implausible_jump"]
    assert _consumption(out) == [(2700, 1.0)]


def test_random_counter_with_wraps_and_gaps_sums_to_true_use() -> None:
    """Property: a wrapping counter sampled with gaps and duplicates loses and invents nothing."""
    rng = random.Random(7)
    rmax = 10_000.0
    cfg = _water(register_max=rmax, max_rate_per_h=1_000.0)
    total, t, values = 9_000.0, 0, [(0, 9_000.0)]
    for _ in range(2000):
        t += rng.choice([60, 60, 60, 900, 3600])
        total += rng.uniform(0, 10)
        values.append((t, total % rmax))
        if rng.random() < 0.05:
            values.append(values[-1])  # redelivered duplicate
    out, _ = ConsumptionDeriver(cfg, {}).derive(_series(cfg, values))
    used = sum(v for _, v in _consumption(out))
    assert used == pytest.approx(total - 9_000.0, rel=1e-9)
    assert set(_events(out)) == {"rollover"}


def test_restart_through_real_spool_counts_each_interval_once(tmp_path: Path) -> None:
    """Ingest -> SQLite spool, restart, redeliver the unacknowledged backlog: nothing doubles."""
    from meterd.pipeline import Ingest
    from meterd.spool import Spool

    cfg = _water()
    values = [(60 * i, 100.0 + 0.5 * i) for i in range(10)]
    with Spool(tmp_path) as spool:
        Ingest(cfg, spool).submit(_series(cfg, values[:6]))
    with Spool(tmp_path) as spool:  # the process died before the broker saw the acks
        Ingest(cfg, spool).submit(_series(cfg, values[3:]))
        lines = [ln for _, ln in spool.peek(1000)]
    cons = [ln for ln in lines if ln.startswith("consumption,")]
    assert len(cons) == 9
    assert all(" volume_m3=0.5,interval_s=60.0 " in ln for ln in cons)
