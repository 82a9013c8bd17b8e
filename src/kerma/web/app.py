"""The FastAPI application factory: :func:`create_app`.

The app owns the durable spool and its import worker (started and stopped with the
app's lifespan), shared by the routes that receive DICOM objects (STOW-RS). Routers
are included here, one per resource; dashboard pages and the JSON API add theirs
the same way.

Logging is configured here (for ``kerma serve``) and in ``kerma.cli.main``.
May import ``kerma.services``, ``kerma.export`` and ``kerma.net`` (DESIGN.md "Layers").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from kerma import __version__
from kerma.config import Settings, get_settings
from kerma.net.spool import BytesImporter, Spool, SpoolWorker

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, warm: bool = False) -> FastAPI:
    """Return the Kerma web application.

    Parameters
    ----------
    settings : Settings, optional
        Default: from the environment. ``archive_dir`` holds the spool of objects
        received by STOW-RS; ``database_url`` is the registry they are imported into.
    warm : bool, optional
        Compute the overview's registry-wide aggregates in a thread at start-up
        (``kerma serve`` does; tests leave it off).

    Returns
    -------
    fastapi.FastAPI
        With ``app.state.settings``, ``app.state.spool`` and ``app.state.worker``
        (the import worker, running while the app is).
    """
    settings = settings if settings is not None else get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Start the import worker with the app; stop it (spool kept) at shutdown."""
        spool = Spool(settings.archive_dir)

        def importer_factory() -> BytesImporter:
            """Open the ingest pipeline (on the worker thread, not at start-up)."""
            from kerma.services import intake_importer

            return intake_importer(settings)

        worker = SpoolWorker(spool, importer_factory, keep_non_dose=settings.scp_keep_non_dose)
        worker.start()
        app.state.spool, app.state.worker = spool, worker
        if warm:  # the overview's aggregates, before the first visitor asks
            from kerma.web.routes.overview import warm as warm_overview

            threading.Thread(
                target=warm_overview, args=(app,), name="kerma-warm", daemon=True
            ).start()
        else:
            app.state.warmed.set()
        try:
            yield
        finally:
            worker.stop()

    # no Swagger UI at /docs: it loads its scripts from a CDN, and hospital networks are
    # closed; /docs is Kerma's own page of the operations (_add_api_docs)
    app = FastAPI(
        title="Kerma", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    app.state.registry = None  # opened on first use (kerma.web.deps.get_registry)

    from kerma.services.dashboard import AggregateCache

    app.state.cache = AggregateCache()  # registry-wide aggregates of the pages
    app.state.warmed = threading.Event()  # set once the start-up warm-up has ended

    from kerma.web import security
    from kerma.web.routes import dicomweb, fhir, fhir_notify, quality

    _add_static(app)  # before security.install, which adds /static only when missing
    security.install(app)  # login required everywhere but /login and /static
    app.include_router(dicomweb.router)
    app.include_router(fhir.router)
    app.include_router(fhir_notify.router)
    _add_dashboard(app)
    app.include_router(quality.api)
    app.include_router(quality.pages)
    _add_api_docs(app)
    _add_health(app)
    return app


def _add_health(app: FastAPI) -> None:
    """Add ``GET /health``, open without login, for load balancers and monitoring.

    It answers 200 with ``{"status": "ok", "overview_ready": bool}`` while the process
    serves requests; ``overview_ready`` turns true once the start-up warm-up of the
    overview's aggregates has ended (``kerma serve``), so a load balancer can hold
    visitors back from a node still preparing them (docs/scaling.md). It reads no
    registry data and names no version.
    """

    @app.get("/health", tags=["service"], summary="Liveness and readiness")
    def health() -> dict[str, Any]:
        return {"status": "ok", "overview_ready": app.state.warmed.is_set()}


def api_operations(schema: dict[str, Any]) -> list[dict[str, str]]:
    """Return one row per operation of an OpenAPI ``schema``: method, path, summary and
    the names of its query parameters."""
    rows = []
    for path, item in sorted(schema.get("paths", {}).items()):
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            query = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
            rows.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": str(operation.get("summary", "")),
                    "parameters": ", ".join(query),
                }
            )
    return rows


def _add_api_docs(app: FastAPI) -> None:
    """Serve ``/docs``: the API's operations as a page of the application (no CDN)."""
    from fastapi import Depends
    from fastapi.responses import HTMLResponse

    from kerma.web.security import Role, require_role
    from kerma.web.templating import render

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_role(Role.viewer))])
    def api_docs(request: Request) -> HTMLResponse:
        """The operations of the OpenAPI description, as a table."""
        return render(
            request,
            "api_docs.html",
            {
                "title": app.title,
                "version": app.version,
                "operations": api_operations(app.openapi()),
            },
        )


def _add_static(app: FastAPI) -> None:
    """Serve ``/static`` (stylesheet) and ``/static/vendor`` (plotly.js of the installed
    plotly package: no CDN, hospital networks are closed)."""
    import plotly
    from fastapi.staticfiles import StaticFiles

    static = Path(__file__).with_name("static")
    vendor = Path(plotly.__file__).parent / "package_data"
    app.mount("/static/vendor", StaticFiles(directory=vendor), name="vendor")
    app.mount("/static", StaticFiles(directory=static), name="static")


def _add_dashboard(app: FastAPI) -> None:
    """Add the pages, the JSON API and the error pages (issue #13)."""
    from kerma.web.errors import add_error_handlers
    from kerma.web.routes import admin, alerts, analysis, api, overview, studies

    for module in (overview, studies, analysis, alerts, admin, api):
        app.include_router(module.router)
    add_error_handlers(app)
