"""InfluxDB output: line protocol, the v1 and v2 write paths, InfluxQL queries and the spool writer.

The sinks raise :class:`TransientWriteError` (retry the same batch later) or
:class:`PermanentWriteError` (these points can never be written); the writer decides what to do.
See ``README.md`` beside this module for every option.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime


class SinkError(RuntimeError):
    """The sink is misconfigured or the server cannot be used (raised by ``ping``/``ensure_database``)."""


class WriteError(SinkError):
    """A batch was not written."""


class TransientWriteError(WriteError):
    """Retry later: connection failed, 5xx, 429, or a server-side fault the data is not to blame for.

    ``retry_after`` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentWriteError(WriteError):
    """The server rejected the points themselves (400: unparsable, field type conflict)."""


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta-seconds or HTTP-date), else None.

    References
    ----------
    RFC 9110, section 10.2.3 "Retry-After".
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None  # a malformed header falls back to our own backoff
    return max(0.0, when - (time.time() if now_s is None else now_s))
