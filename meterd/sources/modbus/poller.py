"""The asyncio Modbus poller: one task per link, each meter read by its planned requests.

Each link runs its own cycle every ``interval_s``. Within a cycle the link's meters are read one at
a time (a serial bus or RTU gateway carries one request at a time, and a TCP gateway usually
forwards onto one). Meters that answered last time go first and are spooled as one batch before
the meters in backoff are probed, so a dead meter never delays its neighbours' data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from meterd.config import Config, ConfigError, LinkConfig, MeterConfig
from meterd.normalise.rejects import REJECTS
from meterd.normalise.validate import Invalid, check_field
from meterd.reading import Reading
from meterd.sources.modbus.decode import DecodeError, decode_register
from meterd.sources.modbus.links import Link, parse_link
from meterd.sources.modbus.plan import Read, plan_profile

log = logging.getLogger("meterd.modbus")

POLLS = Counter("meterd_modbus_polls_total", "Meter polls by link and outcome; 'ok' only once spooled",
                ["link", "result"])
REQUESTS = Counter("meterd_modbus_requests_total", "Modbus read requests sent, by link", ["link"])

SOURCE = "modbus"
# Modbus exception codes (Application Protocol V1.1b3, section 7) by their reject reason.
EXCEPTION_NAMES = {1: "illegal_function", 2: "illegal_data_address", 3: "illegal_data_value",
                   4: "device_failure", 5: "acknowledge", 6: "device_busy",
                   10: "gateway_path_unavailable", 11: "gateway_target_no_response"}
# A gateway saying its target did not answer is the same news as our own timeout.
GATEWAY_NO_RESPONSE = frozenset({10, 11})

Submit = Callable[[list[Reading]], None]


class Backoff:
    """Exponential backoff counted in poll cycles: skip 1, 2, 4, ... cycles, at most ``max_skip``."""

    def __init__(self, max_skip: int) -> None:
        self.max_skip = max_skip
        self.failures = 0
        self.skip_left = 0

    def due(self) -> bool:
        """Whether to try this cycle; call once per cycle."""
        if self.skip_left > 0:
            self.skip_left -= 1
            return False
        return True

    def failed(self) -> None:
        self.failures += 1
        self.skip_left = min(2 ** min(self.failures - 1, 30), self.max_skip)

    def succeeded(self) -> None:
        self.failures = 0
        self.skip_left = 0


def max_skip_cycles(lc: LinkConfig) -> int:
    return max(0, math.floor(lc.backoff_max_s / lc.interval_s))


class NoResponse(Exception):
    """The device (or its gateway) did not answer in time."""


class ExceptionResponse(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(EXCEPTION_NAMES.get(code, f"exception_code_{code}"))
        self.code = code


@dataclass
class MeterTask:
    meter: MeterConfig
    reads: list[Read]
    backoff: Backoff


@dataclass
class PollOutcome:
    """What one poll of one meter produced: the reading (possibly partial) and its result label."""

    reading: Reading | None
    result: str
    fields: dict[str, float] = field(default_factory=dict)


def make_client(link: Link, timeout_s: float) -> ModbusBaseClient:
    """A pymodbus asyncio client for ``link``; retries and reconnects are left to the poller."""
    common = {"timeout": timeout_s, "retries": 0, "reconnect_delay": 0.0, "name": link.name}
    if link.transport == "rtu":
        return AsyncModbusSerialClient(link.device, framer=FramerType.RTU, baudrate=link.baudrate,
                                       bytesize=link.bytesize, parity=link.parity,
                                       stopbits=link.stopbits, **common)  # type: ignore[arg-type]
    framer = FramerType.RTU if link.transport == "rtu+tcp" else FramerType.SOCKET
    return AsyncModbusTcpClient(link.host, port=link.port, framer=framer,
                                **common)  # type: ignore[arg-type]


class LinkPoller:
    """Polls every meter on one link, forever, until ``stop`` is set."""

    def __init__(self, lc: LinkConfig, meters: Sequence[MeterTask], submit: Submit,
                 executor: ThreadPoolExecutor) -> None:
        self.cfg = lc
        self.link = parse_link(lc.name, lc.url)
        self.meters = list(meters)
        self.submit = submit
        self.executor = executor
        self.client: ModbusBaseClient | None = None
        self.connect_backoff = Backoff(max_skip_cycles(lc))
        self._last_io = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        next_due = time.monotonic()
        try:
            while not stop.is_set():
                await _until_stopped(self.cycle(stop), stop)
                next_due = _next_tick(next_due, self.cfg.interval_s, time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_due - time.monotonic()))
        finally:
            self._drop_client()

    async def cycle(self, stop: asyncio.Event) -> None:
        """One poll of every due meter: healthy meters first and spooled, then backoff probes."""
        due = [m for m in self.meters if m.backoff.due()]
        if not due or not await self._connect(due):
            return
        healthy = [m for m in due if m.backoff.failures == 0]
        suspects = [m for m in due if m.backoff.failures > 0]
        for group in (healthy, suspects):
            await self._poll_group(group, stop)

    async def _poll_group(self, group: list[MeterTask], stop: asyncio.Event) -> None:
        outcomes: list[PollOutcome] = []
        for task in group:
            if stop.is_set() or self.client is None or not self.client.connected:
                break  # connection lost: the rest are tried after reconnecting next cycle
            outcomes.append(await self.poll_meter(task))
        readings = [o.reading for o in outcomes if o.reading is not None]
        spooled = await self._submit(readings) if readings else True
        for o in outcomes:
            result = o.result if spooled or o.reading is None else "submit_failed"
            POLLS.labels(self.link.name, result).inc()

    async def poll_meter(self, task: MeterTask) -> PollOutcome:
        """Read every planned request of one meter; valid fields land even if others fail."""
        m = task.meter
        fields: dict[str, float] = {}
        result = "ok"
        ts_ns = 0
        for read in task.reads:
            try:
                words = await self._read(read, m.unit_id or 0, task.backoff.failures == 0)
            except NoResponse:
                self._note_failure(task, "no response")
                result = "timeout"
                break
            except ExceptionResponse as exc:
                REJECTS.reject(SOURCE, f"exception_{exc}", f"link {self.link.name} meter {m.id}: "
                               f"function {read.function} at {read.address:#06x} x{read.count}")
                if exc.code in GATEWAY_NO_RESPONSE:
                    self._note_failure(task, str(exc))
                    result = "timeout"
                    break
                result = "exception"
                continue
            except ConnectionException:
                self._drop_client()
                result = "disconnected"
                break
            ts_ns = time.time_ns()
            fields.update(self._decode(m, read, words))
        if result in ("ok", "exception"):
            self._note_success(task)
        if not fields:
            return PollOutcome(None, "rejected" if result == "ok" else result)
        reading = Reading(measurement=m.kind, tags=m.tags, fields=fields, ts_ns=ts_ns, meter=m.id)
        return PollOutcome(reading, result, fields)

    def _decode(self, m: MeterConfig, read: Read, words: list[int]) -> dict[str, float]:
        out: dict[str, float] = {}
        for reg in read.registers:
            try:
                out[reg.field] = check_field(m.kind, reg.field, decode_register(reg, words, read.address))
            except Invalid as exc:
                REJECTS.reject(SOURCE, exc.reason, f"link {self.link.name} meter {m.id}: {exc.detail}")
            except DecodeError as exc:
                REJECTS.reject(SOURCE, "undecodable", f"link {self.link.name} meter {m.id}: {exc}")
        return out

    async def _read(self, read: Read, unit: int, may_retry: bool) -> list[int]:
        """One request, re-sent up to ``retries`` times on no response while the meter is healthy."""
        attempts = 1 + (self.cfg.retries if may_retry else 0)
        for attempt in range(attempts):
            try:
                return await self._request(read, unit)
            except NoResponse:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    async def _request(self, read: Read, unit: int) -> list[int]:
        assert self.client is not None
        await self._bus_silence()
        REQUESTS.labels(self.link.name).inc()
        call = (self.client.read_holding_registers if read.function == 3
                else self.client.read_input_registers)
        try:
            # pymodbus enforces timeout_s itself; the outer bound only guards against a hang.
            rr = await asyncio.wait_for(call(read.address, count=read.count, device_id=unit),
                                        self.cfg.timeout_s * 2 + 1)
        except ConnectionException:
            raise
        except (ModbusException, TimeoutError) as exc:
            raise NoResponse(str(exc)) from None
        finally:
            self._last_io = time.monotonic()
        if rr.isError():
            raise ExceptionResponse(rr.exception_code)
        words = list(rr.registers)
        if len(words) < read.count:
            raise NoResponse(f"short response: {len(words)} of {read.count} registers")
        return words[:read.count]

    async def _bus_silence(self) -> None:
        """Keep the RTU inter-frame gap between our last frame and the next request."""
        wait = self._last_io + self.link.inter_frame_gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _connect(self, due: list[MeterTask]) -> bool:
        if self.client is not None and self.client.connected:
            return True
        if not self.connect_backoff.due():
            return False
        self._drop_client()
        self.client = make_client(self.link, self.cfg.timeout_s)
        if await self.client.connect():
            if self.connect_backoff.failures:
                log.info("link %s: connected again after %d failed attempts", self.link.name,
                         self.connect_backoff.failures)
            self.connect_backoff.succeeded()
            return True
        if not self.connect_backoff.failures:
            log.warning("link %s: cannot connect to %s; retrying with backoff up to %.0f s",
                        self.link.name, self.cfg.url, self.cfg.backoff_max_s)
        self.connect_backoff.failed()
        self._drop_client()
        for _ in due:
            POLLS.labels(self.link.name, "connect_failed").inc()
        return False

    def _drop_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def _submit(self, readings: list[Reading]) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.submit, readings)
        except Exception as exc:
            REJECTS.reject(SOURCE, "submit_failed", f"link {self.link.name}: {len(readings)} "
                           f"readings not spooled: {exc!r}")
            return False
        return True

    def _note_failure(self, task: MeterTask, why: str) -> None:
        if task.backoff.failures == 0:
            log.warning("link %s meter %s (unit %s): %s; backing off up to %.0f s", self.link.name,
                        task.meter.id, task.meter.unit_id, why, self.cfg.backoff_max_s)
        task.backoff.failed()

    def _note_success(self, task: MeterTask) -> None:
        if task.backoff.failures:
            log.info("link %s meter %s answers again", self.link.name, task.meter.id)
        task.backoff.succeeded()


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``work`` but abandon it when ``stop`` is set, so a hung request never delays shutdown."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.done() and not task.cancelled() and task.exception() is not None:
        # A bug in one cycle must not end polling for good: log it loudly and poll again next time.
        log.error("modbus poll cycle failed", exc_info=task.exception())


def _next_tick(prev_due: float, interval_s: float, now: float) -> float:
    """The next cycle start on the ``interval_s`` grid; cycles that overran are skipped, not bunched."""
    nxt = prev_due + interval_s
    if nxt < now:
        nxt += math.ceil((now - nxt) / interval_s) * interval_s
    return nxt


class ModbusPoller:
    """Polls every Modbus meter in ``cfg`` and hands each link's batches to ``submit``.

    ``submit`` is synchronous and returns once the batch is durable (or raises); it runs on one
    worker thread so the event loop keeps polling while SQLite syncs.
    """

    def __init__(self, cfg: Config, submit: Submit) -> None:
        self.cfg = cfg
        self.submit = submit
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modbus-submit")
        self.links = [LinkPoller(lc, self._tasks_for(lc), submit, self.executor)
                      for lc in cfg.links if any(m.link == lc.name for m in cfg.meters)]

    def _tasks_for(self, lc: LinkConfig) -> list[MeterTask]:
        return [MeterTask(m, plan_meter(self.cfg, m), Backoff(max_skip_cycles(lc)))
                for m in self.cfg.meters if m.link == lc.name]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(*(lp.run(stop) for lp in self.links))
        finally:
            # Let an in-flight submit finish (it is one SQLite transaction) without blocking the loop.
            await asyncio.to_thread(self.executor.shutdown, True)


def plan_meter(cfg: Config, m: MeterConfig) -> list[Read]:
    """The meter's reads (the config already checked the profile's fields suit the meter's kind)."""
    profile = cfg.profile_for(m)
    try:
        return plan_profile(profile)
    except ValueError as exc:
        raise ConfigError(f"meters[id={m.id}].profile {m.profile!r}: {exc}") from None
