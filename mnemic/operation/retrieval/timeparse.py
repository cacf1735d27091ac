"""Time expressions in queries, without an LLM: "in July 2022", "on 25 May, 2022",
"October 13, 2023", "2022-07-04", "in 2021", "last May", "last year", "yesterday",
"3 weeks ago". Each becomes a half-open UTC range [start, end) of what the query is about.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = {name.lower(): n for n, name in enumerate(calendar.month_name) if name}
MONTHS |= {name.lower(): n for n, name in enumerate(calendar.month_abbr) if name}
MONTHS["sept"] = 9
_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d{2})"

# most specific first; "may" the verb is excluded by requiring a day or year next to it
_PATTERNS = [
    ("day", re.compile(rf"\b(?P<iso>{_YEAR}-(?P<m>\d{{2}})-(?P<d>\d{{2}}))\b")),
    ("day", re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.I)),
    ("day", re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.I)),
    ("month", re.compile(rf"\b{_MONTH},?\s+(?:of\s+)?{_YEAR}\b", re.I)),
    ("year", re.compile(rf"\b(?:in|during|of|since|year|until|by)\s+{_YEAR}\b", re.I)),
]
_RELATIVE = re.compile(
    r"\b(?:(?P<yesterday>yesterday)|(?P<today>today)"
    r"|(?P<which>last|this|past)\s+(?P<unit>week|month|year|weekend)"
    r"|last\s+(?P<lmonth>" + "|".join(m for m in MONTHS if len(m) > 3 or m == "may") + r")"
    r"|(?P<n>\d+|a|an|one|two|three|four|five|six)\s+(?P<agounit>days?|weeks?|months?|years?)"
    r"\s+ago)\b",
    re.I,
)
_WORD_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime  # exclusive
    text: str  # the expression it came from

    def contains(self, when: datetime, *, slack: timedelta = timedelta(0)) -> bool:
        return self.start <= when < self.end + slack


def _month_range(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def parse_time_range(text: str, now: datetime | None = None) -> TimeRange | None:
    """The span a query's time expressions cover (their union), or None if it names none."""
    now = now or datetime.now(UTC)
    spans: list[TimeRange] = []
    taken: list[tuple[int, int]] = []
    for precision, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue  # already part of a more specific expression
            span = _absolute(precision, m)
            if span is not None:
                spans.append(TimeRange(*span, m.group(0)))
                taken.append((m.start(), m.end()))
    for m in _RELATIVE.finditer(text):
        if any(s < m.end() and m.start() < e for s, e in taken):
            continue
        span = _relative(m, now)
        if span is not None:
            spans.append(TimeRange(*span, m.group(0)))
    if not spans:
        return None
    return TimeRange(
        min(s.start for s in spans), max(s.end for s in spans), "; ".join(s.text for s in spans)
    )


def _absolute(precision: str, m: re.Match[str]) -> tuple[datetime, datetime] | None:
    try:
        year = int(m.group("year"))
        if precision == "year":
            return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        if m.groupdict().get("iso"):
            month, day = int(m.group("m")), int(m.group("d"))
        else:
            month = MONTHS[m.group("month").lower()]
            if precision == "month":
                return _month_range(year, month)
            day = int(m.group("day"))
        start = datetime(year, month, day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    except (ValueError, KeyError):
        return None  # "31 February" and friends: not a date


def _relative(m: re.Match[str], now: datetime) -> tuple[datetime, datetime] | None:
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if m.group("yesterday"):
        return today - timedelta(days=1), today
    if m.group("today"):
        return today, today + timedelta(days=1)
    if m.group("lmonth"):
        month = MONTHS[m.group("lmonth").lower()]
        year = today.year if month < today.month else today.year - 1
        return _month_range(year, month)
    if m.group("unit"):
        unit, which = m.group("unit").lower(), m.group("which").lower()
        if unit in ("week", "weekend"):
            monday = today - timedelta(days=today.weekday())
            start = monday if which == "this" else monday - timedelta(days=7)
            return start, start + timedelta(days=7)
        if unit == "month":
            year, month = today.year, today.month
            if which != "this":
                year, month = (year - 1, 12) if month == 1 else (year, month - 1)
            return _month_range(year, month)
        year = today.year if which == "this" else today.year - 1
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    raw = m.group("n").lower()
    n = _WORD_NUMBERS.get(raw) or int(raw)
    unit = m.group("agounit").lower().rstrip("s")
    days = {"day": 1, "week": 7, "month": 30, "year": 365}[unit] * n
    center = today - timedelta(days=days)
    half = timedelta(days=max(1, days // 4))  # "3 weeks ago" is roughly, not exactly, 21 days
    return center - half, center + half + timedelta(days=1)
