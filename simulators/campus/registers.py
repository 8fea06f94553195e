"""Encode canonical values into a profile's Modbus registers (the inverse of a meterd decoder)."""

from __future__ import annotations

import math
import struct

from meterd.profiles import Profile, Register

_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
           "uint64": "Q", "float32": "f", "float64": "d"}
_FLOAT32_MAX = 3.4028234663852886e38


def _raw(value: float, reg: Register) -> float | int:
    raw = (value - reg.offset) / reg.scale
    if reg.type == "float32":
        # A value too big for float32 saturates as a real meter's would, never raises.
        return raw if math.isnan(raw) else max(-_FLOAT32_MAX, min(_FLOAT32_MAX, raw))
    if reg.type == "float64":
        return raw
    bits = 16 * reg.width
    lo, hi = (0, 2**bits - 1) if reg.type.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return hi if not math.isfinite(raw) else max(lo, min(hi, round(raw)))


def encode(value: float, reg: Register) -> list[int]:
    """Words for ``value`` in the register's type and word order (raw = (value - offset) / scale)."""
    data = struct.pack(">" + _STRUCT[reg.type], _raw(value, reg))
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if reg.order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words[::-1] if reg.order in ("CDAB", "DCBA") else words


def decode(words: list[int], reg: Register) -> float:
    """Canonical value of ``words`` (what a correct client reads); used for the truth log."""
    if reg.order in ("CDAB", "DCBA"):
        words = words[::-1]
    if reg.order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    data = b"".join(w.to_bytes(2, "big") for w in words)
    return float(struct.unpack(">" + _STRUCT[reg.type], data)[0]) * reg.scale + reg.offset


def span(profile: Profile) -> tuple[int, int]:
    """First address and number of registers covering every field of the profile."""
    start = min(r.address for r in profile.registers)
    return start, max(r.address + r.width for r in profile.registers) - start


def render(profile: Profile, values: dict[str, float], registers: list[int], start: int
           ) -> dict[str, float]:
    """Write every field present in ``values`` into ``registers`` (whose first address is
    ``start``); return the values as a client will decode them."""
    served: dict[str, float] = {}
    for reg in profile.registers:
        if reg.field in values:
            words = encode(values[reg.field], reg)
            registers[reg.address - start:reg.address - start + reg.width] = words
            served[reg.field] = decode(words, reg)
    return served
