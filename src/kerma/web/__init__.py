"""Kerma's web application (FastAPI): ``create_app(settings)`` in :mod:`kerma.web.app`."""
