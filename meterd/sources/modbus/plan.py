"""Request planning: coalesce a register map into as few Modbus reads as it allows (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meterd.profiles import Profile, Register

# The Modbus application protocol caps a read of holding or input registers at 125 words.
MAX_COUNT = 125
# Unmapped registers worth reading through rather than starting a new request. At 9600 baud 32
# extra words cost ~75 ms on the wire, about one request's turnaround; maps whose gaps hold
# registers the meter refuses (illegal address) set ``max_gap = 0`` in their profile.
DEFAULT_MAX_GAP = 32
ADDRESS_SPACE = 0x10000


@dataclass(frozen=True, slots=True)
class Read:
    """One request: ``count`` words from ``address`` with ``function``, covering ``registers``."""

    function: int
    address: int
    count: int
    registers: tuple[Register, ...]

    @property
    def end(self) -> int:
        return self.address + self.count


def plan_reads(registers: Sequence[Register], max_count: int = MAX_COUNT,
               max_gap: int = DEFAULT_MAX_GAP, function: int = 3) -> list[Read]:
    """Group ``registers`` into reads of at most ``max_count`` words, bridging gaps of ``max_gap``.

    Registers are taken in address order; a read grows while the next register fits within
    ``max_count`` words of its start and starts no more than ``max_gap`` words after its end.
    Overlapping registers (two fields decoded from the same words) share a read.
    Raises ``ValueError`` for a register that runs past 0xFFFF or is wider than ``max_count``.
    """
    if not 1 <= max_count <= MAX_COUNT:
        raise ValueError(f"max_count={max_count}: expected 1..{MAX_COUNT}")
    if max_gap < 0:
        raise ValueError(f"max_gap={max_gap}: expected >= 0")
    for reg in registers:
        _check_register(reg, max_count)
    reads: list[Read] = []
    group: list[Register] = []
    start = end = 0
    for reg in sorted(registers, key=lambda r: (r.address, r.width)):
        reg_end = reg.address + reg.width
        if group and reg.address - end <= max_gap and max(end, reg_end) - start <= max_count:
            group.append(reg)
            end = max(end, reg_end)
            continue
        if group:
            reads.append(Read(function, start, end - start, tuple(group)))
        group, start, end = [reg], reg.address, reg_end
    if group:
        reads.append(Read(function, start, end - start, tuple(group)))
    return reads


def plan_profile(profile: Profile) -> list[Read]:
    """The reads for one meter's register map, honouring the profile's own limits."""
    return plan_reads(profile.registers,
                      max_count=profile.max_count or MAX_COUNT,
                      max_gap=DEFAULT_MAX_GAP if profile.max_gap is None else profile.max_gap,
                      function=profile.function)


def _check_register(reg: Register, max_count: int) -> None:
    if reg.address + reg.width > ADDRESS_SPACE:
        raise ValueError(f"register {reg.field} at {reg.address:#06x} ({reg.type}) runs past 0xFFFF")
    if reg.width > max_count:
        raise ValueError(f"register {reg.field} ({reg.type}, {reg.width} words) is wider than "
                         f"max_count={max_count}")
