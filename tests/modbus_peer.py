"""Test peers for the Modbus poller: a pyModbusTCP device that is not pymodbus, and a dead gateway.

``ModbusPeer`` serves several unit ids from one TCP port, like a gateway in front of an RS-485
bus: each unit has its own register table (holding for function 3 or input for function 4),
addresses that answer "illegal data address", or stays silent (its frames are never answered).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyModbusTCP.constants import (
    EXP_DATA_ADDRESS,
    EXP_GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND,
    EXP_ILLEGAL_FUNCTION,
    EXP_NONE,
)
from pyModbusTCP.server import DataHandler, ModbusServer

from simulators.local_servers import free_port

STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
          "int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}


def encode(value: float, type_: str, order: str = "ABCD") -> list[int]:
    """Register words a device sends for ``value``; written from the byte names, not decode.py."""
    raw = struct.pack(">" + STRUCT[type_], value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    return [int.from_bytes(w, "big") for w in words]


def as_float32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


@dataclass
class Unit:
    function: int = 3
    words: dict[int, int] = field(default_factory=dict)
    holes: set[int] = field(default_factory=set)
    silent: bool = False

    def put(self, address: int, value: float, type_: str = "float32", order: str = "ABCD") -> None:
        for i, w in enumerate(encode(value, type_, order)):
            self.words[address + i] = w

    def read(self, function: int, address: int, count: int) -> tuple[int, list[int] | None]:
        if function != self.function:
            return EXP_ILLEGAL_FUNCTION, None
        span = range(address, address + count)
        if any(a in self.holes for a in span):
            return EXP_DATA_ADDRESS, None
        return EXP_NONE, [self.words.get(a, 0) for a in span]


class _Handler(DataHandler):
    def __init__(self, units: dict[int, Unit]) -> None:
        super().__init__()
        self.units = units
        self.requests: list[tuple[int, int, int, int]] = []  # (unit, function, address, count)
        self.lock = threading.Lock()

    def _read(self, function: int, address: int, count: int, srv_info: Any) -> DataHandler.Return:
        unit_id = srv_info.recv_frame.mbap.unit_id
        with self.lock:
            self.requests.append((unit_id, function, address, count))
        unit = self.units.get(unit_id)
        if unit is None:
            return DataHandler.Return(EXP_GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND)
        code, data = unit.read(function, address, count)
        return DataHandler.Return(code, data)

    def read_h_regs(self, address: int, count: int, srv_info: Any) -> DataHandler.Return:
        return self._read(3, address, count, srv_info)

    def read_i_regs(self, address: int, count: int, srv_info: Any) -> DataHandler.Return:
        return self._read(4, address, count, srv_info)


class ModbusPeer(ModbusServer):
    """A pyModbusTCP server on a free loopback port serving ``units``."""

    class ModbusService(ModbusServer.ModbusService):
        def _send_all(self, data: bytes) -> bool:
            peer: ModbusPeer = self.server.engine.__self__
            unit = peer.units.get(data[6]) if len(data) > 6 else None
            if unit is not None and unit.silent:
                return True  # a dead meter behind a live gateway: the request is swallowed
            return bool(super()._send_all(data))

    def __init__(self, units: dict[int, Unit]) -> None:
        self.units = units
        self.handler = _Handler(units)
        super().__init__(host="127.0.0.1", port=free_port(), no_block=True, data_hdl=self.handler)

    def requests_for(self, unit: int) -> int:
        with self.handler.lock:
            return sum(1 for r in self.handler.requests if r[0] == unit)

    def __enter__(self) -> ModbusPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_device(path: Path) -> dict[int, Unit]:
    """Units from a case's ``device.toml`` (``[[units]]`` with unit, function, holes, silent, values)."""
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    units: dict[int, Unit] = {}
    for u in doc.get("units", []):
        unit = Unit(function=u.get("function", 3), holes=set(u.get("holes", [])),
                    silent=u.get("silent", False))
        for v in u.get("values", []):
            if "words" in v:
                for i, w in enumerate(v["words"]):
                    unit.words[v["address"] + i] = w
            else:
                unit.put(v["address"], v["value"], v.get("type", "float32"), v.get("order", "ABCD"))
        units[u["unit"]] = unit
    return units


class DeadGateway:
    """A loopback TCP port that accepts connections and never answers: a hung gateway."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def __enter__(self) -> DeadGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
        self.sock.close()
        for c in self.conns:
            c.close()
