"""The ``runfold serve`` application: FastAPI routes, the web view, and the background parts.

:func:`create_app` builds the app and opens (locks) its view; its lifespan starts the tailer and the
ingestion worker, and stops them. :func:`start_in_thread` runs it under uvicorn in a
background thread and returns a handle with the URL (what ``runfold demo`` uses to leave
the web view running); :func:`serve_forever` is the foreground server of the CLI.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from clients import RunfoldSettings
from producers import EventProducer
from runfold.kafka.process import port_is_free
from schemas.errors import ConfigError
from serve.api import ChangeFeed, ServeContext, router
from serve.auth import Authenticator
from serve.errors import ApiError
from serve.ingest import IngestWorker
from serve.settings import ServeSettings
from serve.store import ViewReader, open_view
from serve.tailer import ViewTailer

__all__ = ["ServeHandle", "create_app", "serve_forever", "start_in_thread", "view_source"]

log = logging.getLogger(__name__)
_STATIC = resources.files("serve") / "static"
_QUIET = {"log_level": 2}


def create_app(settings: ServeSettings, kafka: RunfoldSettings) -> FastAPI:
    """The app serving the view of ``kafka``'s topics (its file opened and locked now);
    the tailer and the ingestion worker start with its lifespan."""
    settings.check_exposure()
    names = kafka.topic_names
    topics = {"events": names.events, "runs": names.runs, "violations": names.violations}
    # Opened (and locked) now, so that a view in use by another server is refused here
    # rather than inside uvicorn's start-up; the lifespan closes it.
    writer = open_view(settings.view_path, view_source(kafka))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        feed = ChangeFeed()
        feed.bind(asyncio.get_running_loop())
        tailer = ViewTailer(
            {**kafka.client_config(), **_QUIET}, writer,
            runs_topic=names.runs, violations_topic=names.violations, events_topic=names.events,
            retention_s=settings.event_retention_s, fold_group=settings.fold_group,
            on_change=feed.publish,
        )
        producer = EventProducer(
            names.events, settings=kafka, config={**_QUIET, "linger.ms": 2},
            startup_timeout=settings.ack_timeout_s,
        )
        ingest = IngestWorker(producer, ack_timeout_s=settings.ack_timeout_s)
        app.state.ctx = ServeContext(
            settings=settings,
            reader=ViewReader(settings.view_path, settings.stall_after_s),
            tailer=tailer, ingest=ingest, feed=feed,
            auth=Authenticator(settings.api_keys), topics=topics,
        )
        tailer.start()
        ingest.start()
        try:
            yield
        finally:
            ingest.stop()
            tailer.stop()
            writer.close()

    app = FastAPI(
        title="runfold serve",
        version="1",
        summary="Folded agent runs over HTTP: runs, events, replay digests, live changes, "
        "and event ingestion acknowledged by Kafka.",
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return JSONResponse(
            {"error": "bad_request", "detail": f"{where}: {first['msg']}", "field": where},
            status_code=400,
        )

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(_STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
    return app


def view_source(kafka: RunfoldSettings) -> str:
    """What a view file is built from: another broker or other topics start it afresh."""
    names = kafka.topic_names
    return f"{kafka.bootstrap_servers}|{names.runs}|{names.violations}|{names.events}"


def _config(app: FastAPI, settings: ServeSettings, port: int, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=port, log_level="warning",
        # A live stream never ends by itself; a stop does not wait long for it.
        timeout_graceful_shutdown=2, **options,
    )


@dataclass
class ServeHandle:
    """A server running in a background thread."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving; the tailer and the ingestion worker stop with it."""
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(
    settings: ServeSettings, kafka: RunfoldSettings, port: int | None = None,
    *, any_port_if_taken: bool = False, ready_timeout: float = 30.0,
) -> ServeHandle:
    """Serve in a daemon thread; returns once it listens (``port`` 0: a free one).

    ``port`` defaults to the settings' port; with ``any_port_if_taken`` a port in use is
    replaced by a free one (``handle.url`` says which). From the demo::

        handle = start_in_thread(
            ServeSettings.load(fold_group=group), settings, any_port_if_taken=True
        )
        print(f"web view: {handle.url}")      # handle.stop() when done
    """
    app = create_app(settings, kafka)
    port = settings.port if port is None else port
    if any_port_if_taken and port and not port_is_free(settings.host, port):
        port = 0
    server = uvicorn.Server(_config(app, settings, port))
    thread = threading.Thread(target=server.run, name="runfold-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive():
            raise ConfigError(
                f"runfold serve could not listen on {settings.host}:{server.config.port} "
                "(in use? --port 0 picks a free port)"
            )
        if time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"runfold serve did not start within {ready_timeout:g}s")
        time.sleep(0.02)
    host, bound = server.servers[0].sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return ServeHandle(url=f"http://{shown}:{bound}/", server=server, thread=thread)


def serve_forever(
    settings: ServeSettings, kafka: RunfoldSettings, on_ready: Callable[[str], None]
) -> None:
    """Serve until interrupted (``runfold serve``); ``on_ready(url)`` once it listens."""
    handle = start_in_thread(settings, kafka)
    on_ready(handle.url)
    try:
        while handle.thread.is_alive():
            handle.thread.join(0.5)
    except KeyboardInterrupt:
        pass  # Ctrl-C: stop as asked, without a traceback
    finally:
        handle.stop()
