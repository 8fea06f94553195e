"""Modbus link URLs: ``tcp://``, ``rtu+tcp://`` and ``rtu://`` parsed into a :class:`Link`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

Transport = Literal["tcp", "rtu+tcp", "rtu"]

DEFAULT_PORT = 502
SERIAL_DEFAULTS: dict[str, int | str] = {"baudrate": 9600, "parity": "N", "stopbits": 1, "bytesize": 8}
# Above this rate the Modbus serial spec fixes the inter-frame gap instead of scaling it.
FIXED_GAP_ABOVE_BAUD = 19200
FIXED_GAP_S = 0.00175


class LinkError(ValueError):
    """A link URL that cannot be used; the message names the link."""


@dataclass(frozen=True, slots=True)
class Link:
    """Where and how to reach a set of meters: a TCP gateway, an RTU-over-TCP gateway or a serial bus."""

    name: str
    transport: Transport
    host: str = ""
    port: int = DEFAULT_PORT
    device: str = ""
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def is_serial(self) -> bool:
        return self.transport == "rtu"

    @property
    def bits_per_char(self) -> int:
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    @property
    def inter_frame_gap_s(self) -> float:
        """Silence the bus needs between frames (0 for TCP links, whose framing is by length)."""
        if not self.is_serial:
            return 0.0
        return inter_frame_gap_s(self.baudrate, self.bits_per_char)


def inter_frame_gap_s(baudrate: int, bits_per_char: int = 11) -> float:
    """Minimum silent interval between Modbus RTU frames, in seconds.

    Parameters
    ----------
    baudrate : int
        Line speed in bit/s.
    bits_per_char : int
        Bits on the wire per character (start + data + parity + stop); the spec assumes 11.

    Returns
    -------
    float
        3.5 character times, or a fixed 1.75 ms above 19200 baud.

    References
    ----------
    Modbus Organization, "MODBUS over Serial Line Specification and Implementation Guide V1.02",
    2006, section 2.5.1.1 (MODBUS Message RTU Framing).
    """
    if baudrate > FIXED_GAP_ABOVE_BAUD:
        return FIXED_GAP_S
    return 3.5 * bits_per_char / baudrate


def parse_link(name: str, url: str) -> Link:
    """Parse a link URL; raise :class:`LinkError` naming the link when it is unusable."""
    where = f"links[name={name}].url {url!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LinkError(f"{where}: {exc}") from None
    if parts.scheme in ("tcp", "rtu+tcp"):
        if not parts.hostname:
            raise LinkError(f"{where}: expected {parts.scheme}://host:port")
        if parts.path not in ("", "/") or parts.query:
            raise LinkError(f"{where}: a {parts.scheme} link takes no path or query")
        transport: Transport = "tcp" if parts.scheme == "tcp" else "rtu+tcp"
        return Link(name, transport, host=parts.hostname, port=port or DEFAULT_PORT)
    if parts.scheme == "rtu":
        if parts.netloc or not parts.path.startswith("/"):
            raise LinkError(f"{where}: expected rtu:///dev/ttyUSB0?baudrate=9600 (three slashes)")
        return Link(name, "rtu", port=0, device=parts.path,
                    **_serial_options(where, parts.query))  # type: ignore[arg-type]
    raise LinkError(f"{where}: expected a tcp://, rtu+tcp:// or rtu:// URL")


def _serial_options(where: str, query: str) -> dict[str, object]:
    opts: dict[str, object] = dict(SERIAL_DEFAULTS)
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in SERIAL_DEFAULTS:
            raise LinkError(f"{where}: unknown option {key!r}; expected {sorted(SERIAL_DEFAULTS)}")
        opts[key] = _serial_value(where, key, raw)
    return opts


_ALLOWED: dict[str, tuple[object, ...]] = {
    "parity": ("N", "E", "O"), "stopbits": (1, 2), "bytesize": (5, 6, 7, 8),
}


def _serial_value(where: str, key: str, raw: str) -> object:
    value: object = raw.upper()
    if key != "parity":
        try:
            value = int(raw)
        except ValueError:
            raise LinkError(f"{where}: {key}={raw!r} is not an integer") from None
    if key == "baudrate" and not (isinstance(value, int) and value > 0):
        raise LinkError(f"{where}: baudrate={raw!r} must be positive")
    if key in _ALLOWED and value not in _ALLOWED[key]:
        raise LinkError(f"{where}: {key}={raw!r}; expected one of {list(_ALLOWED[key])}")
    return value
