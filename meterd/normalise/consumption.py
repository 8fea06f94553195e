"""Derive per-interval consumption from cumulative meter registers.

Method
------
A cumulative register (``energy_kwh``, ``energy_export_kwh``, ``volume_m3``) only counts up, so the
consumption over an interval is the difference of two successive readings, stamped at the END of the
interval (the later reading's time), with ``interval_s`` the seconds between them. This is the
counter-difference of Telegraf's ``derivative`` processor and Prometheus ``increase()``, but unlike
Prometheus a decrease is not blindly taken as a reset: metering registers have three distinct
causes for a decrease, which IEC 62056 / DLMS-COSEM register handling distinguishes (the register's
modulus, ``register_max``, is a property of the meter, and an exchange is a metering event):

=========================  =====================================================  ==================
case (per meter, field)    rule                                                   output
=========================  =====================================================  ==================
first reading              no previous value                                      state only
duplicate / out of order   ``ts <= last ts`` (e.g. a redelivered MQTT backlog)    nothing at all
normal                     ``v >= last``                                          ``v - last``
rollover                   ``v < last`` and ``register_max - last + v`` is under  wrapped delta,
                           ``ROLLOVER_WINDOW * register_max``                     ``rollover`` event
replacement                ``v < last`` and ``v <= REPLACEMENT_FRACTION * last``  ``v``,
                           (the new meter's register restarts near zero)          ``replacement``
backwards                  any other decrease                                     ``backwards`` event
implausible jump           the delta above exceeds ``max_rate_per_h`` (when set)  event, reject
=========================  =====================================================  ==================

A data gap needs no special case: the next reading's delta covers it, so the gap becomes ONE point
with a long ``interval_s`` -- nothing is lost and nothing is invented.

Garbage is kept from corrupting later deltas by never moving the reference value on a suspect
reading:

* ``backwards``: the reference stays at the old (higher) value, so a glitch that dips and recovers
  counts nothing twice; counting resumes once the register passes the old value again.
* ``implausible_jump``: the reference stays; the jumped-to value is remembered as *pending*. The
  next reading decides. If it is plausible against the old reference, the spike was garbage: one
  point covers the whole span from the old reference and the pending value is dropped. Otherwise, if
  it is plausible against the pending value (not lower, rate within ``max_rate_per_h``), the new
  level is confirmed: the reference moves to it and only the consumption since the pending reading
  is counted; the jump itself is never counted, as it cannot be told apart from a re-programmed
  register. Otherwise the new reading becomes the pending value (another ``implausible_jump``).

Exactly-once: every state change is returned as ``cons:<meter>:<field>`` -> JSON updates that the
caller commits in the same SQLite transaction as the derived points (``Spool.append(lines,
state)``). Redelivered readings have ``ts <= last ts`` and derive nothing, so a crash between
receiving and acknowledging a message never double-counts; if the commit fails, rebuild the deriver
from ``spool.load_state()`` (the deriver has moved on in memory). Events are stamped with the reading's
time, so a re-derived event overwrites itself in InfluxDB instead of duplicating.

Meter events carry a ``field`` tag besides the schema's ``meter, campus, building, kind, type``:
a heat meter has two registers and both can roll over at the same instant. A consumption point's
``interval_s`` is the longest interval among its fields; in the rare case a field's own interval is
shorter (its previous reading was held back, or lacked the other field), the point also carries
``<field>_interval_s``.

References
----------
.. [1] IEC 62056-6-2 (DLMS/COSEM interface classes), class "Register": value, scaler and the
   register's modulus; meter exchange handled as an event, not as consumption.
.. [2] Telegraf ``derivative`` processor and Prometheus ``increase()``: per-interval difference of a
   counter with counter-reset handling, https://prometheus.io/docs/prometheus/latest/querying/functions/
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from meterd.config import Config, MeterConfig
from meterd.fields import CONSUMPTION_MEASUREMENT, CUMULATIVE
from meterd.normalise.rejects import REJECTS
from meterd.reading import Reading

EVENTS_MEASUREMENT: Final = "meter_events"
STATE_PREFIX: Final = "cons:"
REJECT_SOURCE: Final = "derive"

# A wrap is only believed when the wrapped delta is a small part of the register's range.
ROLLOVER_WINDOW: Final = 0.1
# A new meter starts near zero; a drop to more than this share of the old value is not an exchange.
REPLACEMENT_FRACTION: Final = 0.1

_FIELD_ORDER: Final = tuple(sorted(CUMULATIVE))
_NS_PER_H: Final = 3.6e12

# (last value, last ts_ns, pending value or None, pending ts_ns or None)
_State = tuple[float, int, float | None, int | None]


@dataclass(frozen=True, slots=True)
class _Meter:
    id: str
    register_max: float | None
    max_rate_per_h: float | None
    consumption_tags: dict[str, str]
    event_tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Step:
    """What one reading of one field did: the new state (None: unchanged), delta, event."""

    state: _State | None = None
    delta: float | None = None
    interval_ns: int = 0
    event: str | None = None
    before: float = 0.0


_UNCHANGED: Final = _Step()


def state_key(meter_id: str, field: str) -> str:
    """The spool state key holding the last accepted value of ``field`` for ``meter_id``."""
    return f"{STATE_PREFIX}{meter_id}:{field}"


def encode_state(st: _State) -> str:
    v, ts, pv, pts = st
    doc: dict[str, float | int] = {"v": v, "ts": ts}
    if pv is not None and pts is not None:
        doc["pv"], doc["pts"] = pv, pts
    return json.dumps(doc, separators=(",", ":"))


def decode_state(text: str) -> _State:
    """Parse one state value; raise :class:`ValueError` naming what is wrong."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {text[:80]!r}")
    v, ts = _number(doc, "v"), _integer(doc, "ts")
    if "pv" in doc:
        return v, ts, _number(doc, "pv"), _integer(doc, "pts")
    return v, ts, None, None


