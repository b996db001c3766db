"""POST /v1/events: posted events are produced, folded, and equal a RunRecorder's run."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from serve_fixtures import ServerFactory, wait_for

from clients import RunfoldSettings
from consumers.run_view import RunView
from consumers.service import FoldEdge
from producers import ListSink, RunRecorder
from runfold.commands.runs import run_document
from schemas import Event, NodeEntered, NodeExited, ToolCalled, ToolReturned
from schemas.ledger import replay_digest

NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
def client(module_client: httpx.Client) -> httpx.Client:
    """The module's server (auth off), the fold behind it."""
    return module_client


def recorded_run(spec: str = "spec-http") -> list[Event]:
    """A complete run as the recorder writes it."""
    sink = ListSink()
    with RunRecorder(sink).run(spec, "0" * 40, {"question": "why"}, graph_name="qa") as run:
        for node in ("plan", "search", "answer"):
            run.emit(NodeEntered(node_id=node, iteration=1), payload={"tokens": 3})
            run.emit(ToolCalled(tool_name="web"))
            run.emit(ToolReturned(tool_name="web"))
            run.emit(NodeExited(node_id=node, next_node=None, duration_ms=4))
        run.complete(outputs={"answer": 42}, final_state_digest="d" * 64)
    return sink.events


def folded(events: list[Event]) -> dict[str, Any]:
    """What the fold makes of ``events`` locally."""
    edge = FoldEdge.default()
    state = None
    for event in events:
        state, _ = edge.apply(state, event)
    assert state is not None
    return run_document(RunView.of_state(state))


def ndjson(events: list[Event]) -> str:
    return "\n".join(event.to_json() for event in events) + "\n"


def test_posted_events_are_folded_as_the_recorder_run(
    client: httpx.Client
) -> None:
    events = recorded_run()
    answer = client.post("/v1/events", content=ndjson(events), headers=NDJSON)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == len(events) and body["rejected"] == 0
    assert [r["seq"] for r in body["results"]] == [e.seq for e in events]
    assert {r["status"] for r in body["results"]} == {"accepted"}

    run_id = str(events[0].run_id)
    doc = wait_for(lambda: _completed(client, run_id), what="the posted run to be folded")
    expected = folded(events)
    assert doc["run"] == expected["run"]
    assert doc["counters"] == expected["counters"]
    # The view tails agent-runs and agent-run-events apart: the run may be in before its events.
    def all_served() -> list[dict[str, Any]] | None:
        served: list[dict[str, Any]] = client.get(f"/v1/runs/{run_id}/events").json()["events"]
        return served if len(served) >= len(events) else None

    served = wait_for(all_served, what="the posted run's events in the view")
    assert [json.dumps(e, separators=(",", ":")) for e in served] == [e.to_json() for e in events]
    assert client.get(f"/v1/runs/{run_id}/digest").json()["digest"] == replay_digest(events)


def _completed(client: httpx.Client, run_id: str) -> dict[str, Any] | None:
    answer = client.get(f"/v1/runs/{run_id}")
    if answer.status_code != 200 or answer.json()["status"] != "COMPLETED":
        return None
    return dict(answer.json())


def test_one_event_as_json(client: httpx.Client) -> None:
    event = recorded_run()[0]
    answer = client.post("/v1/events", content=event.to_json(),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"] == [
        {"index": 0, "status": "accepted", "run_id": str(event.run_id), "seq": 1}
    ]
    wait_for(lambda: client.get(f"/v1/runs/{event.run_id}").status_code == 200,
             what="the run to appear")


