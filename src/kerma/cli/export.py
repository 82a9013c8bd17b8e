"""``kerma export``: the export command group (CSV, XLSX, survey, Parquet, FHIR, de-identified).

``csv``, ``xlsx``, ``survey`` and ``parquet`` are defined here; each is a thin call
into :mod:`kerma.export` (which reads through :mod:`kerma.services`). Heavy imports
(pandas, XlsxWriter, pyarrow) happen inside the commands, so ``kerma --version`` and
``kerma export --help`` stay cheap. The modules of :data:`EXPORT_MODULES` add their
subcommands to :data:`export_app` (``kerma.cli.export_fhir``: FHIR and the
de-identified research export).

May import ``kerma.cli``, ``kerma.services``, ``kerma.export`` and the plain layers.
"""

from __future__ import annotations

import typer

from kerma.cli.main import RICH_MARKUP_MODE

#: The ``kerma export`` group; subcommands are added by :func:`register`.
export_app = typer.Typer(
    name="export",
    help="Export dose data: CSV, XLSX, national DRL surveys, Parquet, FHIR, de-identified.",
    no_args_is_help=True,
    rich_markup_mode=RICH_MARKUP_MODE,
)

#: Modules that add more subcommands to :data:`export_app`: each has
#: ``register_export(group: typer.Typer) -> None`` (``kerma.cli.export_fhir`` adds
#: ``fhir`` and ``deid``). A module that does not exist is skipped.
EXPORT_MODULES: tuple[str, ...] = ("kerma.cli.export_fhir",)

_extended: list[bool] = []


def register(app: typer.Typer) -> None:
    """Add the ``export`` group, with the subcommands of :data:`EXPORT_MODULES`, to ``app``."""
    import importlib
    import importlib.util

    if not _extended:
        _extended.append(True)
        for name in EXPORT_MODULES:
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name).register_export(export_app)
    app.add_typer(export_app, name="export")


@export_app.callback()
def _export() -> None:
    """Export dose data: CSV, XLSX, national DRL surveys, Parquet, FHIR, de-identified."""
