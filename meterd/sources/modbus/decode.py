"""Decode register words into numbers (pure): integer and IEEE 754 types in four word/byte orders."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from meterd.profiles import REGISTER_WIDTH, Register

# struct codes for a big-endian byte string of each type.
_STRUCT: dict[str, str] = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
    "int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d",
}
# Orders name the four bytes of a 32-bit value as the device sends them: A is the most significant.
# Lower words first ("CDAB", "DCBA") reverses the words; "BADC" and "DCBA" swap bytes in each word.
_WORDS_REVERSED = frozenset({"CDAB", "DCBA"})
_BYTES_SWAPPED = frozenset({"BADC", "DCBA"})


class DecodeError(ValueError):
    """Words that cannot be decoded as the requested type (wrong count or not 16-bit)."""


def decode(words: Sequence[int], type_: str, order: str = "ABCD") -> int | float:
    """Decode ``words`` (16-bit register values, in the order read) as ``type_`` in ``order``.

    Parameters
    ----------
    words : sequence of int
        Register values 0..65535, exactly as many as the type is wide (1, 2 or 4).
    type_ : str
        One of int16, uint16, int32, uint32, int64, uint64, float32, float64.
    order : str
        ABCD (big-endian, the Modbus default), CDAB (word-swapped), BADC (byte-swapped) or
        DCBA (little-endian). Orders generalise to 64-bit values word by word; for one-word
        types only the byte swap matters.

    References
    ----------
    Modbus Organization, "MODBUS Application Protocol Specification V1.1b3", 2012, section 4.2
    (big-endian data encoding); IEEE 754-2008 binary32/binary64.
    """
    if type_ not in _STRUCT:
        raise DecodeError(f"unknown register type {type_!r}; expected one of {sorted(_STRUCT)}")
    if len(words) != REGISTER_WIDTH[type_]:
        raise DecodeError(f"{type_} needs {REGISTER_WIDTH[type_]} words, got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise DecodeError(f"register words must be 0..65535, got {list(words)}")
    ordered = list(reversed(words)) if order in _WORDS_REVERSED else list(words)
    raw = b"".join(w.to_bytes(2, "little" if order in _BYTES_SWAPPED else "big") for w in ordered)
    value: int | float = struct.unpack(_STRUCT[type_], raw)[0]
    return value


def decode_register(reg: Register, block: Sequence[int], block_start: int) -> float:
    """Value of ``reg`` in canonical units from ``block``, the words read from ``block_start``.

    ``value = raw * scale + offset``; 64-bit integers above 2**53 lose precision as floats.
    """
    first = reg.address - block_start
    if first < 0 or first + reg.width > len(block):
        raise DecodeError(f"register {reg.field} at {reg.address:#06x} is outside the words read "
                          f"from {block_start:#06x} ({len(block)} words)")
    raw = decode(block[first:first + reg.width], reg.type, reg.order)
    return float(raw) * reg.scale + reg.offset
