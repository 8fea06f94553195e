"""The ``[leaks]`` section: every key documented here and in ``docs/detection.md``.

``Config.leaks`` is a free dict in the core config; :func:`leaks_config` validates it with the
models below so a typo fails at load with the key named, like the rest of the config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from meterd.config import Config, ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _false_is_off(v: object) -> object:
    """TOML has no null: ``false`` switches such a rule off (None); ``true`` is no number."""
    if v is True:
        raise ValueError("expected a number, or false to switch it off")
    return None if v is False else v


_OffFloat = Annotated[float | None, BeforeValidator(_false_is_off)]


class NightFlowSettings(_Section):
    """``[leaks.night]``: minimum night flow against a robust rolling baseline."""

    enabled: bool = True
    start_h: float = Field(default=2.0, ge=0, lt=24)  # local time, site time zone
    end_h: float = Field(default=5.0, gt=0, le=24)
    window_days: int = Field(default=14, ge=3, le=90)  # unflagged nights in the baseline median
    min_history: int = Field(default=5, ge=2)  # nights before anything is flagged
    allowance_m3h: float = Field(default=0.0015, ge=0)  # legitimate night use + resolution
    allowance_rel: float = Field(default=0.05, ge=0)  # extra allowance, fraction of the baseline
    k_mad: float = Field(default=3.0, ge=0)  # extra allowance in robust std devs
    mad_efficiency: _OffFloat = Field(default=0.37, gt=0, le=1)  # widen k_mad for few nights; false: off
    persist_nights: int = Field(default=2, ge=1)  # consecutive flagged nights to open
    strong_factor: _OffFloat = Field(default=1.5, gt=1)  # net > this × allowance opens at once
    early: bool = False  # flag a strong night from its running minimum, before the window ends
    day_types: bool = True  # baseline from earlier nights of the same kind (weekday/weekend/break)
    learn_margin: float = Field(default=0.5, gt=0, le=1)  # learn only nights below base + this × allowance
    cusum_k: float = Field(default=0.5, ge=0)  # CUSUM of nightly net flow, in allowances
    cusum_h: _OffFloat = Field(default=2.0, gt=0)  # ... opens above this; None: off
    spread_days: int | None = Field(default=56, ge=3, le=365)  # calm nights behind the MAD; None: window_days
    day_scaling: bool = True  # scale the baseline by the day's use where the night follows it
    scaling_days: int = Field(default=56, ge=14, le=365)  # calm and alarmed nights behind that fit
    weekday_profile: bool = True  # lift the baseline on weekdays whose nights run higher
    normally_zero_meters: bool = False  # also run on normally_zero meters (continuous covers them)

    @model_validator(mode="after")
    def _window(self) -> NightFlowSettings:
        if self.start_h == self.end_h:
            raise ValueError("night start_h and end_h must differ")
        return self


class ContinuousFlowSettings(_Section):
    """``[leaks.continuous]``: no quiet hour within a day (Kamstrup/Zenner-style leak rule)."""

    enabled: bool = True
    threshold_m3h: float = Field(default=0.0015, ge=0)  # a bin at or below this is quiet
    window_h: float = Field(default=24.0, gt=0, le=24 * 14)
    quiet_h: float = Field(default=1.0, gt=0)
    all_meters: bool = False  # False: only meters with normally_zero = true
    night_run_h: float | None = Field(default=None, gt=0)  # open at dawn after this long; None: off
    early: bool = True  # also weigh each hour by how rarely this meter flows then (quiet_hours.py)
    early_days: int = Field(default=28, ge=7, le=90)  # history behind the weights and learnt runs
    early_min_days: int = Field(default=7, ge=1)  # observed days per hour before it counts
    early_evidence: float = Field(default=18.0, gt=0)  # evidence (nats) to open
    early_margin: float = Field(default=1.5, ge=1)  # ... and this times the meter's largest recent run


class BurstSettings(_Section):
    """``[leaks.bursts]``: CUSUM/EWMA on residuals against the hour-of-week baseline."""

    enabled: bool = True
    method: Literal["cusum", "ewma"] = "cusum"
    weeks: int = Field(default=4, ge=1, le=12)
    min_weeks: int = Field(default=2, ge=1)
    k: float = Field(default=2.0, ge=0)
    h: float = Field(default=10.0, gt=0)
    min_sigma_m3h: float = Field(default=0.05, gt=0)
    min_excess_m3h: float = Field(default=0.29, ge=0)
    close_bins: int = Field(default=2, ge=1)


class StepSettings(_Section):
    """``[leaks.steps]``: the burst CUSUM on meters that never stop, with floors relative to their
    flow; weeks, k, close_bins and method are ``[leaks.bursts]``'s."""

    enabled: bool = True
    rel_sigma: float = Field(default=0.02, gt=0)  # spread floor, fraction of the baseline
    rel_excess: float = Field(default=0.1, gt=0)  # smallest step, fraction of the baseline
    min_sigma_m3h: float = Field(default=0.003, gt=0)  # ... and at least this (resolution)
    h: float = Field(default=10.0, gt=0)  # CUSUM decision interval (robust σ)
    persist_h: float = Field(default=2.0, gt=0)  # hours the step must have lasted to open
    steady: float = Field(default=0.2, ge=0, le=1)  # 24-h minimum at least this × 24-h mean
    steady_min_m3h: float = Field(default=0.02, ge=0)  # ... and at least this
    # one spread per bin of the day, over about this many days; false: one for all hours
    spread_days: _OffFloat = Field(default=10.0, gt=1)


