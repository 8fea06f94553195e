"""``meterd activity import``: meals served (and revenue) per canteen and local date.

The CSV has a header ``date,canteen,meals`` with an optional ``revenue`` column. Every row is
checked before anything is written, so a bad file imports nothing; the error names the line.
Rows are stored in the ``canteen_activity`` measurement (tag ``canteen``; fields ``meals`` and
``revenue`` as floats; time = local midnight of the date in the site time zone).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from meterd.reading import Reading
from meterd.sinks.influx.lineprotocol import encode

MEASUREMENT = "canteen_activity"
REQUIRED = ("date", "canteen", "meals")
OPTIONAL = ("revenue",)


class ActivityError(ValueError):
    """The CSV is not valid; the message names the file, the line and the column."""


@dataclass(frozen=True)
class ActivityRow:
    day: date
    canteen: str
    meals: float
    revenue: float | None


def _number(text: str, column: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ActivityError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise ActivityError(f"{where}: {column} {text!r} must be a finite number >= 0")
    return v


def _header(row: list[str] | None, name: str) -> list[str]:
    cols = [c.strip().lower() for c in row or []]
    missing = [c for c in REQUIRED if c not in cols]
    unknown = [c for c in cols if c not in REQUIRED + OPTIONAL]
    if missing or unknown or len(set(cols)) != len(cols):
        raise ActivityError(f"{name}:1: header must be date,canteen,meals[,revenue]; got "
                            f"{','.join(cols) or 'nothing'}"
                            + (f" (missing {', '.join(missing)})" if missing else "")
                            + (f" (unknown {', '.join(unknown)})" if unknown else ""))
    return cols


def parse_activity(text: str, canteens: Iterable[str], name: str = "<csv>") -> list[ActivityRow]:
    """Parse and check every row; raise :class:`ActivityError` at the first bad one.

    Checks: the header, the column count, ISO dates, known canteen ids, meals and revenue
    finite and non-negative, and no (date, canteen) twice.
    """
    known = set(canteens)
    reader = csv.reader(io.StringIO(text))
    cols = _header(next(reader, None), name)
    rows: list[ActivityRow] = []
    seen: dict[tuple[date, str], int] = {}
    for values in reader:
        line = reader.line_num
        where = f"{name}:{line}"
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(cols):
            raise ActivityError(f"{where}: expected {len(cols)} columns ({','.join(cols)}), "
                                f"got {len(values)}")
        rec = {c: v.strip() for c, v in zip(cols, values, strict=True)}
        try:
            day = date.fromisoformat(rec["date"])
        except ValueError:
            raise ActivityError(f"{where}: date {rec['date']!r} is not YYYY-MM-DD") from None
        if rec["canteen"] not in known:
            raise ActivityError(f"{where}: canteen {rec['canteen']!r} is not in [[canteens]]; "
                                f"expected one of {sorted(known)}")
        key = (day, rec["canteen"])
        if key in seen:
            raise ActivityError(f"{where}: {rec['canteen']} on {day} already given on line "
                                f"{seen[key]}")
        seen[key] = line
        revenue = rec.get("revenue", "")
        rows.append(ActivityRow(day, rec["canteen"], _number(rec["meals"], "meals", where),
                                _number(revenue, "revenue", where) if revenue else None))
    return rows


def to_lines(rows: Iterable[ActivityRow], tz: str) -> list[str]:
    """Line protocol for ``rows``, each at local midnight of its date in ``tz``."""
    zone = ZoneInfo(tz)
    out = []
    for r in rows:
        ts_s = int(datetime(r.day.year, r.day.month, r.day.day, tzinfo=zone).timestamp())
        fields = {"meals": r.meals}
        if r.revenue is not None:
            fields["revenue"] = r.revenue
        out.append(encode(Reading(MEASUREMENT, {"canteen": r.canteen}, fields,
                                  ts_s * 1_000_000_000)))
    return out


def import_activity(path: str | Path, canteens: Iterable[str], tz: str,
                    write_lines: Callable[[list[str]], None]) -> int:
    """Check the whole CSV at ``path``, then write it with one call; return the row count."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ActivityError(f"{p}: cannot read: {exc}") from None
    rows = parse_activity(text, canteens, str(p))
    if rows:
        write_lines(to_lines(rows, tz))
    return len(rows)
