"""Canonical meter kinds and fields: the vocabulary shared by sources, sinks and analysis."""

from __future__ import annotations

from typing import Final, Literal

Kind = Literal["electricity", "water", "gas", "heat", "weather"]

FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "electricity": (
        "energy_kwh",
        "energy_export_kwh",
        "power_kw",
        "voltage_l1_v",
        "voltage_l2_v",
        "voltage_l3_v",
        "current_l1_a",
        "current_l2_a",
        "current_l3_a",
        "pf",
        "frequency_hz",
    ),
    "water": ("volume_m3", "flow_m3h"),
    "gas": ("volume_m3", "flow_m3h"),
    "heat": ("energy_kwh", "volume_m3", "flow_m3h", "supply_c", "return_c"),
    "weather": ("air_temp_c",),
}

# Registers that only ever count up; consumption is derived from these.
CUMULATIVE: Final[frozenset[str]] = frozenset({"energy_kwh", "energy_export_kwh", "volume_m3"})

# Measurement holding per-interval consumption derived from the cumulative registers.
CONSUMPTION_MEASUREMENT: Final = "consumption"

KINDS: Final[tuple[str, ...]] = tuple(FIELDS)


def fields_for(kind: str) -> tuple[str, ...]:
    """Canonical fields a meter of ``kind`` may report."""
    return FIELDS[kind]
