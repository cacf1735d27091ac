"""Dates at ingest: the time expressions of a turn resolved against the session's time.

"I went there yesterday", said on 8 May 2023, is about 7 May 2023; the turn's search keys get
that absolute date (and the session's own date), so "what happened in May 2023" or "on
7 May" finds it by its words, and an extracted event gets the date it happened, not the day
it was mentioned. Query-side parsing lives in :mod:`mnemic.operation.retrieval.timeparse`;
this module reuses its absolute and relative patterns and adds the forms people use about
their own past and plans: weekdays ("last Saturday", "on Friday"), "last night",
"tomorrow", "next week/month/year", "two weekends ago", "in three days".
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from mnemic.operation.retrieval import timeparse

_WEEKDAYS = {name.lower(): n for n, name in enumerate(calendar.day_name)}
_WEEKDAYS |= {name.lower(): n for n, name in enumerate(calendar.day_abbr)}
_WEEKDAYS |= {"tues": 1, "thur": 3, "thurs": 3, "weds": 2}
_WEEKDAY = r"(?P<weekday>" + "|".join(sorted(_WEEKDAYS, key=len, reverse=True)) + r")\.?"
_COUNT = r"(?P<n>\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|a\s+couple\s+of)"
_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
# a month named without a year ("in May"): people mostly tell what happened, so the latest
# such month up to the current one; "may" alone is too often the verb to count without "in"
_MONTHS = "|".join(m for m in timeparse.MONTHS if len(m) > 3 or m == "may")
_UNIT_DAYS = {"day": 1, "night": 1, "week": 7, "weekend": 7, "month": 30, "year": 365}

# forms the query parser does not know, most specific first
_EXTRA = re.compile(
    r"\b(?:"
    rf"(?P<wd_which>last|this|next|past)\s+{_WEEKDAY}"
    r"|(?P<lastnight>last\s+night|yesterday\s+(?:morning|evening|afternoon))"
    r"|(?P<tomorrow>tomorrow|tonight)"
    r"|(?P<next>next)\s+(?P<next_unit>week|weekend|month|year|summer|winter)"
    rf"|{_COUNT}\s+(?P<ago_unit>weekends?|nights?|days?|weeks?|months?|years?)\s+ago"
    rf"|in\s+{_COUNT.replace('?P<n>', '?P<in_n>')}\s+(?P<in_unit>days?|weeks?|months?|years?)"
    rf"|(?:on\s+){_WEEKDAY.replace('?P<weekday>', '?P<on_weekday>')}"
    rf"|(?:in|during|since|back\s+in)\s+(?P<bare_month>{_MONTHS})\b(?!\s*,?\s*\d)"
    r")\b",
    re.I,
)


@dataclass(frozen=True)
class ResolvedDate:
    """A time expression of a text and the day (or span) it means."""

    text: str
    start: date
    end: date  # inclusive; equal to start for a single day

    def render(self) -> str:
        if self.start == self.end:
            return human(self.start)
        if (self.start.month, self.start.day, self.end.month, self.end.day) == (1, 1, 12, 31):
            return (
                str(self.start.year)
                if self.start.year == self.end.year
                else (f"{self.start.year} to {self.end.year}")
            )
        if self.start.day == 1 and self.end == _month_end(self.start):
            return f"{calendar.month_name[self.start.month]} {self.start.year}"
        return f"{human(self.start)} to {human(self.end)}"


def human(day: date | datetime) -> str:
    """``8 May 2023``: the form LoCoMo-style answers and people use."""
    return f"{day.day} {calendar.month_name[day.month]} {day.year}"


def _month_end(day: date) -> date:
    return date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])


def _span(start: datetime, end_exclusive: datetime) -> tuple[date, date]:
    return start.date(), (end_exclusive - timedelta(days=1)).date()


def resolve_dates(text: str, when: datetime) -> list[ResolvedDate]:
    """Every time expression in ``text`` with what it means said at ``when``, in text order."""
    when = when.astimezone(UTC)
    today = when.date()
    found: list[tuple[int, ResolvedDate]] = []
    taken: list[tuple[int, int]] = []

    def free(m: re.Match[str]) -> bool:
        return not any(s < m.end() and m.start() < e for s, e in taken)

    def keep(m: re.Match[str], start: date, end: date) -> None:
        taken.append((m.start(), m.end()))
        found.append((m.start(), ResolvedDate(m.group(0), start, end)))

    for m in _EXTRA.finditer(text):
        span = _extra(m, today)
        if span is not None:
            keep(m, *span)
    for precision, pattern in timeparse._PATTERNS:
        for m in pattern.finditer(text):
            if free(m) and (absolute := timeparse._absolute(precision, m)) is not None:
                keep(m, *_span(*absolute))
    for m in timeparse._RELATIVE.finditer(text):
        if free(m) and (relative := timeparse._relative(m, when)) is not None:
            start, end = _span(*relative)
            if m.group("n"):  # "3 weeks ago": the day itself, not the query's tolerance
                middle = start + (end - start) / 2
                start = end = middle
            keep(m, start, end)
    return [r for _, r in sorted(found, key=lambda pair: pair[0])]


def _count(raw: str) -> int:
    raw = " ".join(raw.lower().split())
    if raw == "a couple of":
        return 2
    return _NUMBERS.get(raw) or int(raw)


def _extra(m: re.Match[str], today: date) -> tuple[date, date] | None:
    if m.group("weekday"):
        target = _WEEKDAYS[m.group("weekday").lower()]
        which = m.group("wd_which").lower()
        delta = (today.weekday() - target) % 7
        if which in ("last", "past"):
            day = today - timedelta(days=delta or 7)
        elif which == "next":
            day = today + timedelta(days=((target - today.weekday()) % 7) or 7)
        else:  # "this Friday": the one in the current week
            day = today - timedelta(days=today.weekday()) + timedelta(days=target)
        return day, day
    if m.group("on_weekday"):
        # "on Friday" in a chat about what happened: the latest such day before today
        target = _WEEKDAYS[m.group("on_weekday").lower()]
        day = today - timedelta(days=((today.weekday() - target) % 7) or 7)
        return day, day
    if m.group("bare_month"):
        month = timeparse.MONTHS[m.group("bare_month").lower()]
        year = today.year if month <= today.month else today.year - 1
        first = date(year, month, 1)
        return first, _month_end(first)
    if m.group("lastnight"):
        day = today - timedelta(days=1)
        return day, day
    if m.group("tomorrow"):
        day = today + timedelta(days=m.group("tomorrow").lower() == "tomorrow")
        return day, day
    if m.group("next"):
        unit = m.group("next_unit").lower()
        if unit in ("week", "weekend"):
            monday = today - timedelta(days=today.weekday()) + timedelta(days=7)
            if unit == "weekend":
                return monday + timedelta(days=5), monday + timedelta(days=6)
            return monday, monday + timedelta(days=6)
        if unit == "month":
            first = _month_end(today) + timedelta(days=1)
            return first, _month_end(first)
        if unit == "year":
            return date(today.year + 1, 1, 1), date(today.year + 1, 12, 31)
        year = today.year + (today.month >= (6 if unit == "summer" else 12))
        if unit == "summer":
            return date(year, 6, 1), date(year, 8, 31)
        return date(year, 12, 1), date(year + 1, 2, 28)
    if m.group("ago_unit"):
        n = _count(m.group("n"))
        unit = m.group("ago_unit").lower().rstrip("s")
        if unit == "weekend":  # the weekend n weeks back: its Saturday and Sunday
            saturday = today - timedelta(days=(today.weekday() - 5) % 7 or 7)
            saturday -= timedelta(days=7 * (n - 1))
            return saturday, saturday + timedelta(days=1)
        if unit == "month":
            year, month = divmod(today.year * 12 + today.month - 1 - n, 12)
            first = date(year, month + 1, 1)
            return first, _month_end(first)
        if unit == "year":
            return date(today.year - n, 1, 1), date(today.year - n, 12, 31)
        day = today - timedelta(days=_UNIT_DAYS[unit] * n)
        return day, day
    if m.group("in_unit"):
        n = _count(m.group("in_n"))
        day = today + timedelta(days=_UNIT_DAYS[m.group("in_unit").lower().rstrip("s")] * n)
        return day, day
    return None


def date_keys(text: str, when: datetime | None) -> str:
    """The line added to a turn's search keys: the day it was said and the days it means.

    ``"on 8 May 2023 (Monday); yesterday: 7 May 2023"``; empty without a time.
    """
    if when is None:
        return ""
    parts = [f"on {human(when)} ({calendar.day_name[when.weekday()]})"]
    for resolved in resolve_dates(text, when):
        parts.append(f"{resolved.text}: {resolved.render()}")
    return "; ".join(parts)
