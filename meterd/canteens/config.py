"""The ``[[canteens]]`` and ``[reports]`` sections, validated once with errors naming the key.

The core :class:`meterd.config.Config` keeps them as free dicts/lists; this module owns their
schema. Every key is documented in ``docs/canteens.md``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meterd.config import Config, ConfigError, _describe

Utility = Literal["electricity", "water", "gas", "heat"]
UTILITIES: tuple[str, ...] = ("electricity", "water", "gas", "heat")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Period(_Section):
    """A range of local dates, both ends inclusive (``end`` is the last day)."""

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class CanteenConfig(_Section):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = ""
    campus: str = ""
    weather_meter: str | None = None
    baseline: Period
    target_period: Period | None = None
    targets: dict[Utility, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _targets_are_fractions(self) -> CanteenConfig:
        for utility, value in self.targets.items():
            if not -1.0 < value < 1.0:
                raise ValueError(f"targets.{utility}: expected a fraction such as 0.10 "
                                 f"(10 % savings), got {value!r}")
        return self

    def period(self) -> Period:
        """The target period: as configured, or the year after the baseline."""
        if self.target_period is not None:
            return self.target_period
        first = date.fromordinal(self.baseline.end.toordinal() + 1)
        try:
            last = first.replace(year=first.year + 1)
        except ValueError:  # 29 February
            last = first.replace(year=first.year + 1, day=28)
        return Period(start=first, end=date.fromordinal(last.toordinal() - 1))

    @property
    def label(self) -> str:
        return self.name or self.id


class ReportsConfig(_Section):
    to: list[str] = Field(default_factory=list)
    day_of_month: int = Field(default=1, ge=1, le=28)
    subject: str = "Canteen utility savings report {month}"
    html_dir: Path | None = None

    @model_validator(mode="after")
    def _addresses(self) -> ReportsConfig:
        for addr in self.to:
            if "@" not in addr:
                raise ValueError(f"to: {addr!r} is not an email address")
        return self


class _Canteens(_Section):
    canteens: list[CanteenConfig]
    reports: ReportsConfig


def _validate(cfg: Config) -> _Canteens:
    raw: dict[str, Any] = {"canteens": cfg.canteens, "reports": cfg.reports}
    try:
        return _Canteens.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if err["type"] == "value_error" or isinstance(err["input"], dict | list) \
                else f" (got {err['input']!r})"
            lines.append(f"{_describe(tuple(err['loc']), raw)}: {msg}{got}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_canteens(cfg: Config) -> tuple[list[CanteenConfig], ReportsConfig]:
    """Validate ``[[canteens]]`` and ``[reports]`` against the rest of the config.

    Raises :class:`meterd.config.ConfigError` naming the key and canteen id, e.g.
    ``canteens[id=canteen-a].targets.gas: no meter of kind 'gas' has canteen = 'canteen-a'``.
    """
    parsed = _validate(cfg)
    seen: set[str] = set()
    for c in parsed.canteens:
        where = f"canteens[id={c.id}]"
        if c.id in seen:
            raise ConfigError(f"{where}: duplicate canteen id; each must be unique")
        seen.add(c.id)
        if c.weather_meter is not None:
            kinds = {m.id: m.kind for m in cfg.meters}
            if kinds.get(c.weather_meter) != "weather":
                raise ConfigError(f"{where}.weather_meter: no meter of kind 'weather' with id "
                                  f"{c.weather_meter!r}")
        for utility in c.targets:
            if not any(m.canteen == c.id and m.kind == utility for m in cfg.meters):
                raise ConfigError(f"{where}.targets.{utility}: no meter of kind {utility!r} "
                                  f"has canteen = {c.id!r}")
    for m in cfg.meters:
        if m.canteen is not None and m.canteen not in seen:
            raise ConfigError(f"meters[id={m.id}].canteen: no [[canteens]] with id "
                              f"{m.canteen!r}; expected one of {sorted(seen)}")
    return parsed.canteens, parsed.reports
