"""Register maps (profiles) kept as data: built-in ones ship as TOML files beside this module."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RegisterType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

REGISTER_WIDTH: dict[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
    "float32": 2, "int64": 4, "uint64": 4, "float64": 4,
}


class Register(BaseModel):
    """One field of a register map; ``value = raw * scale + offset`` in the canonical unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    address: int = Field(ge=0, le=0xFFFF)
    type: RegisterType = "float32"
    order: WordOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        return REGISTER_WIDTH[self.type]


class Profile(BaseModel):
    """A register map: the Modbus function to read with and the registers to read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: Literal[3, 4]
    registers: tuple[Register, ...] = Field(min_length=1)
    description: str = ""
    # Request planning (meterd/sources/modbus/plan.py): unmapped words a read may span, and the
    # most words per read; None means the planner's defaults.
    max_gap: int | None = Field(default=None, ge=0, le=123)
    max_count: int | None = Field(default=None, ge=4, le=125)


PROFILE_DIR = Path(__file__).parent


@cache
def builtin_profiles() -> dict[str, Profile]:
    """Every profile shipped in ``meterd/profiles/*.toml``, keyed by file stem with ``-``."""
    out: dict[str, Profile] = {}
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        with path.open("rb") as fh:
            out[path.stem.replace("_", "-")] = Profile.model_validate(tomllib.load(fh))
    return out
