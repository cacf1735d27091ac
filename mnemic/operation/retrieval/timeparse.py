"""Time expressions in queries, without an LLM: "in July 2022", "on 25 May, 2022",
"October 13, 2023", "2022-07-04", "in 2021", "last May", "last year", "yesterday",
"3 weeks ago"; ranges ("3 to 9 July 2023", "July 3-9, 2023", "between May and July 2023",
"between August 11 and August 15 2023"), parts ("early March 2023", "late 2022", "the week
of 5 June 2023", "the first weekend of August 2023"). Each becomes a half-open UTC range
[start, end) of what the query is about; several in one query give the span of them all.

A day without a year ("August 11") takes the year of the dated expression that follows it
in the query ("... and August 15 2023"), or else its latest occurrence up to now.
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
_MONTH0 = _MONTH.replace("?P<month>", "?P<month0>")  # the first month of a range
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d{2})"
_TO = r"\s*(?:-|–|to|until|till|through|and)\s*"
_PART = r"(?P<part>early|mid|late)[\s-]+"
_NTH = r"(?P<nth>first|second|third|fourth|last)\s+"

# most specific first; "may" the verb is excluded by requiring a day or year next to it
_PATTERNS = [
    (
        "days",
        re.compile(
            rf"\b{_DAY}{_TO}(?P<day2>[0-3]?\d)(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b",
            re.I,
        ),
    ),
    (
        "days",
        re.compile(
            rf"\b{_MONTH}\s+{_DAY}{_TO}(?P<day2>[0-3]?\d)(?:st|nd|rd|th)?,?\s+{_YEAR}\b", re.I
        ),
    ),
    (
        "months",
        re.compile(rf"\b{_MONTH0}{_TO}{_MONTH},?\s+{_YEAR}\b", re.I),
    ),
    (
        "week",
        re.compile(
            rf"\b(?P<unit>week(?:end)?)\s+of\s+{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.I
        ),
    ),
    (
        "week",
        re.compile(rf"\b(?P<unit>week(?:end)?)\s+of\s+{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.I),
    ),
    (
        "nth",
        re.compile(rf"\b{_NTH}(?P<unit>week(?:end)?)\s+(?:of|in)\s+{_MONTH},?\s+{_YEAR}\b", re.I),
    ),
    ("day", re.compile(rf"\b(?P<iso>{_YEAR}-(?P<m>\d{{2}})-(?P<d>\d{{2}}))\b")),
    ("day", re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.I)),
    ("day", re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.I)),
    ("month", re.compile(rf"\b(?:{_PART})?{_MONTH},?\s+(?:of\s+)?{_YEAR}\b", re.I)),
    ("year", re.compile(rf"\b{_PART}{_YEAR}\b", re.I)),
    ("year", re.compile(rf"\b(?:in|during|of|since|year|until|by)\s+{_YEAR}\b", re.I)),
]
# a day and month with no year next to them: "August 11", "11 August"
_YEARLESS = [
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}\b(?!,?\s+(?:19|20)\d{{2}})", re.I),
    re.compile(rf"\b{_MONTH}\s+{_DAY}\b(?!,?\s+(?:19|20)\d{{2}})(?!\s*(?:-|–|to|through))", re.I),
]
_ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3}
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
    years: list[tuple[int, int]] = []  # (position, year) of each dated expression

    def free(m: re.Match[str]) -> bool:
        return not any(s < m.end() and m.start() < e for s, e in taken)

    for precision, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if not free(m):
                continue  # already part of a more specific expression
            span = _absolute(precision, m)
            if span is not None:
                spans.append(TimeRange(*span, m.group(0)))
                taken.append((m.start(), m.end()))
                years.append((m.start(), int(m.group("year"))))
    for pattern in _YEARLESS:
        for m in pattern.finditer(text):
            if not free(m):
                continue
            later = [year for at, year in sorted(years) if at > m.start()]
            span = _yearless(m, later[0] if later else None, now)
            if span is not None:
                spans.append(TimeRange(*span, m.group(0)))
                taken.append((m.start(), m.end()))
    for m in _RELATIVE.finditer(text):
        if not free(m):
            continue
        span = _relative(m, now)
        if span is not None:
            spans.append(TimeRange(*span, m.group(0)))
    if not spans:
        return None
    return TimeRange(
        min(s.start for s in spans), max(s.end for s in spans), "; ".join(s.text for s in spans)
    )


def _day(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _part(start: datetime, end: datetime, part: str | None) -> tuple[datetime, datetime]:
    """The early, mid or late part of a month (days 1-10, 11-20, 21-end) or of a year
    (January-April, May-August, September-December); the whole span without a part."""
    if not part:
        return start, end
    i = {"early": 0, "mid": 1, "late": 2}[part.lower()]
    if (end - start).days > 31:  # a year: four months a part
        return _day(start.year, 1 + 4 * i, 1), end if i == 2 else _day(start.year, 5 + 4 * i, 1)
    return start + timedelta(days=10 * i), end if i == 2 else start + timedelta(days=10 * i + 10)


def _week(when: datetime, weekend: bool) -> tuple[datetime, datetime]:
    """The Monday-to-Sunday week of a day, or that week's Saturday and Sunday."""
    monday = when - timedelta(days=when.weekday())
    start = monday + timedelta(days=5) if weekend else monday
    return start, monday + timedelta(days=7)


