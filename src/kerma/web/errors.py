"""The web application's error handlers: a clear message for a physicist, no traceback.

:class:`kerma.errors.NotFoundError` → 404, a bad filter or value
(:class:`kerma.web.deps.FilterError`, :class:`ValueError` from a service) → 400,
:class:`kerma.errors.IngestError` → 422, :class:`kerma.errors.SiteAccessError` → 403.
API requests (``/api/``) get JSON ``{"detail": ...}``; page requests the error page.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from kerma.errors import (
    ConfigurationError,
    IngestError,
    NotFoundError,
    SiteAccessError,
    UnknownColumnError,
)
from kerma.web.deps import FilterError
from kerma.web.templating import render

logger = logging.getLogger(__name__)


def _answer(request: Request, status: int, text: str) -> Response:
    """Return JSON for the API, the error page otherwise."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": text}, status_code=status)
    return render(request, "error.html", {"error": text, "status": status}, status_code=status)


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        """404 with the service's message."""
        return _answer(request, 404, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        """422 JSON for the API (FastAPI's detail); 400 with the fields named for a page."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        fields = ", ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _answer(request, 400, f"Unable to read the request ({fields}).")

    @app.exception_handler(SiteAccessError)
    async def other_site(request: Request, exc: SiteAccessError) -> Response:
        """403: a study of a site the user is not assigned to (issue #15)."""
        return _answer(request, 403, str(exc))

    @app.exception_handler(FilterError)
    async def bad_filter(request: Request, exc: FilterError) -> Response:
        """400: a filter value to correct."""
        return _answer(request, 400, f"Unable to filter: {exc}")

    @app.exception_handler(UnknownColumnError)
    async def unknown_column(request: Request, exc: UnknownColumnError) -> Response:
        """400: a sort or column name that is not a listed column."""
        return _answer(request, 400, str(exc))

    @app.exception_handler(IngestError)
    async def unreadable(request: Request, exc: IngestError) -> Response:
        """422: an object Kerma cannot read."""
        return _answer(request, 422, str(exc))

    @app.exception_handler(ConfigurationError)
    async def configuration(request: Request, exc: ConfigurationError) -> Response:
        """500 with what to configure (logged)."""
        logger.error("configuration error on %s: %s", request.url.path, exc)
        return _answer(request, 500, str(exc))
