"""Time expressions of a turn resolved against the time it was said."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mnemic.operation.reader.dates import date_keys, resolve_dates

SAID = datetime(2023, 5, 25, 13, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("I went to a support group yesterday", date(2023, 5, 24), date(2023, 5, 24)),
        ("I ran a charity race last Saturday", date(2023, 5, 20), date(2023, 5, 20)),
        ("joined a group last Tues.", date(2023, 5, 23), date(2023, 5, 23)),
        ("last night was amazing", date(2023, 5, 24), date(2023, 5, 24)),
        ("we're going camping next month", date(2023, 6, 1), date(2023, 6, 30)),
        ("we went camping two weekends ago", date(2023, 5, 13), date(2023, 5, 14)),
        ("my school event last week", date(2023, 5, 15), date(2023, 5, 21)),
        ("a friend made it ten years ago", date(2013, 1, 1), date(2013, 12, 31)),
        ("3 weeks ago", date(2023, 5, 4), date(2023, 5, 4)),
        ("two months ago", date(2023, 3, 1), date(2023, 3, 31)),
        ("the move is in three days", date(2023, 5, 28), date(2023, 5, 28)),
        ("on 4 July 2023 we met", date(2023, 7, 4), date(2023, 7, 4)),
        ("see you tomorrow", date(2023, 5, 26), date(2023, 5, 26)),
        ("I moved to Lisbon in May", date(2023, 5, 1), date(2023, 5, 31)),
        ("we met back in August", date(2022, 8, 1), date(2022, 8, 31)),
        ("in March 2021 we met", date(2021, 3, 1), date(2021, 3, 31)),
    ],
)
def test_resolves_against_the_time_said(text: str, start: date, end: date) -> None:
    (resolved,) = resolve_dates(text, SAID)
    assert (resolved.start, resolved.end) == (start, end)


def test_keys_carry_the_day_said_and_the_days_meant() -> None:
    keys = date_keys("I went there yesterday and again last Saturday", SAID)
    assert keys == "on 25 May 2023 (Thursday); yesterday: 24 May 2023; last Saturday: 20 May 2023"
    assert date_keys("no time here", None) == ""
    assert date_keys("no time here", SAID) == "on 25 May 2023 (Thursday)"


def test_may_the_verb_is_not_a_date() -> None:
    assert resolve_dates("I may go, you may not", SAID) == []