def _absolute(precision: str, m: re.Match[str]) -> tuple[datetime, datetime] | None:
    try:
        year = int(m.group("year"))
        groups = m.groupdict()
        if precision == "year":
            return _part(_day(year, 1, 1), _day(year + 1, 1, 1), groups.get("part"))
        if groups.get("iso"):
            start = _day(year, int(m.group("m")), int(m.group("d")))
            return start, start + timedelta(days=1)
        month = MONTHS[m.group("month").lower()]
        if precision == "month":
            return _part(*_month_range(year, month), groups.get("part"))
        if precision == "months":
            first = MONTHS[m.group("month0").lower()]
            if first > month:
                return None
            return _month_range(year, first)[0], _month_range(year, month)[1]
        if precision == "nth":
            return _nth_week(year, month, m.group("nth").lower(), m.group("unit"))
        day = int(m.group("day"))
        if precision == "days":
            first, last = sorted((day, int(m.group("day2"))))
            return _day(year, month, first), _day(year, month, last) + timedelta(days=1)
        if precision == "week":
            return _week(_day(year, month, day), m.group("unit").lower() == "weekend")
        start = _day(year, month, day)
        return start, start + timedelta(days=1)
    except (ValueError, KeyError):
        return None  # "31 February" and friends: not a date


def _nth_week(year: int, month: int, nth: str, unit: str) -> tuple[datetime, datetime]:
    """ "The first weekend of August 2023": its nth (or last) Saturday and Sunday; "the
    second week of ...": days 8-14 (the last week: the month's last seven days)."""
    start, end = _month_range(year, month)
    if unit.lower() == "weekend":
        saturdays = [
            start + timedelta(days=d)
            for d in range((end - start).days)
            if (start + timedelta(days=d)).weekday() == 5
        ]
        saturday = saturdays[-1] if nth == "last" else saturdays[_ORDINALS[nth]]
        return saturday, saturday + timedelta(days=2)
    if nth == "last":
        return end - timedelta(days=7), end
    first = start + timedelta(days=7 * _ORDINALS[nth])
    return first, first + timedelta(days=7)


def _yearless(
    m: re.Match[str], year: int | None, now: datetime
) -> tuple[datetime, datetime] | None:
    """A day and month whose year is the next dated expression's, else their latest
    occurrence up to ``now``."""
    try:
        month, day = MONTHS[m.group("month").lower()], int(m.group("day"))
        if year is None:
            year = now.year
            if (month, day) > (now.month, now.day):
                year -= 1
        start = _day(year, month, day)
    except (ValueError, KeyError):
        return None
    return start, start + timedelta(days=1)


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
