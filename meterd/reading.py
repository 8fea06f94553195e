"""The unit of data flowing through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reading:
    """One timestamped set of canonical field values from one meter.

    ``measurement`` is the meter's kind (or ``consumption`` for derived points);
    ``tags`` are the InfluxDB tags (meter, campus, building, canteen, ...);
    ``ts_ns`` is the reading time in integer nanoseconds since the Unix epoch.
    """

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float]
    ts_ns: int
    meter: str = field(default="")
