"""The meterd TOML configuration: one file, validated once at load, errors that name the key.

Every key is documented in ``docs/configuration.md``. Secrets are never inline: they come from a
``*_file`` key or an environment variable (see :mod:`meterd.secrets`).
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meterd.fields import FIELDS
from meterd.profiles import Profile, builtin_profiles


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteConfig(_Section):
    name: str = "meterd site"
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"expected an IANA time zone such as 'Asia/Shanghai', got {v!r}") from exc
        return v


class InfluxConfig(_Section):
    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = "campus"
    retention_policy: str | None = None
    username: str | None = None
    password_file: Path | None = None
    org: str | None = None
    bucket: str | None = None
    token_file: Path | None = None
    create_database: bool = True
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    max_backoff_s: float = Field(default=300.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _v2_needs_org_bucket(self) -> InfluxConfig:
        if self.api == "v2" and not (self.org and self.bucket):
            raise ValueError("api = 'v2' needs both 'org' and 'bucket' (and token_file or $INFLUX_TOKEN)")
        return self


class MqttConfig(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "meterd"
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=60, ge=5)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    protocol: Literal["5", "3.1.1"] = "5"

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {v!r}")
        return v


class SpoolConfig(_Section):
    dir: Path = Path("/var/lib/meterd")
    max_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    on_full: Literal["block", "drop_oldest"] = "block"


class LinkConfig(_Section):
    name: str = Field(min_length=1)
    url: str
    interval_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)
    backoff_max_s: float = Field(default=600.0, gt=0)

    @field_validator("url")
    @classmethod
    def _link_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme in ("tcp", "rtu+tcp"):
            if not parts.hostname:
                raise ValueError(f"expected {parts.scheme}://host:port, got {v!r}")
        elif parts.scheme == "rtu":
            if not parts.path:
                raise ValueError(f"expected rtu:///dev/ttyUSB0?baudrate=9600, got {v!r}")
        else:
            raise ValueError(f"expected tcp://, rtu+tcp:// or rtu:// URL, got {v!r}")
        return v


class MeterConfig(_Section):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    kind: Literal["electricity", "water", "gas", "heat", "weather"]
    campus: str = ""
    building: str = ""
    canteen: str | None = None
    parent: str | None = None
    # Modbus
    link: str | None = None
    unit_id: int | None = Field(default=None, ge=0, le=247)
    profile: str | None = None
    function: Literal[3, 4] | None = None
    # MQTT
    mqtt_topic: str | None = None
    mqtt_map: dict[str, str] = Field(default_factory=dict)
    mqtt_scale: dict[str, float] = Field(default_factory=dict)
    mqtt_ts_key: str = "ts"
    # Derivation of consumption from cumulative registers
    register_max: float | None = Field(default=None, gt=0)
    max_rate_per_h: float | None = Field(default=None, gt=0)
    # Leak detection hints
    normally_zero: bool | Literal["auto"] = "auto"
    accuracy: float = Field(default=0.02, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_source(self) -> MeterConfig:
        modbus = self.link is not None
        if modbus == (self.mqtt_topic is not None):
            raise ValueError("set either 'link' (Modbus, with unit_id and profile) or 'mqtt_topic'")
        if modbus and (self.unit_id is None or self.profile is None):
            raise ValueError("a Modbus meter needs 'unit_id' and 'profile'")
        allowed = set(FIELDS[self.kind])
        bad = sorted(set(self.mqtt_map.values()) - allowed)
        if bad:
            raise ValueError(f"mqtt_map targets {bad} are not {self.kind} fields {sorted(allowed)}")
        return self

    @property
    def tags(self) -> dict[str, str]:
        tags = {"meter": self.id, "campus": self.campus, "building": self.building}
        if self.canteen:
            tags["canteen"] = self.canteen
        return {k: v for k, v in tags.items() if v}


class CalendarConfig(_Section):
    breaks: list[tuple[date, date]] = Field(default_factory=list)
    holidays: list[date] = Field(default_factory=list)


class TariffConfig(_Section):
    water_per_m3: float = Field(default=0.0, ge=0)
    electricity_per_kwh: float = Field(default=0.0, ge=0)
    gas_per_m3: float = Field(default=0.0, ge=0)
    heat_per_kwh: float = Field(default=0.0, ge=0)
    currency: str = "CNY"


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class Config(_Section):
    site: SiteConfig = Field(default_factory=SiteConfig)
    influxdb: InfluxConfig = Field(default_factory=InfluxConfig)
    mqtt: MqttConfig | None = None
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    links: list[LinkConfig] = Field(default_factory=list)
    meters: list[MeterConfig] = Field(default_factory=list)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    tariffs: TariffConfig = Field(default_factory=TariffConfig)
    # Sections owned by the analysis, alert and report features; validated by their own models.
    leaks: dict[str, Any] = Field(default_factory=dict)
    canteens: list[dict[str, Any]] = Field(default_factory=list)
    alerts: dict[str, Any] = Field(default_factory=dict)
    reports: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross_refs(self) -> Config:
        _check_unique("links", [lk.name for lk in self.links])
        _check_unique("meters", [m.id for m in self.meters])
        links = {lk.name for lk in self.links}
        ids = {m.id for m in self.meters}
        profiles = self.all_profiles()
        for m in self.meters:
            if m.link is not None and m.link not in links:
                raise ConfigError(f"meters[id={m.id}].link: no [[links]] named {m.link!r}; "
                                  f"expected one of {sorted(links)}")
            if m.profile is not None and m.profile not in profiles:
                raise ConfigError(f"meters[id={m.id}].profile: unknown profile {m.profile!r}; "
                                  f"expected one of {sorted(profiles)}")
            if m.profile in profiles:
                extra = sorted({r.field for r in profiles[m.profile].registers} - set(FIELDS[m.kind]))
                if extra:
                    raise ConfigError(f"meters[id={m.id}].profile: {m.profile!r} reads {extra}, which "
                                      f"are not {m.kind} fields {list(FIELDS[m.kind])}")
            if m.parent is not None and m.parent not in ids:
                raise ConfigError(f"meters[id={m.id}].parent: no meter with id {m.parent!r}")
            if m.mqtt_topic is not None and self.mqtt is None:
                raise ConfigError(f"meters[id={m.id}].mqtt_topic: needs an [mqtt] section")
        return self

    def all_profiles(self) -> dict[str, Profile]:
        return {**builtin_profiles(), **self.profiles}

    def profile_for(self, meter: MeterConfig) -> Profile:
        """The meter's register map, with its ``function`` override applied."""
        assert meter.profile is not None
        prof = self.all_profiles()[meter.profile]
        if meter.function is not None and meter.function != prof.function:
            prof = prof.model_copy(update={"function": meter.function})
        return prof

    def meter(self, meter_id: str) -> MeterConfig:
        for m in self.meters:
            if m.id == meter_id:
                return m
        raise KeyError(meter_id)


def _check_unique(section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{section}: duplicate name {n!r}; each must be unique")
        seen.add(n)


def _item_label(item: Any, index: int) -> str:
    if isinstance(item, dict):
        for key in ("id", "name"):
            if isinstance(item.get(key), str):
                return f"[{key}={item[key]}]"
    return f"[{index}]"


def _describe(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """Render a pydantic error location, naming list items by their id or name."""
    out: list[str] = []
    node: Any = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
            out[-1] += _item_label(node, part)
            continue
        out.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return ".".join(out) or "<top level>"


_SECRET_WORDS = ("password", "token", "secret", "key")


def _format_error(err: Any, raw: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    where = f"{_describe(loc, raw)}: " if loc else ""
    msg = err["msg"].removeprefix("Value error, ")
    key = str(loc[-1]) if loc else ""
    secret = any(w in key.lower() for w in _SECRET_WORDS)
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + ("; secrets are never inline: use the *_file key or the environment"
                               if secret else "; see docs/configuration.md")
    elif err["type"] != "value_error" and not secret and not isinstance(err["input"], dict | list):
        msg += f" (got {err['input']!r})"
    return where + msg


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document; raise :class:`ConfigError` naming every bad key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(err, raw) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a meterd TOML config file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(raw)