def _number(doc: dict[str, object], key: str) -> float:
    x = doc.get(key)
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError(f"{key!r} must be a finite number, got {x!r}")
    return float(x)


def _integer(doc: dict[str, object], key: str) -> int:
    x = doc.get(key)
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"{key!r} must be an integer of nanoseconds, got {x!r}")
    return x


def _meter(m: MeterConfig) -> _Meter:
    tags = m.tags
    cons = {**tags, "kind": m.kind}
    events = {k: v for k, v in cons.items() if k != "canteen"}
    return _Meter(m.id, m.register_max, m.max_rate_per_h, cons, events)


class ConsumptionDeriver:
    """Turn readings of cumulative registers into ``consumption`` and ``meter_events`` readings.

    Parameters
    ----------
    cfg : Config
        Supplies each meter's tags, kind, ``register_max`` and ``max_rate_per_h``.
    state : Mapping[str, str]
        The spool's state table (``spool.load_state()``); keys not starting with ``cons:`` are
        ignored, unreadable ``cons:`` values are rejected (reason ``bad_state``) and start afresh.

    Not thread-safe: the ingest stage calls :meth:`derive` under its lock. See the module docstring
    for the method and its references.
    """

    def __init__(self, cfg: Config, state: Mapping[str, str]) -> None:
        self._meters = {m.id: _meter(m) for m in cfg.meters}
        self._state: dict[str, _State] = {}
        for key, text in state.items():
            if not key.startswith(STATE_PREFIX):
                continue
            try:
                self._state[key] = decode_state(text)
            except ValueError as exc:
                REJECTS.reject(REJECT_SOURCE, "bad_state", f"{key}: {exc}; starting afresh")

    def derive(self, readings: Sequence[Reading]) -> tuple[list[Reading], dict[str, str]]:
        """Derive consumption and events from ``readings`` (processed in the given order).

        Parameters
        ----------
        readings : Sequence[Reading]
            Validated readings; those without cumulative fields are skipped.

        Returns
        -------
        derived : list[Reading]
            ``consumption`` points (per-interval deltas plus ``interval_s``, at the interval's end)
            and ``meter_events`` points, in input order.
        state : dict[str, str]
            The changed ``cons:<meter>:<field>`` entries, to commit with the points.
        """
        out: list[Reading] = []
        changed: dict[str, _State] = {}
        for r in readings:
            fields = r.fields
            if not any(f in fields for f in _FIELD_ORDER):
                continue
            meter_id = r.meter or r.tags.get("meter", "")
            m = self._meters.get(meter_id)
            if m is None:
                REJECTS.reject(REJECT_SOURCE, "unknown_meter", f"meter {meter_id!r} is not configured")
                continue
            self._derive_one(m, r, out, changed)
        return out, {k: encode_state(st) for k, st in changed.items()}

    def _derive_one(self, m: _Meter, r: Reading, out: list[Reading],
                    changed: dict[str, _State]) -> None:
        deltas: dict[str, float] = {}
        intervals: dict[str, int] = {}
        ts = r.ts_ns
        for f in _FIELD_ORDER:
            v = r.fields.get(f)
            if v is None:
                continue
            if not (0.0 <= v < math.inf):  # also false for NaN
                REJECTS.reject(REJECT_SOURCE, "invalid_value", f"{m.id} {f}={v!r}")
                continue
            v = float(v)  # an int slipping through would become an integer field in InfluxDB
            key = state_key(m.id, f)
            step = self._step(m, f, self._state.get(key), v, ts)
            if step.state is not None:
                self._state[key] = changed[key] = step.state
            if step.delta is not None:
                deltas[f] = step.delta
                intervals[f] = step.interval_ns
            if step.event is not None:
                tags = {**m.event_tags, "type": step.event, "field": f}
                out.append(Reading(EVENTS_MEASUREMENT, tags, {"before": step.before, "after": v},
                                   ts, m.id))
        if deltas:
            out.append(Reading(CONSUMPTION_MEASUREMENT, dict(m.consumption_tags),
                               _consumption_fields(deltas, intervals), ts, m.id))

    def _step(self, m: _Meter, f: str, last: _State | None, v: float, ts: int) -> _Step:
        if last is None:
            return _Step(state=(v, ts, None, None))
        lv, lts, pv, pts = last
        if ts <= lts or (pts is not None and ts <= pts):
            REJECTS.reject(REJECT_SOURCE, "out_of_order",
                           f"{m.id} {f}: ts {ts} is not after the last reading's {max(lts, pts or 0)}")
            return _UNCHANGED
        delta, event = _classify(m, lv, v)
        if delta is not None and _plausible(m, delta, ts - lts):
            return _Step((v, ts, None, None), delta, ts - lts, event, lv)
        if pv is not None and pts is not None and v >= pv and _plausible(m, v - pv, ts - pts):
            return _Step((v, ts, None, None), v - pv, ts - pts)  # the pending level is confirmed
        if delta is None:
            REJECTS.reject(REJECT_SOURCE, "backwards", f"{m.id} {f}: {lv} -> {v}")
            return _Step(event="backwards", before=lv)
        REJECTS.reject(REJECT_SOURCE, "implausible_jump",
                       f"{m.id} {f}: {lv} -> {v} in {(ts - lts) / _NS_PER_H:.3g} h exceeds "
                       f"max_rate_per_h={m.max_rate_per_h}")
        return _Step(state=(lv, lts, v, ts), event="implausible_jump", before=lv)


def _classify(m: _Meter, last: float, v: float) -> tuple[float | None, str | None]:
    """The delta from ``last`` to ``v`` and its event type; ``(None, None)`` when it went backwards."""
    if v >= last:
        return v - last, None
    rmax = m.register_max
    if rmax is not None and rmax - last + v < ROLLOVER_WINDOW * rmax:
        return rmax - last + v, "rollover"
    if v <= REPLACEMENT_FRACTION * last:
        return v, "replacement"
    return None, None


def _plausible(m: _Meter, delta: float, interval_ns: int) -> bool:
    rate = m.max_rate_per_h
    return rate is None or delta <= rate * interval_ns / _NS_PER_H


def _consumption_fields(deltas: dict[str, float], intervals: dict[str, int]) -> dict[str, float]:
    longest = max(intervals.values())
    fields = dict(deltas)
    fields["interval_s"] = longest / 1e9
    for f, ns in intervals.items():
        if ns != longest:
            fields[f"{f}_interval_s"] = ns / 1e9
    return fields
