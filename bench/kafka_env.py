"""The benchmark's Kafka side: one broker for the run, topics, offsets, and watched processes.

:class:`BenchBroker` uses the broker given with ``--bootstrap`` or starts runfold's local
KRaft broker in a temporary home (free ports) and stops it at the end. :class:`Watched`
runs a child process (the folding service, a peer) and stamps, on the benchmark's own
clock, the moment each interesting line of its output appears; :func:`wait_committed`
stamps the moment a consumer group's committed offsets reach the end of a topic. Between
the two lies the measured interval: from the start of consumption to all committed.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from schemas.errors import RunfoldError

__all__ = [
    "BenchBroker",
    "BenchError",
    "Watched",
    "committed_offsets",
    "cpu_seconds",
    "create_topic",
    "end_offsets",
    "rss_bytes",
    "wait_committed",
    "warm_up",
]

Echo = Callable[[str], None]


class BenchError(RunfoldError):
    """A benchmark stage could not run (broker, tool or child process failure)."""


class BenchBroker:
    """The one broker of a benchmark run: given, or started here and stopped at the end."""

    def __init__(self, bootstrap: str | None, *, echo: Echo) -> None:
        self._given = bootstrap
        self._echo = echo
        self._home: Path | None = None
        self._local: Any = None
        self._admin: AdminClient | None = None
        self.bootstrap = bootstrap or ""
        self.started_here = bootstrap is None

    def __enter__(self) -> BenchBroker:
        if self._given:
            return self
        from runfold.kafka.local import LocalKafka

        self._home = Path(tempfile.mkdtemp(prefix="runfold-bench-"))
        self._local = LocalKafka(self._home)
        self._echo(f"starting a local Kafka broker in {self._home}")
        started = time.monotonic()
        try:
            self.bootstrap = self._local.up(nodes=1, port=0, tie_to_parent=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._echo(f"broker ready at {self.bootstrap} in {time.monotonic() - started:.0f}s")
        return self

    def __exit__(self, *exc: object) -> None:
        # A librdkafka client outliving the broker logs "connection refused" every second.
        self._admin = None
        gc.collect()
        if self._local is not None:
            self._local.down(timeout=20.0)
            self._local = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def admin(self) -> AdminClient:
        """The admin client on the broker (one, dropped before the broker stops)."""
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin


def warm_up(bootstrap: str, admin: AdminClient, topic: str) -> None:
    """Load the broker's coordinators before any clock starts.

    A fresh broker answers the first idempotent producer, group and transaction with
    "coordinator load in progress" for a while; that wait belongs to no stage.
    """
    from confluent_kafka import Producer

    create_topic(admin, topic, 1)
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True,
        "transactional.id": f"{topic}-txn", "log_level": 3,
    })
    producer.init_transactions(120)
    producer.begin_transaction()
    for index in range(100):
        producer.produce(topic, b"warm-up", str(index).encode())
    producer.commit_transaction(120)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"{topic}-group",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    try:
        consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 120
        while seen < 100 and time.monotonic() < deadline:
            seen += sum(1 for m in consumer.consume(100, timeout=1.0) if m.error() is None)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def create_topic(
    admin: AdminClient, name: str, partitions: int, config: Mapping[str, str] | None = None
) -> str:
    """Create ``name`` (replication 1 on a single broker, else the broker default)."""
    brokers = len(admin.list_topics(timeout=30).brokers)
    new = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=min(3, brokers),
        config=dict(config or {}),
    )
    admin.create_topics([new], operation_timeout=30)[name].result(timeout=60)
    return name


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The high watermark of every partition of ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-wm-{uuid.uuid4()}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def committed_offsets(consumer: Consumer, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none)."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    targets: Mapping[int, int],
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.01,
) -> float:
    """Poll until ``group`` has committed ``targets`` on ``topic``; the monotonic time it did.

    Raises :class:`BenchError` after ``timeout`` seconds, or as soon as ``alive()`` is false
    (the process doing the work died).
    """
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    deadline = time.monotonic() + timeout
    try:
        tps = [TopicPartition(topic, p) for p in targets]
        while True:
            with contextlib.suppress(KafkaException):
                done = consumer.committed(tps, timeout=5)
                now = time.monotonic()
                if all(tp.offset >= targets[tp.partition] for tp in done):
                    return now
            if time.monotonic() > deadline:
                raise BenchError(
                    f"group {group} did not commit the end of {topic} within {timeout:.0f}s"
                )
            if not alive():
                raise BenchError(f"the process of group {group} exited before committing all")
            time.sleep(interval)
    finally:
        consumer.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used, all its threads (``None`` when gone).

    On a shared machine a rate per CPU-second says what a dedicated core would do, where
    the wall-clock rate also says how busy the neighbours were.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from ``/proc`` (``None`` when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Watched:
    """A child process whose output lines are read as they come and stamped on our clock.

    ``marks`` maps a name to a regex; the first line matching it is kept with the
    monotonic time it was read (``stamp(name)``, ``match(name)``). The whole output is kept
    too, for error messages and for a final JSON line.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        marks: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self._marks = {name: re.compile(pattern) for name, pattern in marks.items()}
        self._found: dict[str, tuple[float, re.Match[str]]] = {}
        self._cond = threading.Condition()
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                for name, pattern in self._marks.items():
                    if name not in self._found:
                        match = pattern.search(line)
                        if match is not None:
                            self._found[name] = (now, match)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def wait_mark(self, name: str, timeout: float) -> float:
        """Block until the line ``name`` appeared; its time. :class:`BenchError` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while name not in self._found:
                left = deadline - time.monotonic()
                if left <= 0 or (not self.alive() and not self._reader.is_alive()):
                    raise BenchError(
                        f"{Path(self.cmd[0]).name} {' '.join(self.cmd[1:3])}: no '{name}' line "
                        f"within {timeout:.0f}s; last output: {self.tail()}"
                    )
                self._cond.wait(min(left, 0.2))
            return self._found[name][0]

    def stamp(self, name: str) -> float | None:
        """When the line ``name`` appeared, or ``None``."""
        found = self._found.get(name)
        return found[0] if found else None

    def match(self, name: str) -> re.Match[str] | None:
        """The match of the line ``name``, or ``None``."""
        found = self._found.get(name)
        return found[1] if found else None

    def tail(self, lines: int = 5) -> str:
        """The last lines of output, for error messages."""
        with self._cond:
            return " | ".join(self.lines[-lines:]) or "(none)"

    def finish(self, timeout: float) -> int:
        """Wait for the child to exit (terminate, then kill, past ``timeout``); its status."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                code = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        """Terminate the child if it still runs (always safe to call)."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
