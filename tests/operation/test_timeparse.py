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
    ],
)
def test_spans(query: str, start: date, end: date) -> None:
    span = parse_time_range(query, NOW)
    assert span is not None
    assert (span.start.date(), span.end.date()) == (start, end)


@pytest.mark.parametrize("query", ["May I ask what you like?", "What is 2022 * 3?", "no time here"])
def test_no_time(query: str) -> None:
    assert parse_time_range(query, NOW) is None


def test_ago_is_approximate() -> None:
    span = parse_time_range("3 weeks ago", NOW)
    assert span is not None and span.contains(datetime(2023, 5, 25, tzinfo=UTC))