class BalanceSettings(_Section):
    """``[leaks.balance]``: a parent meter against the sum of its children."""

    enabled: bool = True
    k: float = Field(default=0.5, ge=0)
    h: float = Field(default=8.0, gt=0)
    min_sigma_m3h: float = Field(default=0.003, gt=0)  # ~ hourly 1-litre resolution of a zone
    baseline_days: int = Field(default=7, ge=1)
    night_allowance_m3h: float = Field(default=0.0015, ge=0)  # zone night imbalance: resolution
    resolution_m3: float = Field(default=0.001, ge=0)  # register step of the zone's meters


class OutOfHoursSettings(_Section):
    """``[leaks.out_of_hours]``: use in buildings that should be empty (breaks, nights)."""

    enabled: bool = False
    buildings: list[str] = Field(default_factory=list)  # empty: every building
    night_start_h: float = Field(default=23.0, ge=0, lt=24)
    night_end_h: float = Field(default=6.0, ge=0, lt=24)
    allowance_m3h: float = Field(default=0.05, ge=0)
    min_hours: float = Field(default=3.0, gt=0)


class StoppedSettings(_Section):
    """``[leaks.stopped]``: a meter that does not advance while its zone does."""

    enabled: bool = True
    window_h: float = Field(default=48.0, gt=0)
    zone_min_m3: float = Field(default=1.0, gt=0)  # zone use in the window that makes it suspicious


class ReverseFlowSettings(_Section):
    """``[leaks.reverse]``: a flow sensor whose flow runs backwards (data quality, backflow).

    Off by default: only flow sensors report a signed flow, and on a campus they sit on mains,
    where a looped main may run either way. Name the ones on single-feed supplies."""

    enabled: bool = False
    meters: list[str] = Field(default_factory=list)  # empty: every water meter
    min_h: float = Field(default=1.0, gt=0)  # hours of negative bin means that open it
    tolerance_m3h: float = Field(default=0.0015, ge=0)  # sensor zero jitter: not reverse flow


class LeaksConfig(_Section):
    """``[leaks]``: schedule, resolution and history, then one table per detector."""

    enabled: bool = True
    interval_s: int = Field(default=3600, ge=60)  # how often the daemon runs detection
    step_s: Literal[900, 1800, 3600] = 3600  # grid resolution: the meters' reporting interval
    history_days: int = Field(default=35, ge=7, le=400)  # fetched per run for the baselines
    max_history_days: int = Field(default=400, ge=7)  # ... at most, while an incident is open
    max_interval_s: float | None = Field(default=None, gt=0)  # longer spans bins (default 1.5 steps)
    min_rate_m3h: float = Field(default=0.0, ge=0)  # incidents smaller than this are dropped
    close_after_h: float = Field(default=48.0, ge=0)  # alarm-free hours before an incident closes
    measurement: str = Field(default="incidents", min_length=1)
    # normally_zero = "auto" meters: normally zero when this share of recent days had a quiet hour
    zero_share: float = Field(default=0.5, gt=0, le=1)
    zero_days: int = Field(default=28, ge=7, le=90)  # ... over this many previous days
    zero_min_days: int = Field(default=7, ge=1)  # ... of which at least this many observed
    night: NightFlowSettings = Field(default_factory=NightFlowSettings)
    continuous: ContinuousFlowSettings = Field(default_factory=ContinuousFlowSettings)
    bursts: BurstSettings = Field(default_factory=BurstSettings)
    steps: StepSettings = Field(default_factory=StepSettings)
    balance: BalanceSettings = Field(default_factory=BalanceSettings)
    out_of_hours: OutOfHoursSettings = Field(default_factory=OutOfHoursSettings)
    stopped: StoppedSettings = Field(default_factory=StoppedSettings)
    reverse: ReverseFlowSettings = Field(default_factory=ReverseFlowSettings)


def parse_leaks(raw: dict[str, Any]) -> LeaksConfig:
    """Validate a ``[leaks]`` table; raise :class:`ConfigError` naming each bad key."""
    try:
        return LeaksConfig.model_validate(raw)
    except ValidationError as exc:
        msgs = [f"leaks.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()]
        raise ConfigError("invalid [leaks] section:\n  " + "\n  ".join(msgs)) from None


def leaks_config(cfg: Config) -> LeaksConfig:
    """``cfg``'s ``[leaks]``, its lists of meters and buildings checked against ``[[meters]]``:
    a typo there would leave a rule silently watching nothing."""
    out = parse_leaks(cfg.leaks)
    water = [m for m in cfg.meters if m.kind == "water"]
    for key, names, known, what in (
            ("reverse.meters", out.reverse.meters, {m.id for m in water}, "water meter"),
            ("out_of_hours.buildings", out.out_of_hours.buildings, {m.building for m in water},
             "building of a water meter")):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(f"invalid [leaks] section:\n  leaks.{key}: not a {what}: "
                              + ", ".join(map(repr, unknown)))
    return out
