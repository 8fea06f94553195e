"""Encode a :class:`~meterd.reading.Reading` as one InfluxDB line-protocol line.

References
----------
InfluxDB line protocol reference, "Special characters":
https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/
"""

from __future__ import annotations

import math
import re

from meterd.reading import Reading


class LineProtocolError(ValueError):
    """The reading cannot be expressed in line protocol; the message names the part."""


_MEASUREMENT_SPECIAL = re.compile(r"([, ])")
_KEY_SPECIAL = re.compile(r"([,= ])")
# Line protocol has no escape for newlines in identifiers, and a backslash right before a
# special character (or at the end) would swallow the separator that follows it.
_UNENCODABLE = re.compile(r"[\n\r]|\\$|\\(?=[,= ])")


def _check(kind: str, text: str) -> None:
    if not text:
        raise LineProtocolError(f"empty {kind}")
    if _UNENCODABLE.search(text):
        raise LineProtocolError(f"{kind} {text!r} holds a newline or a backslash before a "
                                "separator, which line protocol cannot encode")


def escape_measurement(name: str) -> str:
    _check("measurement", name)
    if name.startswith("#"):
        raise LineProtocolError(f"measurement {name!r} starts with '#', which makes the line a comment")
    return _MEASUREMENT_SPECIAL.sub(r"\\\1", name)


def escape_key(text: str, kind: str = "tag key") -> str:
    """Escape a tag key, tag value or field key (commas, equals signs and spaces)."""
    _check(kind, text)
    return _KEY_SPECIAL.sub(r"\\\1", text)


def _field(name: str, value: float) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LineProtocolError(f"field {name}={value!r} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise LineProtocolError(f"field {name}={value!r} is not finite")
    # repr is the shortest string that parses back to the same double, so float32-derived
    # values round-trip exactly; always a float, so a whole number never becomes an integer field.
    return f"{escape_key(name, 'field key')}={v!r}"


def encode(reading: Reading) -> str:
    """One line: ``measurement,tag=v,... field=1.5,... ts_ns`` with tags sorted, empty tags skipped.

    Raises :class:`LineProtocolError` for an empty measurement or key, no fields, a non-finite
    field, or text line protocol cannot carry.
    """
    if not reading.fields:
        raise LineProtocolError(f"{reading.measurement} point of {reading.meter or '?'} has no fields")
    if isinstance(reading.ts_ns, bool) or not isinstance(reading.ts_ns, int):
        raise LineProtocolError(f"timestamp {reading.ts_ns!r} is not integer nanoseconds")
    head = escape_measurement(reading.measurement)
    # Sorted tags are what InfluxDB stores; sending them sorted spares the server the sort.
    tags = "".join(f",{escape_key(k)}={escape_key(v, 'tag value')}"
                   for k, v in sorted(reading.tags.items()) if v != "")
    fields = ",".join(_field(k, v) for k, v in reading.fields.items())
    return f"{head}{tags} {fields} {reading.ts_ns}"
