"""serde's JSON rules as a table: what the real serde answers, and runfold answering the same.

Each row is one JSON line and serde's answer to it (its ``to_string`` after
``from_str``, or ``ERROR`` when it refuses the line), recorded from
``runfold-serde roundtrip-*`` (serde_json 1.0.154 with ``float_roundtrip`` for exact
float reading; the origin's lossy float reading has its own table). With cargo
present, the recorded answers are checked against serde itself; without it they
still hold runfold to them. The rules are summarised in ``test_rust_serde``'s docstring.

Rows where runfold knowingly answers differently are ``xfail(strict=True)`` on
runfold's side, with the reason, so that fixing either side turns the row red
and the table is updated.
"""

from __future__ import annotations

from typing import Any

import pytest

from schemas import Event, Run

pytestmark = pytest.mark.interop

ERROR = "ERROR"
_ID = '{"run_id":"1e54e07d-b232-4bc8-b4a3-772c15e7ea94"'
_TS = '"2024-05-01T12:00:00Z"'
_START = '{"type":"graph_started"}'


def ev(
    ts: str = _TS, kind: str = _START, payload: str = "{}", head: str = _ID, extra: str = ""
) -> str:
    """An Event line with the given parts (already JSON text)."""
    return f'{head},"seq":1{extra},"timestamp":{ts},"kind":{kind},"payload":{payload}}}'


def run(middle: str) -> str:
    """A Run line: identity, then ``middle`` (JSON members), with its own closing brace."""
    return f'{_ID},"agent_spec_digest":"d","git_sha":"g","started_at":{_TS},{middle}}}'


Row = tuple[str, str, str, "str | None"]
"""(id, line, serde's answer, why runfold knowingly answers otherwise or None)."""


def row(name: str, line: str, answer: str, runfold_differs: str | None = None) -> Row:
    return (name, line, answer, runfold_differs)


def params(rows: list[Row], *, runfold: bool) -> list[Any]:
    """pytest params; a known runfold difference is a strict xfail on runfold's side only."""
    return [
        pytest.param(
            line,
            answer,
            id=name,
            marks=([pytest.mark.xfail(strict=True, reason=why)] if runfold and why else []),
        )
        for name, line, answer, why in rows
    ]


def _ts(text: str) -> str:
    return ev(ts=f'"{text}"')


def _payload(text: str) -> str:
    return ev(payload=f"[{text}]")


_RUNFOLD_KEEPS_NO_LEAP_SECOND = (
    "chrono keeps :60; runfold's Timestamp is nanoseconds since the epoch (POSIX time, "
    "no leap seconds), so 23:59:60 reads as the next day's 00:00:00. Leap-second stamps do "
    "not occur from Utc::now()."
)

