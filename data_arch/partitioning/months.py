"""UTC calendar-month arithmetic for partition bounds. Pure functions, no database."""

from __future__ import annotations

import datetime as dt

__all__ = ["MAX_MONTHS", "add_months", "month_start", "subtract_months"]

#: The widest --ahead/--retain accepted: a hundred years keeps every bound inside datetime's range.
MAX_MONTHS = 1200


def month_start(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    return dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)


def add_months(start: dt.datetime, months: int) -> dt.datetime:
    index = start.year * 12 + start.month - 1 + months
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)


def subtract_months(moment: dt.datetime, months: int) -> dt.datetime:
    """``moment`` minus calendar months, clamping the day (31 Mar - 1 month = 28/29 Feb)."""
    first = add_months(month_start(moment), -months)
    following = add_months(first, 1)
    day = min(moment.day, (following - first).days)
    return moment.astimezone(dt.UTC).replace(year=first.year, month=first.month, day=day)
