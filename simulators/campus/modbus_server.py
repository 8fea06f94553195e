"""One Modbus TCP server answering for every simulated electricity meter, one unit id each.

Built on pymodbus 3.16's ``SimDevice``/``SimData`` datastore (the API that replaces the
deprecated ``ModbusDeviceContext``/``ModbusSequentialDataBlock`` in pymodbus 4). Each unit is one
shared register block covering its profile's address span; the device ``action`` hook refreshes
the registers from the model at the moment of every request, so values follow model time exactly.
Eastron meters answer only their profile's function code; Chint meters answer 03 and 04 alike
(public sources disagree on which one the real meters use). Unknown unit ids get no answer, as
behind an RS-485 gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from meterd.profiles import Profile, builtin_profiles
from simulators.campus.clock import SimClock
from simulators.campus.faults import Fault, adjust_cumulative, garbage
from simulators.campus.model import Campus, LiveMeter, MeterSpec, values_at
from simulators.campus.registers import render, span
from simulators.campus.truth import TruthLog

log = logging.getLogger("simulators.modbus")


class Unit:
    """One simulated meter behind a unit id: its registers, model and faults."""

    def __init__(self, campus: Campus, meter: MeterSpec, faults: list[Fault], clock: SimClock
                 ) -> None:
        assert meter.unit_id is not None and meter.profile is not None
        self.meter = meter
        self.profile: Profile = builtin_profiles()[meter.profile]
        self.start, self.length = span(self.profile)
        self.functions = ({3, 4} if meter.profile.startswith("chint-")
                          else {self.profile.function})
        self.live = LiveMeter(campus, meter)
        self.timed = [f for f in faults if f.kind in ("timeout", "exception", "garbage")]
        # Rollover needs the register at the wrap time even before it, so compute it up front.
        self.counters = [(f, clock.model_at(f.at_s),
                          {k: float(v[0]) for k, v in
                           values_at(campus, meter, [clock.model_at(f.at_s)]).items()})
                         for f in faults if f.kind in ("rollover", "replacement")]

    def values(self, t_s: float) -> tuple[dict[str, float], list[str]]:
        """The values the meter shows at model time ``t_s`` and the faults that shaped them."""
        values = self.live.values(t_s)
        main = self.meter.cumulative_field or "energy_kwh"
        applied = []
        for fault, fault_ts, at_fault in self.counters:
            values = adjust_cumulative(values, fault, at_fault, main, t_s >= fault_ts)
            applied.append(fault.kind)
        return values, applied

    def device(self, action: SimAction) -> SimDevice:
        block = SimData(address=self.start, count=self.length, values=0,
                        datatype=DataType.REGISTERS)
        return SimDevice(id=self.meter.unit_id or 0, simdata=[block], action=action)


class CampusModbusServer:
    """Serve every Modbus meter of ``campus`` on ``host:port`` (start/stop in a running loop)."""

    def __init__(self, campus: Campus, clock: SimClock, truth: TruthLog,
                 faults: Iterable[Fault] = (), host: str = "127.0.0.1", port: int = 5020) -> None:
        faults = list(faults)
        self.clock, self.truth, self.host, self.port = clock, truth, host, port
        self.units = {m.unit_id: Unit(campus, m, [f for f in faults if f.unit == m.unit_id], clock)
                      for m in campus.meters if m.unit_id is not None}
        unknown = sorted({f.unit for f in faults} - set(self.units))
        if unknown:
            raise ValueError(f"--fault names unit ids {unknown} but the campus has units "
                             f"1..{len(self.units)}")
        self.server: ModbusTcpServer | None = None

    def _action(self, unit_id: int) -> SimAction:
        async def action(function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: list[int] | list[bool] | None
                         ) -> ExcCodes | None:
            return self.handle(unit_id, function_code, address, count, registers, set_values)
        return action

    async def _silent(self, *_: object) -> ExcCodes | None:
        raise NoSuchIdException("no simulated meter at this unit id")

    def handle(self, unit_id: int, function_code: int, address: int, count: int,
               registers: list[int], set_values: object) -> ExcCodes | None:
        """Answer one request: refresh ``registers`` from the model, or fail as a fault says."""
        unit = self.units[unit_id]
        elapsed = self.clock.elapsed()
        t = self.clock.model_at(elapsed)
        where = {"ts": t, "meter": unit.meter.id, "unit": unit_id, "function": function_code,
                 "address": address, "count": count}
        if set_values is not None or function_code not in unit.functions:
            self.truth.write("exception", **where, code=int(ExcCodes.ILLEGAL_FUNCTION))
            return ExcCodes.ILLEGAL_FUNCTION
        active = [f for f in unit.timed if f.active(elapsed)]
        kinds = {f.kind for f in active}
        if "timeout" in kinds:
            self.truth.write("timeout", **where)
            raise NoSuchIdException(f"unit {unit_id}: simulated timeout")
        if "exception" in kinds:
            code = next(f.exception_code for f in active if f.kind == "exception")
            self.truth.write("exception", **where, code=code)
            return ExcCodes(code)
        values, applied = unit.values(t)
        if "garbage" in kinds:
            values, applied = garbage(values), [*applied, "garbage"]
        served = render(unit.profile, values, registers, unit.start)
        asked = {r.field for r in unit.profile.registers
                 if address <= r.address and r.address + r.width <= address + count}
        extra = {"fault": applied} if applied else {}
        self.truth.write("served", **where, fields={k: v for k, v in served.items() if k in asked},
                         **extra)
        return None

    def devices(self) -> list[SimDevice]:
        devices = [u.device(self._action(uid)) for uid, u in self.units.items()]
        # Covers the whole address space so every request reaches the silencing action.
        catch_all = SimDevice(id=0, simdata=[SimData(address=0, count=0x10000, values=0,
                                                     datatype=DataType.REGISTERS)],
                              action=self._silent)
        return [catch_all, *devices]

    async def start(self) -> None:
        self.server = ModbusTcpServer(self.devices(), address=(self.host, self.port),
                                      ignore_missing_devices=True)
        await self.server.serve_forever(background=True)
        log.info("Modbus TCP on %s:%d serving unit ids 1..%d", self.host, self.port,
                 len(self.units))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
