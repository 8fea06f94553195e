"""The simulated campus: a deterministic model, a Modbus TCP server, an MQTT publisher, faults
and a truth log. Offline users (leak and canteen tests) need only :mod:`.model` and
:func:`.campus_config.build_campus`."""

from simulators.campus.campus_config import build_campus
from simulators.campus.model import Campus, Leak, MeterSpec, Saving, series, values_at

__all__ = ["Campus", "Leak", "MeterSpec", "Saving", "build_campus", "series", "values_at"]
