"""Time expressions in queries."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mnemic.operation.retrieval.timeparse import parse_time_range

NOW = datetime(2023, 6, 15, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "start", "end"),
    [
        ("Where did Joanna travel to in July 2022?", date(2022, 7, 1), date(2022, 8, 1)),
        ("What did she share on October 13, 2023?", date(2023, 10, 13), date(2023, 10, 14)),
        ("What did Nate do on 25 May, 2022?", date(2022, 5, 25), date(2022, 5, 26)),
        ("the 3rd of March 2021", date(2021, 3, 3), date(2021, 3, 4)),
        ("at the beginning of November 2022", date(2022, 11, 1), date(2022, 12, 1)),
        ("on 2022-07-04", date(2022, 7, 4), date(2022, 7, 5)),
        ("What happened in 2021?", date(2021, 1, 1), date(2022, 1, 1)),
        ("last May", date(2023, 5, 1), date(2023, 6, 1)),
        ("last year", date(2022, 1, 1), date(2023, 1, 1)),
        ("yesterday", date(2023, 6, 14), date(2023, 6, 15)),
        ("between May 2022 and July 2022", date(2022, 5, 1), date(2022, 8, 1)),
        # ranges that name their month or year once
        ("What happened from 3 to 9 July 2023?", date(2023, 7, 3), date(2023, 7, 10)),
        ("between 3 and 9 July 2023", date(2023, 7, 3), date(2023, 7, 10)),
        ("July 3-9, 2023", date(2023, 7, 3), date(2023, 7, 10)),
        ("between May and July 2023", date(2023, 5, 1), date(2023, 8, 1)),
        ("between August 11 and August 15 2023", date(2023, 8, 11), date(2023, 8, 16)),
        # parts of a month or year
        ("early March 2023", date(2023, 3, 1), date(2023, 3, 11)),
        ("in mid-May 2023", date(2023, 5, 11), date(2023, 5, 21)),
        ("late February 2023", date(2023, 2, 21), date(2023, 3, 1)),
        ("What happened in late 2022?", date(2022, 9, 1), date(2023, 1, 1)),
        ("early 2023", date(2023, 1, 1), date(2023, 5, 1)),
        # weeks and weekends (5 June 2023 is a Monday, 8 July 2023 a Saturday)
        ("the week of 7 June 2023", date(2023, 6, 5), date(2023, 6, 12)),
        ("the weekend of July 8, 2023", date(2023, 7, 8), date(2023, 7, 10)),
        ("the first weekend of August 2023", date(2023, 8, 5), date(2023, 8, 7)),
        ("the last weekend of July 2023", date(2023, 7, 29), date(2023, 7, 31)),
        ("the second week of March 2023", date(2023, 3, 8), date(2023, 3, 15)),
        # no year: the latest such day up to now (15 June 2023)
        ("on May 3", date(2023, 5, 3), date(2023, 5, 4)),
        ("on 25 December", date(2022, 12, 25), date(2022, 12, 26)),
        # a range that is no range: only the month it names
        ("between 31 and 40 February 2023", date(2023, 2, 1), date(2023, 3, 1)),
        ("from July to May 2023", date(2023, 5, 1), date(2023, 6, 1)),
    ],
)
def test_spans(query: str, start: date, end: date) -> None:
    span = parse_time_range(query, NOW)
    assert span is not None
    assert (span.start.date(), span.end.date()) == (start, end)


@pytest.mark.parametrize(
    "query",
    [
        "May I ask what you like?",
        "What is 2022 * 3?",
        "no time here",
    ],
)
def test_no_time(query: str) -> None:
    assert parse_time_range(query, NOW) is None


def test_ago_is_approximate() -> None:
    span = parse_time_range("3 weeks ago", NOW)
    assert span is not None and span.contains(datetime(2023, 5, 25, tzinfo=UTC))
