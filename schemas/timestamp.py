"""Time as Rust agents stamp it: :class:`Timestamp`, nanoseconds since the Unix epoch.

A Python ``datetime`` keeps only microseconds; chrono keeps nanoseconds and
writes them as RFC 3339 with the fewest exact fraction digits (0, 3, 6 or 9).
Dates are computed with integer arithmetic over the proleptic Gregorian
calendar, so every year chrono can hold (-262143 ..= 262142) is written as it
writes it (``+10000-01-01T00:00:00Z``, ``-0001-...``).
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["Timestamp"]

_NS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"(?P<year>[+-]\d{4,6}|\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})[Tt ]"  # chrono: 1-2 digits
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:?\d{2})\Z"
)
# chrono's DateTime<Utc> spans years -262143 ..= 262142.
_MIN_YEAR = -262_143
_MAX_YEAR = 262_142


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


@functools.lru_cache(maxsize=4096)
def _date_text(days: int) -> str:
    """``YYYY-MM-DD`` as chrono writes the date ``days`` after the epoch (signed beyond 0..9999)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    if 0 <= year <= 9999:
        return f"{year:04d}-{month:02d}-{day:02d}"
    return f"{year:+05d}-{month:02d}-{day:02d}"


@functools.lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a second since the epoch (events share seconds: cached)."""
    days, second_of_day = divmod(seconds, 86_400)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{_date_text(days)}T{hour:02d}:{minute:02d}:{second:02d}"


class Timestamp(int):
    """A UTC instant in nanoseconds since the Unix epoch, written as chrono writes it.

    It is an ``int`` so that it costs nothing to compare, sort and put on the wire
    (Avro ``timestamp-nanos``); :meth:`isoformat` gives the serde/chrono text.
    Any instant chrono's ``DateTime<Utc>`` can hold is representable; the Avro
    ``long`` on the wire holds 1677-09-21 ..= 2262-04-11.
    """

    __slots__ = ()

    @classmethod
    def now(cls) -> Timestamp:
        """The current time, to the nanosecond the OS gives."""
        return cls(time.time_ns())

    @classmethod
    def from_datetime(cls, value: datetime) -> Timestamp:
        """Convert an aware ``datetime`` (microsecond precision at most)."""
        if value.tzinfo is None:
            raise ValueError(
                f"timestamp {value.isoformat()} has no time zone; give an aware UTC datetime"
            )
        delta = value - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return cls(micros * 1_000)

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse RFC 3339 text (any offset, up to nanosecond fraction) as chrono's serde does."""
        match = _RFC3339.match(text)
        if match is None:
            raise ValueError(
                f"timestamp {text!r} is not RFC 3339 (e.g. 2024-05-01T12:00:00.123456789Z)"
            )
        fraction = match["fraction"] or ""
        # chrono reads at most nanoseconds and ignores further digits.
        nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
        year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
        hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
        if not (
            _MIN_YEAR <= year <= _MAX_YEAR
            and 1 <= month <= 12
            and 1 <= day <= calendar.monthrange(year % 400 + 2000, month)[1]
            and hour <= 23
            and minute <= 59
            and second <= 60  # 60: a leap second, read as the next second
        ):
            raise ValueError(f"timestamp {text!r} is not a valid date and time")
        offset = match["offset"]
        offset_seconds = 0
        if offset not in ("Z", "z"):
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            offset_seconds = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        seconds = (
            _days_from_civil(year, month, day) * 86_400
            + hour * 3600
            + minute * 60
            + second
            - offset_seconds
        )
        return cls(seconds * _NS_PER_SECOND + nanos)

    def to_datetime(self) -> datetime:
        """The instant as an aware UTC ``datetime`` (nanoseconds truncated to microseconds)."""
        return _EPOCH + timedelta(microseconds=int(self) // 1_000)

    def isoformat(self) -> str:
        """chrono's serde text: RFC 3339 with ``Z``; fraction of 0, 3, 6 or 9 digits, the fewest exact."""  # noqa: E501
        seconds, nanos = divmod(int(self), _NS_PER_SECOND)
        if nanos == 0:
            return _second_text(seconds) + "Z"
        if nanos % 1_000_000 == 0:
            return f"{_second_text(seconds)}.{nanos // 1_000_000:03d}Z"
        if nanos % 1_000 == 0:
            return f"{_second_text(seconds)}.{nanos // 1_000:06d}Z"
        return f"{_second_text(seconds)}.{nanos:09d}Z"

    def __repr__(self) -> str:
        return f"Timestamp({self.isoformat()!r})"

    @classmethod
    def _validate(cls, value: Any, info: core_schema.ValidationInfo) -> Timestamp:
        if isinstance(value, Timestamp):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if info.context is not None and info.context.get("serde"):
            # serde's chrono reads only RFC 3339 text.
            raise ValueError(
                f"a timestamp in JSON must be RFC 3339 text, not {type(value).__name__}"
            )
        if isinstance(value, bool):
            raise ValueError("a timestamp cannot be a boolean")
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, datetime):
            return cls.from_datetime(value)
        raise ValueError(
            f"a timestamp must be RFC 3339 text, nanoseconds since the epoch or an aware datetime, "
            f"not {type(value).__name__}"
        )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.isoformat(), when_used="json"
            ),
        )