def _bad(good: dict[str, Any], **changes: Any) -> str:
    event = {**good, **changes}
    return json.dumps(event, separators=(",", ":"))


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "expected an object"),
        (lambda g: _bad(g, seq=-1), "seq", "greater than or equal to 0"),
        (lambda g: _bad(g, run_id="run-1"), "run_id", "UUID"),
        (lambda g: _bad(g, timestamp="yesterday"), "timestamp", ""),
        (lambda g: _bad(g, kind={"type": "node_exploded"}), "kind", "node_exploded"),
        (lambda g: _bad(g, kind={"type": "node_entered", "node_id": "a", "iteration": 2**32}),
         "kind.iteration", "4294967295"),
        (lambda g: _bad(g, kind={"type": "tool_called"}), "kind.tool_name", "required"),
        (lambda g: json.dumps({k: v for k, v in g.items() if k != "payload"}), "payload",
         "required"),
    ],
    ids=["json", "array", "seq", "uuid", "timestamp", "tag", "u32", "missing", "payload"],
)
def test_a_bad_event_is_named_and_the_good_ones_still_go(
    client: httpx.Client, line: Any, field: str | None, reason: str
) -> None:
    events = recorded_run()
    good = json.loads(events[1].to_json())
    bad = line(good) if callable(line) else line
    body = events[0].to_json() + "\n" + bad + "\n" + events[1].to_json() + "\n"
    answer = client.post("/v1/events", content=body, headers=NDJSON)
    assert answer.status_code == 207, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    rejected = results[1]
    assert rejected["index"] == 1 and rejected["code"] == 400
    assert rejected["field"] == field, rejected
    assert reason.lower() in rejected["reason"].lower(), rejected
    run_id = str(events[0].run_id)
    wait_for(lambda: client.get(f"/v1/runs/{run_id}").json().get("last_seq") == 2
             if client.get(f"/v1/runs/{run_id}").status_code == 200 else None,
             what="the good events to be folded")


def test_all_bad_is_400_and_limits_are_413_and_415(serve_factory: ServerFactory) -> None:
    server = serve_factory(max_body_bytes=4096, max_batch_events=3, max_event_bytes=512)
    events = recorded_run()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post("/v1/events", content="{}\n{}\n", headers=NDJSON)
        assert answer.status_code == 400
        assert answer.json()["rejected"] == 2 and answer.json()["accepted"] == 0

        answer = client.post("/v1/events", content=ndjson(events[:5]), headers=NDJSON)
        assert answer.status_code == 413 and answer.json()["error"] == "too_many_events"

        answer = client.post("/v1/events", content=b"x" * 5000, headers=NDJSON)
        assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"

        big = events[1].model_copy(update={"payload": {"text": "y" * 600}})
        answer = client.post("/v1/events", content=big.to_json(), headers=NDJSON)
        assert answer.status_code == 400
        assert "at most 512" in answer.json()["results"][0]["reason"]

        answer = client.post("/v1/events", content="seq=1",
                             headers={"content-type": "text/plain"})
        assert answer.status_code == 415 and answer.json()["error"] == "unsupported_media_type"


def test_unreachable_kafka_is_503_with_a_reason(
    kafka_bootstrap: str, tmp_path: Any
) -> None:
    """Nothing acknowledged: the answer says so per event instead of claiming success."""
    from serve import ServeSettings, start_in_thread

    dead = RunfoldSettings(bootstrap_servers="127.0.0.1:9", topic_prefix=f"x{uuid.uuid4().hex}")
    handle = start_in_thread(
        ServeSettings(data_dir=tmp_path, port=0, ack_timeout_s=3.0), dead, port=0
    )
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as client:
            answer = client.post("/v1/events", content=ndjson(recorded_run()[:2]),
                                 headers=NDJSON)
        assert answer.status_code == 503, answer.text
        results = answer.json()["results"]
        assert {r["status"] for r in results} == {"unacknowledged"}
        assert "posting it again is safe" in results[0]["reason"]
    finally:
        handle.stop()


def test_the_stream_tells_each_change_of_a_run(
    client: httpx.Client, module_server: Any
) -> None:
    """/v1/stream (Server-Sent Events) sends the run when it starts and when it completes."""
    events = recorded_run()
    run_id = str(events[0].run_id)
    seen: list[dict[str, Any]] = []
    with httpx.Client(base_url=module_server.url, timeout=30) as streaming, \
            streaming.stream("GET", "/v1/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        assert next(lines) == "event: hello"
        for part in (events[:1], events[1:]):
            answer = client.post("/v1/events", content=ndjson(part), headers=NDJSON)
            assert answer.status_code == 200
            status = "RUNNING" if len(part) == 1 else "COMPLETED"
            event_type = None
            for line in lines:
                if line.startswith("event: "):
                    event_type = line[7:]
                elif line.startswith("data: ") and event_type == "run":
                    change = json.loads(line[6:])
                    if change["run_id"] == run_id:
                        seen.append(change)
                        if change["status"] == status:
                            break
    assert seen[0]["status"] == "RUNNING" and seen[-1]["status"] == "COMPLETED"
    assert seen[-1]["events_applied"] == len(events)
    assert [c["change"] for c in seen] == sorted(c["change"] for c in seen)
