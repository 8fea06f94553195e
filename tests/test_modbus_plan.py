"""Request planning and link URLs, tested without any device."""

from __future__ import annotations

import pytest

from meterd.profiles import Register, builtin_profiles
from meterd.sources.modbus.links import LinkError, inter_frame_gap_s, parse_link
from meterd.sources.modbus.plan import MAX_COUNT, plan_profile, plan_reads


def regs(*spec: tuple[int, str]) -> list[Register]:
    return [Register(field=f"f{i}", address=a, type=t) for i, (a, t) in enumerate(spec)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "n_reads"), [
    ("chint-dtsu666", 2), ("chint-ddsu666", 2), ("eastron-sdm120", 2), ("eastron-sdm630", 2)])
def test_builtin_profiles_need_few_reads_covering_every_register(name: str, n_reads: int) -> None:
    profile = builtin_profiles()[name]
    reads = plan_profile(profile)
    assert len(reads) == n_reads
    covered = [r for read in reads for r in read.registers]
    assert sorted(covered, key=lambda r: r.address) == sorted(profile.registers, key=lambda r: r.address)
    for read in reads:
        assert read.function == profile.function
        assert 1 <= read.count <= MAX_COUNT
        for r in read.registers:
            assert read.address <= r.address and r.address + r.width <= read.end


def test_dtsu666_reads_energy_block_and_instant_block() -> None:
    reads = plan_profile(builtin_profiles()["chint-dtsu666"])
    assert [(r.address, r.count) for r in reads] == [(0x101E, 12), (0x2006, 0x2046 - 0x2006)]


def test_contiguous_map_splits_at_125_words() -> None:
    # 100 float32 registers back to back: 200 words -> 124 (62 floats, never half a float) + 76.
    reads = plan_reads(regs(*[(2 * i, "float32") for i in range(100)]))
    assert [(r.address, r.count) for r in reads] == [(0, 124), (124, 76)]
    assert sum(len(r.registers) for r in reads) == 100


def test_split_exactly_at_limit_with_one_word_registers() -> None:
    reads = plan_reads(regs(*[(i, "uint16") for i in range(251)]))
    assert [(r.address, r.count) for r in reads] == [(0, 125), (125, 125), (250, 1)]


def test_gap_larger_than_max_gap_starts_a_new_read() -> None:
    spec = regs((0, "float32"), (10, "float32"), (50, "float32"))
    assert [(r.address, r.count) for r in plan_reads(spec, max_gap=8)] == [(0, 12), (50, 2)]
    assert [(r.address, r.count) for r in plan_reads(spec, max_gap=38)] == [(0, 52)]
    assert len(plan_reads(spec, max_gap=0)) == 3


def test_max_gap_zero_still_merges_adjacent_and_overlapping_registers() -> None:
    spec = regs((4, "uint16"), (0, "float64"), (2, "float32"))  # unsorted, overlapping
    reads = plan_reads(spec, max_gap=0)
    assert [(r.address, r.count) for r in reads] == [(0, 5)]


def test_profile_max_count_and_max_gap_override_defaults() -> None:
    prof = builtin_profiles()["eastron-sdm630"].model_copy(update={"max_gap": 0, "max_count": 8})
    reads = plan_profile(prof)
    assert all(r.count <= 8 for r in reads)
    assert len(reads) == 4  # 0..7, 8..11, 0x34, 0x46..0x4B


def test_empty_map_plans_nothing() -> None:
    assert plan_reads([]) == []


@pytest.mark.parametrize(("spec", "kwargs", "match"), [
    ([(0xFFFF, "float32")], {}, "runs past 0xFFFF"),
    ([(0, "float64")], {"max_count": 3}, "wider than max_count"),
    ([(0, "uint16")], {"max_count": 126}, "max_count=126"),
    ([(0, "uint16")], {"max_gap": -1}, "max_gap=-1"),
])
def test_impossible_maps_are_clear_errors(spec: list[tuple[int, str]], kwargs: dict[str, int],
                                          match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_reads(regs(*spec), **kwargs)


@pytest.mark.parametrize(("url", "expect"), [
    ("tcp://10.1.2.3", ("tcp", "10.1.2.3", 502)),
    ("tcp://gw.local:1502", ("tcp", "gw.local", 1502)),
    ("rtu+tcp://10.1.2.3:4196", ("rtu+tcp", "10.1.2.3", 4196)),
    ("tcp://[::1]:5020", ("tcp", "::1", 5020)),
])
def test_tcp_link_urls(url: str, expect: tuple[str, str, int]) -> None:
    link = parse_link("gw", url)
    assert (link.transport, link.host, link.port) == expect
    assert link.inter_frame_gap_s == 0.0


def test_serial_link_url_with_options() -> None:
    link = parse_link("bus", "rtu:///dev/ttyUSB0?baudrate=9600&parity=e&stopbits=1&bytesize=8")
    assert (link.device, link.baudrate, link.parity, link.stopbits, link.bytesize) == \
        ("/dev/ttyUSB0", 9600, "E", 1, 8)
    assert link.bits_per_char == 11
    assert link.inter_frame_gap_s == pytest.approx(3.5 * 11 / 9600)


def test_serial_defaults_are_9600_8n1() -> None:
    link = parse_link("bus", "rtu:///dev/ttyS1")
    assert (link.baudrate, link.parity, link.stopbits, link.bytesize) == (9600, "N", 1, 8)


def test_inter_frame_gap_is_fixed_above_19200_baud() -> None:
    assert inter_frame_gap_s(19200) == pytest.approx(3.5 * 11 / 19200)
    assert inter_frame_gap_s(38400) == inter_frame_gap_s(115200) == 0.00175


@pytest.mark.parametrize(("url", "match"), [
    ("http://gw:502", "expected a tcp://"),
    ("tcp://", "expected tcp://host:port"),
    ("tcp://gw:70000", "out of range"),
    ("tcp://gw:502/x", "no path or query"),
    ("rtu://ttyUSB0", "three slashes"),
    ("rtu:///dev/ttyUSB0?baud=9600", "unknown option 'baud'"),
    ("rtu:///dev/ttyUSB0?baudrate=fast", "not an integer"),
    ("rtu:///dev/ttyUSB0?baudrate=0", "must be positive"),
    ("rtu:///dev/ttyUSB0?parity=X", "parity"),
    ("rtu:///dev/ttyUSB0?stopbits=3", "stopbits"),
])
def test_bad_link_urls_name_the_link(url: str, match: str) -> None:
    with pytest.raises(LinkError, match=match) as exc:
        parse_link("boiler-bus", url)
    assert "links[name=boiler-bus]" in str(exc.value)