EVENT_ROWS: list[Row] = [
    # -- timestamps: chrono's text ------------------------------------------------------------
    row("ts-whole", _ts("2024-05-01T12:00:00Z"), _ts("2024-05-01T12:00:00Z")),
    row("ts-1-digit-fraction", _ts("2024-05-01T12:00:00.5Z"), _ts("2024-05-01T12:00:00.500Z")),
    row("ts-ms", _ts("2024-05-01T12:00:00.120Z"), _ts("2024-05-01T12:00:00.120Z")),
    row("ts-us", _ts("2024-05-01T12:00:00.123400Z"), _ts("2024-05-01T12:00:00.123400Z")),
    row("ts-ns", _ts("2024-05-01T12:00:00.000000001Z"), _ts("2024-05-01T12:00:00.000000001Z")),
    row(
        "ts-13-digits-truncated",
        _ts("2024-05-01T12:00:00.1234567899999Z"),
        _ts("2024-05-01T12:00:00.123456789Z"),
    ),
    row("ts-lowercase", _ts("2024-05-01t12:00:00z"), _ts("2024-05-01T12:00:00Z")),
    row("ts-space", _ts("2024-05-01 12:00:00Z"), _ts("2024-05-01T12:00:00Z")),
    row("ts-offset", _ts("2024-05-01T12:00:00+02:00"), _ts("2024-05-01T10:00:00Z")),
    row("ts-offset-no-colon", _ts("2024-05-01T12:00:00-0130"), _ts("2024-05-01T13:30:00Z")),
    row(
        "ts-pre-1970", _ts("1969-12-31T23:59:59.999999999Z"), _ts("1969-12-31T23:59:59.999999999Z")
    ),
    row("ts-year-999", _ts("0999-01-01T00:00:00Z"), _ts("0999-01-01T00:00:00Z")),
    row("ts-year-0", _ts("0000-01-01T00:00:00Z"), _ts("0000-01-01T00:00:00Z")),
    row("ts-year-minus-1", _ts("-0001-01-01T00:00:00Z"), _ts("-0001-01-01T00:00:00Z")),
    row(
        "ts-year-9999", _ts("9999-12-31T23:59:59.999999999Z"), _ts("9999-12-31T23:59:59.999999999Z")
    ),
    row("ts-year-10000", _ts("+10000-01-01T00:00:00Z"), _ts("+10000-01-01T00:00:00Z")),
    row("ts-year-10000-unsigned", _ts("10000-01-01T00:00:00Z"), ERROR),
    row("ts-no-offset", _ts("2024-05-01T12:00:00"), ERROR),
    row("ts-feb-30", _ts("2024-02-30T00:00:00Z"), ERROR),
    row("ts-empty-fraction", _ts("2024-05-01T12:00:00.Z"), ERROR),
    row("ts-integer", ev(ts="1714564800"), ERROR),
    row(
        "ts-leap-second",
        _ts("2016-12-31T23:59:60Z"),
        _ts("2016-12-31T23:59:60Z"),
        _RUNFOLD_KEEPS_NO_LEAP_SECOND,
    ),
    row(
        "ts-leap-second-fraction",
        _ts("2024-05-01T23:59:60.5Z"),
        _ts("2024-05-01T23:59:60.500Z"),
        _RUNFOLD_KEEPS_NO_LEAP_SECOND,
    ),
    row(
        "ts-one-digit-month-day",
        _ts("2024-5-1T12:00:00Z"),
        _ts("2024-05-01T12:00:00Z"),
    ),
    # -- numbers (exact float reading) ----------------------------------------------------------
    *[
        row(f"num-{text}", _payload(text), _payload(answer))
        for text, answer in [
            ("1.0", "1.0"),
            ("0.1", "0.1"),
            ("1e16", "1e+16"),
            ("1e-7", "1e-7"),
            ("1.5e300", "1.5e+300"),
            ("5e-324", "5e-324"),
            ("-0.0", "-0.0"),
            ("-0", "-0.0"),
            ("0", "0"),
            ("123456789.123", "123456789.123"),
            ("1e15", "1000000000000000.0"),
            ("1e21", "1e+21"),
            ("0.00001", "0.00001"),
            ("1e-5", "0.00001"),
            ("1.5e-5", "0.000015"),
            ("0.0001", "0.0001"),
            ("1.5e-6", "1.5e-6"),
            ("1E2", "100.0"),
            ("9007199254740993.0", "9007199254740992.0"),
            ("12345678901234567.0", "1.2345678901234568e+16"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("-1.5e-300", "-1.5e-300"),
            ("18446744073709551615", "18446744073709551615"),
            ("18446744073709551616", "1.8446744073709552e+19"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("-9223372036854775809", "-9.223372036854776e+18"),
            ("1e-400", "0.0"),
            ("2.5e-324", "5e-324"),
        ]
    ],
    *[
        row(f"num-{text}", _payload(text), ERROR)
        for text in ["1e400", "-1e400", "NaN", "Infinity", "01", "1."]
    ],
    # -- strings --------------------------------------------------------------------------------
    *[
        row(f"str-{name}", _payload(text), _payload(answer))
        for name, text, answer in [
            ("unicode-escape-any-case", '"\\u00e9\\u00E9"', '"éé"'),
            ("solidus", '"\\/"', '"/"'),
            ("controls-lowercase-hex", '"\\u001F\\u0001\\u0000"', '"\\u001f\\u0001\\u0000"'),
            ("short-escapes", '"\\u0008\\u000c\\u000a\\u000d\\u0009"', '"\\b\\f\\n\\r\\t"'),
            ("vertical-tab", '"\\u000b"', '"\\u000b"'),
            ("quote-backslash", '"\\"\\\\"', '"\\"\\\\"'),
            ("del-raw", '"\\u007f"', '"\x7f"'),
            ("line-separators-raw", '"\\u2028\\u2029"', '"\u2028\u2029"'),
            ("surrogate-pair", '"\\ud83d\\ude80"', '"🚀"'),
            ("escaped-key", '{"\\u0001k":1,"é":2}', '{"\\u0001k":1,"é":2}'),
        ]
    ],
    row("str-lone-surrogate", _payload('"\\ud800"'), ERROR),
    row("str-reversed-surrogates", _payload('"\\udc00\\ud800"'), ERROR),
    # -- structure --------------------------------------------------------------------------------
    row("payload-duplicate-key", ev(payload='{"b":1,"a":2,"b":3}'), ev(payload='{"b":3,"a":2}')),
    row("payload-any-json", ev(payload="null"), ev(payload="null")),
    row(
        "missing-option-field",
        ev(kind='{"type":"node_exited","node_id":"a","duration_ms":1}'),
        ev(kind='{"type":"node_exited","node_id":"a","next_node":null,"duration_ms":1}'),
    ),
    row(
        "unknown-fields-dropped",
        ev(
            kind='{"duration_ms":1,"x":0,"node_id":"a","next_node":null,"type":"node_exited"}',
            extra=',"x":[1]',
        ),
        ev(kind='{"type":"node_exited","node_id":"a","next_node":null,"duration_ms":1}'),
    ),
    row("missing-payload", f'{_ID},"seq":1,"timestamp":{_TS},"kind":{_START}}}', ERROR),
    row("uuid-upper", ev(head=_ID.upper().replace("RUN_ID", "run_id")), ev()),
    row("uuid-simple", ev(head='{"run_id":"1e54e07db2324bc8b4a3772c15e7ea94"'), ev()),
    row("uuid-braced", ev(head='{"run_id":"{1e54e07d-b232-4bc8-b4a3-772c15e7ea94}"'), ev()),
    row("uuid-urn", ev(head='{"run_id":"urn:uuid:1e54e07d-b232-4bc8-b4a3-772c15e7ea94"'), ev()),
    row("seq-float", ev(extra=',"x":0').replace('"seq":1', '"seq":1.0'), ERROR),
    row("seq-negative", ev().replace('"seq":1', '"seq":-1'), ERROR),
    row(
        "u32-overflow",
        ev(kind='{"type":"graph_completed","iterations":4294967296,"duration_ms":1}'),
        ERROR,
    ),
    row(
        "u64-max",
        ev(
            kind='{"type":"graph_completed","iterations":4294967295,"duration_ms":18446744073709551615}'
        ),
        ev(
            kind='{"type":"graph_completed","iterations":4294967295,"duration_ms":18446744073709551615}'
        ),
    ),
    row("kind-tag-case", ev(kind='{"type":"Graph_Started"}'), ERROR),
    row("kind-as-string", ev(kind='"graph_started"'), ERROR),
    row(
        "duplicate-struct-field",
        ev(extra=',"seq":2'),
        ERROR,
    ),
]

RUN_ROWS: list[Row] = [
    row(
        "run-missing-options",
        run('"status":"RUNNING","inputs":{}'),
        run(
            '"finished_at":null,"status":"RUNNING","inputs":{},"outputs":null,"final_state_digest":null'
        ),
    ),
    row("run-status-case", run('"status":"running","inputs":{}'), ERROR),
    row("run-missing-inputs", run('"status":"RUNNING"'), ERROR),
    row(
        "run-outputs-null",
        run('"status":"COMPLETED","inputs":[],"outputs":null'),
        run(
            '"finished_at":null,"status":"COMPLETED","inputs":[],"outputs":null,"final_state_digest":null'
        ),
    ),
]

# serde_json without `float_roundtrip` (the origin's build) reads these one ULP off.
LOSSY_ROWS: list[Row] = [
    row(text, _payload(text), _payload(answer))
    for text, answer in [
        ("-1.5e-300", "-1.4999999999999998e-300"),
        ("9007199254740993.0", "9007199254740994.0"),
        ("12345678901234567.0", "1.2345678901234566e+16"),
    ]
]


def _runfold_answer(model: Any, line: str) -> str:
    try:
        return str(model.from_json(line).to_json())
    except ValueError:  # pydantic's ValidationError and the codec's errors are ValueErrors
        return ERROR


def _serde_answer(serde_twin: Any, what: str, line: str, *, exact_floats: bool = True) -> str:
    (answer,) = serde_twin.roundtrip(what, [line], exact_floats=exact_floats)
    return ERROR if answer.startswith("ERROR: ") else str(answer)


@pytest.mark.parametrize(("line", "answer"), params(EVENT_ROWS, runfold=False))
def test_serde_answers_event_lines_as_recorded(serde_twin: Any, line: str, answer: str) -> None:
    assert _serde_answer(serde_twin, "events", line) == answer


@pytest.mark.parametrize(("line", "answer"), params(RUN_ROWS, runfold=False))
def test_serde_answers_run_lines_as_recorded(serde_twin: Any, line: str, answer: str) -> None:
    assert _serde_answer(serde_twin, "runs", line) == answer


@pytest.mark.parametrize(("line", "answer"), params(LOSSY_ROWS, runfold=False))
def test_serde_default_float_reading_is_lossy(serde_twin: Any, line: str, answer: str) -> None:
    assert _serde_answer(serde_twin, "events", line, exact_floats=False) == answer


@pytest.mark.parametrize(("line", "answer"), params(EVENT_ROWS, runfold=True))
def test_runfold_answers_event_lines_as_serde(line: str, answer: str) -> None:
    assert _runfold_answer(Event, line) == answer


@pytest.mark.parametrize(("line", "answer"), params(RUN_ROWS, runfold=True))
def test_runfold_answers_run_lines_as_serde(line: str, answer: str) -> None:
    assert _runfold_answer(Run, line) == answer
