"""``runfold serve``: the fleet over HTTP (API, ingestion, web view) in one process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["serve"]


@click.command()
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080; 0: any).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the view's SQLite file lives (default .runfold/serve).")
@click.option("--bootstrap-servers", default=None, help="Kafka to use.")
@click.option("--prefix", default=None, help="Prefix of every topic name.")
@click.option("--new-key", "new_key_scopes", default=None, metavar="SCOPES",
              help="Print a new API key with these comma-separated scopes (read,ingest) "
              "and the settings entry holding its hash, then exit.")
def serve(
    port: int | None, host: str | None, data_dir: Path | None,
    bootstrap_servers: str | None, prefix: str | None, new_key_scopes: str | None,
) -> None:
    """Serve the runs API, HTTP ingestion and the web view at http://HOST:PORT/.

    Reads the folded topics into a local view (rebuilt from Kafka when deleted). API keys
    come from RUNFOLD_SERVE_API_KEYS; without any, it listens on loopback only.
    """
    from serve.settings import ServeSettings, hash_key, new_key

    if new_key_scopes is not None:
        scopes = [s.strip() for s in new_key_scopes.split(",") if s.strip()]
        bad = sorted(set(scopes) - {"read", "ingest"})
        if bad or not scopes:
            raise click.BadParameter(f"scopes are read and/or ingest, not {bad or 'nothing'}",
                                     param_hint="--new-key")
        key = new_key()
        entry = {"name": "my-key", "sha256": hash_key(key), "scopes": scopes}
        click.echo(f"key (give it to the client; it is not stored anywhere): {key}")
        click.echo(f"settings entry: RUNFOLD_SERVE_API_KEYS='{json.dumps([entry])}'")
        return

    from clients import RunfoldSettings
    from serve.app import serve_forever

    settings = ServeSettings.load(**_given(port=port, host=host, data_dir=data_dir))
    kafka = RunfoldSettings.load(
        **_given(bootstrap_servers=bootstrap_servers or None, topic_prefix=prefix)
    )
    settings.check_exposure()
    if kafka.schema_registry_url:
        from schemas.codec import configure_registry

        configure_registry(kafka.schema_registry_url)  # Confluent-framed records name it
    from clients.connection import check_connection

    # An unreachable broker or bad credentials: one sentence now, not an empty view later.
    check_connection(kafka.admin_config())

    def ready(url: str) -> None:
        click.echo(
            f"runfold serve: {url} (API docs at {url}docs) over {kafka.topic_names.runs} on "
            f"{kafka.bootstrap_servers}; view in {settings.view_path}"
            + ("" if settings.auth_enabled else "; no API keys: open on loopback only")
        )

    serve_forever(settings, kafka, ready)


def _given(**options: Any) -> dict[str, Any]:
    """The options given on the command line (the others come from the settings)."""
    return {name: value for name, value in options.items() if value is not None}
