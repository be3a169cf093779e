"""When a rule is armed: weekly time-of-day windows in a named time zone.

Evaluated from the frame's capture time (never the wall clock) so a replay arms rules exactly as
the live run did. Local time follows the zone's daylight-saving rules via ``zoneinfo``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, field_validator

from pipeline.common.config import StrictModel

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def load_zone(name: str) -> ZoneInfo:
    """A ``ZoneInfo`` or a ``ValueError`` that says what is wrong with the name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris' or 'UTC')"
        ) from None


def parse_hhmm(text: str, *, allow_24: bool = False) -> int:
    """'HH:MM' -> minutes since midnight; '24:00' only where it means the end of the day."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        raise ValueError(f"time {text!r} must be 'HH:MM'")
    hh, mm = text[:2], text[3:]
    if not (hh.isdigit() and mm.isdigit()):
        raise ValueError(f"time {text!r} must be 'HH:MM'")
    h, m = int(hh), int(mm)
    if m > 59 or h > 24 or (h == 24 and (m or not allow_24)):
        raise ValueError(
            f"time {text!r} is out of range (00:00-23:59{', or 24:00' if allow_24 else ''})"
        )
    return h * 60 + m


class Window:
    """One daily window. ``start > end`` spans midnight and belongs to the day it starts on;
    ``start == end`` is the whole day."""

    __slots__ = ("days", "start", "end")

    def __init__(self, days: Iterable[int], start: int, end: int):
        self.days = frozenset(days)
        self.start = start
        self.end = end

    def contains(self, weekday: int, minute: int) -> bool:
        if self.start == self.end:
            return weekday in self.days
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )


class Schedule:
    """Is a rule armed at time ``ts``? Cached per UTC minute: the answer can only change on a
    minute boundary (zone offsets are whole minutes), and the same schedule is asked once per
    frame per camera."""

    __slots__ = ("tz", "windows", "_minute", "_active")

    def __init__(self, timezone: str, windows: Iterable[Window]):
        self.tz = load_zone(timezone)
        self.windows = tuple(windows)
        self._minute: int | None = None
        self._active = False

    def active(self, ts: float) -> bool:
        minute = int(ts // 60)
        if minute != self._minute:
            local = datetime.fromtimestamp(minute * 60, self.tz)
            wd, m = local.weekday(), local.hour * 60 + local.minute
            self._active = any(w.contains(wd, m) for w in self.windows)
            self._minute = minute
        return self._active


# --- config ------------------------------------------------------------------------------


class TimeWindow(StrictModel):
    """``start``-``end`` local time on ``days``; an overnight window (22:00-06:00) belongs to the
    day it starts on; ``start == end`` is the whole day."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(DAYS)
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        parse_hhmm(v)
        return v

    @field_validator("end")
    @classmethod
    def _end(cls, v: str) -> str:
        parse_hhmm(v, allow_24=True)
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one day")
        return v

    def compile(self) -> Window:
        start, end = parse_hhmm(self.start), parse_hhmm(self.end, allow_24=True)
        if end == 24 * 60:
            end = 0 if start == 0 else end  # 00:00-24:00 is the whole day
        return Window((DAYS.index(d) for d in self.days), start, end)


class ScheduleConfig(StrictModel):
    timezone: str = "UTC"
    windows: list[TimeWindow] = Field(min_length=1)
    _compiled: Schedule | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        load_zone(v)
        return v

    def compile(self) -> Schedule:
        """One compiled schedule per rule, shared by every camera (its minute cache too)."""
        if self._compiled is None:
            self._compiled = Schedule(self.timezone, [w.compile() for w in self.windows])
        return self._compiled
