"""`meshgen serve`: the rollout API and status page under uvicorn, optionally polling Argo CD."""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command("serve")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The blueprints repository (default: MESHGEN_ROOT or .).")
@click.option("--host", default=None, help="Listen address (default: MESHGEN_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: MESHGEN_PORT, 8080).")
@click.option("--workers", type=int, default=1, show_default=True, help="uvicorn worker processes.")
@click.option("--poll", is_flag=True,
              help="Also poll Argo CD every argocd.pollInterval (instead of, or besides, the Celery beat task).")
def serve(root: Path | None, host: str | None, port: int | None, workers: int, poll: bool) -> None:
    """Serve the rollout API (/api/v1), the status page (/) and /healthz, /readyz, /metrics."""
    import os

    import uvicorn

    from meshgen.settings import Settings

    if root is not None:
        os.environ["MESHGEN_ROOT"] = str(root)  # worker processes build their app from the environment
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.tokens("read") and not settings.tokens("write") and not settings.api_public_reads:
        click.echo("meshgen serve: no API tokens configured; every request will get 401. Set "
                   "MESHGEN_API_READ_TOKENS / MESHGEN_API_WRITE_TOKENS or MESHGEN_API_PUBLIC_READS=true", err=True)
    stop = None
    if poll:
        from meshgen.argocd.poller import start_background
        from meshgen.blueprint.loading import load_config
        from meshgen.diagnostics import BlueprintError
        from meshgen.gitops.jobs import records_for

        try:
            config, _ = load_config(settings.root)
        except BlueprintError as exc:
            raise click.ClickException("; ".join(str(d) for d in exc.diagnostics)) from None
        if config.argocd is None:
            raise click.ClickException("--poll needs an `argocd` section in meshgen.yaml")
        # In the supervising process: one poller however many workers serve requests (a Redis
        # lock also keeps several replicas from polling at once).
        _, stop = start_background(config, settings, records_for(settings))
    try:
        uvicorn.run("meshgen.api.app:create_app", factory=True, host=host or settings.host,
                    port=port or settings.port, workers=workers, proxy_headers=True, access_log=False)
    finally:
        if stop is not None:
            stop.set()
