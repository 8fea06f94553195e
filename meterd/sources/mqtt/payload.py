"""Parse one MQTT message into Readings (pure: no I/O, no clock, no globals).

The payload contract is in ``README.md`` beside this module. In short: a JSON object (or an array
of objects, a gateway's backlog) holding a timestamp and numeric fields, either canonical field
names directly or vendor keys translated by the meter's ``mqtt_map``.

Partial acceptance is deliberate: in an array one bad element is rejected and the others land;
in an object one bad field is rejected and the reading lands without it. A bad timestamp rejects
the whole element, because a value at the wrong time is worse than no value.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from meterd.config import MeterConfig
from meterd.normalise.validate import Invalid, check_field, check_timestamp
from meterd.reading import Reading

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_DEPTH = 8
NS_PER_S = 1_000_000_000

# RFC 3339 date-time; the offset is optional because Tasmota sends site-local time without one.
# Fractions longer than nanoseconds are rounded; 30 digits is a generous cap on the input.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,30}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?"
)


def parse_payload(payload: bytes, meter: MeterConfig, received_ns: int,
                  tz: ZoneInfo) -> tuple[list[Reading], list[Invalid]]:
    """Turn one MQTT payload for ``meter`` into Readings and the reasons anything was rejected.

    Parameters
    ----------
    payload : bytes
        The raw MQTT message body.
    meter : MeterConfig
        The meter subscribed to the message's topic (kind, tags, ``mqtt_*`` mapping keys).
    received_ns : int
        Receive time in ns since the Unix epoch; the timestamp of elements that carry none.
    tz : ZoneInfo
        Site time zone, used for timestamps written without a UTC offset.

    Returns
    -------
    readings : list of Reading
        One per accepted element, in payload order.
    invalid : list of Invalid
        One per rejected message, element or field; ``reason`` is a stable label for counting.
    """
    try:
        doc = _decode(payload)
    except Invalid as exc:
        return [], [Invalid(exc.reason, f"meter {meter.id}: {exc.detail}")]
    if isinstance(doc, list):
        if not doc:
            return [], [Invalid("empty_batch", f"meter {meter.id}: empty JSON array")]
        elements = [(f"meter {meter.id} item {i}", el) for i, el in enumerate(doc)]
    else:
        elements = [(f"meter {meter.id}", doc)]
    readings: list[Reading] = []
    invalid: list[Invalid] = []
    tags = meter.tags
    for where, element in elements:
        reading = _parse_element(element, meter, tags, received_ns, tz, where, invalid)
        if reading is not None:
            readings.append(reading)
    return readings, invalid


def _decode(payload: bytes) -> Any:
    """Bytes -> JSON document, with numbers with a fraction kept exact as Decimal."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Invalid("too_large", f"{len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise Invalid("non_utf8", f"not UTF-8 at byte {exc.start}") from None
    try:
        doc = json.loads(text, parse_float=Decimal, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise Invalid("too_deep", f"nesting deeper than {MAX_DEPTH}") from None
    except Invalid:
        raise
    except ValueError as exc:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise Invalid("non_json", f"{exc} in {text[:60]!r}") from None
    if _depth(doc) > MAX_DEPTH:
        raise Invalid("too_deep", f"nesting deeper than {MAX_DEPTH}")
    if not isinstance(doc, dict | list):
        raise Invalid("not_object", f"expected a JSON object or array, got {text[:60]!r}")
    return doc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of repeated keys silently; which value the meter meant is unknowable.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Invalid("duplicate_key", f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _depth(doc: Any) -> int:
    """Nesting depth of containers (a flat object is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if not isinstance(node, dict | list):
            continue
        children = node.values() if isinstance(node, dict) else node
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _parse_element(element: Any, meter: MeterConfig, tags: dict[str, str], received_ns: int,
                   tz: ZoneInfo, where: str, invalid: list[Invalid]) -> Reading | None:
    if not isinstance(element, dict):
        invalid.append(Invalid("not_object", f"{where}: expected a JSON object, got "
                                             f"{type(element).__name__}"))
        return None
    try:
        ts_ns = _element_ts_ns(element, meter.mqtt_ts_key, received_ns, tz)
    except Invalid as exc:
        invalid.append(Invalid(exc.reason, f"{where}: {exc.detail}"))
        return None
    fields: dict[str, float] = {}
    candidates = _candidate_fields(element, meter)
    for name, raw in candidates:
        try:
            fields[name] = _field_value(meter, name, raw)
        except Invalid as exc:
            invalid.append(Invalid(exc.reason, f"{where}: {exc.detail}"))
    if not candidates:  # when every candidate was bad, their own reasons already say why
        invalid.append(Invalid("no_fields", f"{where}: no usable field in keys {sorted(element)}"))
    if not fields:
        return None
    return Reading(measurement=meter.kind, tags=tags, fields=fields, ts_ns=ts_ns, meter=meter.id)


def _candidate_fields(element: dict[str, Any], meter: MeterConfig) -> list[tuple[str, Any]]:
    """(canonical name, raw value) pairs: mapped vendor keys, else every key but the timestamp."""
    if not meter.mqtt_map:
        return [(k, v) for k, v in element.items() if k != meter.mqtt_ts_key]
    out = []
    for path, name in meter.mqtt_map.items():
        found, value = _lookup(element, path)
        if found:  # a device may omit a mapped key in some messages; that is not an error
            out.append((name, value))
    return out


def _lookup(element: dict[str, Any], path: str) -> tuple[bool, Any]:
    """Follow a dotted path (``"SML.Total_in"``) into nested objects; a literal key wins."""
    if path in element:
        return True, element[path]
    node: Any = element
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _field_value(meter: MeterConfig, name: str, raw: Any) -> float:
    scale = meter.mqtt_scale.get(name)
    if isinstance(raw, int | Decimal) and not isinstance(raw, bool):
        # Scale in decimal so 2300 Wh * 0.001 is 2.3 kWh, not 2.3000000000000003.
        try:
            exact = Decimal(raw) if scale is None else Decimal(raw) * Decimal(repr(scale))
        except ArithmeticError:  # decimal overflow of an absurd exponent
            raise Invalid("non_finite", f"{name} overflows a float") from None
        raw = float(exact)  # too large for a float becomes inf, which check_field rejects
    elif scale is not None and isinstance(raw, float):  # NaN and Infinity arrive as floats
        raw *= scale
    return check_field(meter.kind, name, raw)


def _element_ts_ns(element: dict[str, Any], key: str, received_ns: int, tz: ZoneInfo) -> int:
    found, raw = _lookup(element, key)
    if not found:
        return received_ns
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
        raise Invalid("bad_timestamp", f"{key}={raw!r} is neither epoch seconds nor RFC 3339")
    if isinstance(raw, str):
        return _rfc3339_ns(raw, tz)
    # Range check first: an exact conversion of 1e400000 would build a huge integer.
    check_timestamp(float(raw))
    if isinstance(raw, int):
        return raw * NS_PER_S
    return int((raw * NS_PER_S).to_integral_value(ROUND_HALF_EVEN))


def _rfc3339_ns(text: str, tz: ZoneInfo) -> int:
    """RFC 3339 text -> exact ns since the epoch; no offset means site-local time."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise Invalid("bad_timestamp", f"{text[:40]!r} is not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.f]Z)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, zulu, sign, off_h, off_m = m.groups()[6:]
    zone: tzinfo = tz
    if zulu:
        zone = UTC
    elif sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if offset >= timedelta(hours=24):
            raise Invalid("bad_timestamp", f"{text[:40]!r} has an offset of 24 h or more")
        zone = timezone(-offset if sign == "-" else offset)
    try:
        # fold=0: an ambiguous local time in the autumn DST overlap is read as the first one.
        dt = datetime(year, month, day, hour, minute, second, tzinfo=zone)
        seconds = calendar.timegm(dt.utctimetuple())
    except (ValueError, OverflowError) as exc:  # month 13, 31 June, leap second 60, year 0
        raise Invalid("bad_timestamp", f"{text[:40]!r}: {exc}") from None
    check_timestamp(seconds)
    return seconds * NS_PER_S + _fraction_ns(frac)


def _fraction_ns(frac: str | None) -> int:
    if not frac:
        return 0
    return int((Decimal("0." + frac) * NS_PER_S).to_integral_value(ROUND_HALF_EVEN))
