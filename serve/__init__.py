"""``runfold serve``: a materialized view of the folded topics, served over HTTP.

- :mod:`serve.store`: the SQLite view; :mod:`serve.tailer`: the reader keeping it current;
- :mod:`serve.api`: the ``/v1`` routes; :mod:`serve.ingest`: HTTP ingestion through the
  idempotent producer; :mod:`serve.auth`: API keys; :mod:`serve.app`: the application;
- ``serve/static/``: the web view (no build step).
"""

from __future__ import annotations

from serve.app import ServeHandle, create_app, serve_forever, start_in_thread
from serve.errors import ApiError
from serve.settings import ApiKey, ServeSettings, hash_key, new_key

__all__ = [
    "ApiError",
    "ApiKey",
    "ServeHandle",
    "ServeSettings",
    "create_app",
    "hash_key",
    "new_key",
    "serve_forever",
    "start_in_thread",
]
