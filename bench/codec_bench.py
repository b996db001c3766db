"""Codec cost per event against bare fastavro on the same record (a script, not a test).

    .venv/bin/python -m bench.codec_bench [--number 20000] [--repeat 7]

Prints µs per event (CPU time of this process, best of ``--repeat`` rounds; the
four timings alternate within each round so that load from other processes on a
shared machine falls on all of them alike) for:

- codec: ``EventCodec.encode(event)`` / ``EventCodec.decode(data)``: model in,
  framed bytes out and back to a model, payload JSON and validation included;
- bare fastavro: ``schemaless_writer`` / ``schemaless_reader`` of the record dict
  the event becomes, with the same parsed ``Event.v1`` schema and a reused buffer;

and their ratio (the goal is at most 1.2). The ``+json`` columns add to bare
fastavro what its user would still have to do to get the same result: the
payload's JSON text (``json.dumps``/``json.loads``), which the codec includes.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import timeit
import uuid
from collections.abc import Callable

import fastavro

from schemas import Event, NodeEntered, NodeExited, Timestamp
from schemas.catalog import default_catalog
from schemas.codec import EventCodec
from schemas.records import model_to_record


def sample_events() -> list[Event]:
    """A small mix of typical events: ids, nanosecond timestamps, nested payloads."""
    run_id = uuid.UUID("6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b")
    base = 1_714_564_800_123_456_789
    return [
        Event(
            run_id=run_id,
            seq=42,
            timestamp=Timestamp(base),
            kind=NodeEntered(node_id="planner", iteration=3),
            payload={"entry_time_ms": 100, "note": "hello"},
        ),
        Event(
            run_id=run_id,
            seq=43,
            timestamp=Timestamp(base + 1_500_000),
            kind=NodeExited(node_id="planner", next_node="executor", duration_ms=1500),
            payload={"tokens": {"in": 812, "out": 96}, "score": 0.87, "tags": ["a", "b"]},
        ),
    ]


def best_us_per_call(funcs: list[Callable[[], object]], number: int, repeat: int) -> list[float]:
    """For each of ``funcs``, the best µs per call over ``repeat`` interleaved rounds."""
    timers = [timeit.Timer(func, timer=time.process_time) for func in funcs]
    best = [float("inf")] * len(funcs)
    for _ in range(repeat):
        for index, timer in enumerate(timers):
            best[index] = min(best[index], timer.timeit(number) / number * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=7, help="timing rounds; the best is kept")
    args = parser.parse_args()

    codec = EventCodec()
    schema = default_catalog().current("Event").parsed
    print(
        f"{'':<14} {'codec':>7} {'bare':>7} {'ratio':>6} {'+json':>7} {'ratio':>6}"
        f"   {'codec':>7} {'bare':>7} {'ratio':>6} {'+json':>7} {'ratio':>6}"
    )
    print(f"{'event':<14} {'encode µs per event':^36}   {'decode µs per event':^36}")
    for event in sample_events():
        data = codec.encode(event)
        record = model_to_record(event, schema)
        buffer = io.BytesIO()

        def bare_encode(record: dict[str, object] = record, buffer: io.BytesIO = buffer) -> bytes:
            buffer.seek(0)
            buffer.truncate()
            fastavro.schemaless_writer(buffer, schema, record)
            return buffer.getvalue()

        def bare_encode_json(
            event: Event = event, record: dict[str, object] = record, buffer: io.BytesIO = buffer
        ) -> bytes:
            # What a user of bare fastavro must add: the payload's JSON text.
            buffer.seek(0)
            buffer.truncate()
            fastavro.schemaless_writer(
                buffer, schema, {**record, "payload": json.dumps(event.payload)}
            )
            return buffer.getvalue()

        body = bare_encode()
        assert body == data[10:], "codec and fastavro bytes differ"

        def bare_decode(body: bytes = body) -> object:
            return fastavro.schemaless_reader(io.BytesIO(body), schema, None)

        def bare_decode_json(body: bytes = body) -> object:
            decoded = fastavro.schemaless_reader(io.BytesIO(body), schema, None)
            decoded["payload"] = json.loads(decoded["payload"])  # type: ignore[index]
            return decoded

        def codec_encode(event: Event = event) -> bytes:
            return codec.encode(event)

        def codec_decode(data: bytes = data) -> Event:
            return codec.decode(data)

        enc, bare_enc, bare_enc_json, dec, bare_dec, bare_dec_json = best_us_per_call(
            [
                codec_encode,
                bare_encode,
                bare_encode_json,
                codec_decode,
                bare_decode,
                bare_decode_json,
            ],
            args.number,
            args.repeat,
        )
        print(
            f"{event.kind.type:<14} {enc:>7.2f} {bare_enc:>7.2f} {enc / bare_enc:>6.2f} "
            f"{bare_enc_json:>7.2f} {enc / bare_enc_json:>6.2f}"
            f"   {dec:>7.2f} {bare_dec:>7.2f} {dec / bare_dec:>6.2f} "
            f"{bare_dec_json:>7.2f} {dec / bare_dec_json:>6.2f}"
        )


if __name__ == "__main__":
    main()
