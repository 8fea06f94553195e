"""Register decoding, property-tested against ``struct`` for every type and order."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd.profiles import Register
from meterd.sources.modbus.decode import DecodeError, decode, decode_register

INT_RANGES = {"int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1),
              "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
              "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}
CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
         "int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def device_words(value: float, type_: str, order: str) -> list[int]:
    """What a device sends, built from struct's big- and little-endian packings."""
    big = struct.pack(">" + CODES[type_], value)
    little = struct.pack("<" + CODES[type_], value)
    pairs = {
        "ABCD": big,  # most significant byte first
        "DCBA": little,  # least significant byte first
        "CDAB": b"".join(reversed([big[i:i + 2] for i in range(0, len(big), 2)])),
        "BADC": b"".join(big[i:i + 2][::-1] for i in range(0, len(big), 2)),
    }[order]
    return [int.from_bytes(pairs[i:i + 2], "big") for i in range(0, len(pairs), 2)]


def values_of(type_: str) -> st.SearchStrategy[float]:
    if type_ in INT_RANGES:
        lo, hi = INT_RANGES[type_]
        return st.integers(lo, hi)
    return st.floats(width=32 if type_ == "float32" else 64, allow_nan=False)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", list(CODES))
def test_decode_round_trips_struct(type_: str, order: str) -> None:
    @given(values_of(type_))
    def check(value: float) -> None:
        assert decode(device_words(value, type_, order), type_, order) == value

    check()


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), st.sampled_from(["ABCD", "DCBA"]))
def test_any_float32_words_match_struct_including_nan(words: list[int], order: str) -> None:
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    expected = struct.unpack(">f" if order == "ABCD" else "<f", raw)[0]
    value = decode(words, "float32", order)
    assert (math.isnan(value) and math.isnan(expected)) or value == expected


def test_known_words() -> None:
    # 230.1 as IEEE 754 float32 is 0x4366199A; energy meters send it as ABCD by default.
    assert decode([0x4366, 0x199A], "float32") == pytest.approx(230.1, rel=1e-7)
    assert decode([0x199A, 0x4366], "float32", "CDAB") == pytest.approx(230.1, rel=1e-7)
    assert decode([0xFFFF], "int16") == -1
    assert decode([0xFFFF], "uint16") == 65535
    assert decode([0x3412], "uint16", "BADC") == 0x1234
    assert decode([0x0001, 0x0000], "uint32", "CDAB") == 1


def test_scale_and_offset_apply_after_decoding() -> None:
    reg = Register(field="supply_c", address=10, type="int16", scale=0.1, offset=-40.0)
    assert decode_register(reg, [0, 0, 1234], 8) == 1234 * 0.1 - 40.0


@pytest.mark.parametrize(("words", "type_", "match"), [
    ([1], "float32", "needs 2 words"),
    ([1, 2, 3], "float32", "needs 2 words"),
    ([0x10000], "uint16", "0..65535"),
    ([-1], "int16", "0..65535"),
    ([1], "int24", "unknown register type"),
])
def test_bad_words_are_clear_errors(words: list[int], type_: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(words, type_)


def test_register_outside_block_is_an_error() -> None:
    reg = Register(field="pf", address=20, type="float32")
    with pytest.raises(DecodeError, match="outside the words read"):
        decode_register(reg, [0, 0], 19)
