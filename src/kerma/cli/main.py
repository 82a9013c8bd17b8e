"""Typer root of the ``kerma`` command; maps errors to exit codes, configures logging.

Each command group lives in its own module with a ``register(app)`` function that adds
its commands (``kerma.cli.inspect``, ``kerma.cli.ingest``, ...). :func:`main` imports
only the module of the command it runs (:data:`COMMANDS`), so ``kerma --version`` and
``kerma inspect FILE`` start without loading pandas, SQLAlchemy or pynetdicom;
``kerma --help`` (or an unknown command) loads them all. Help texts are Markdown
(``rich_markup_mode="markdown"``): docstring paragraphs are rewrapped to the
terminal's width and ``code`` is shown as code.

Errors: a :class:`kerma.errors.KermaError` prints its message and exits 2; a usage
error (a bad option) prints what is allowed and exits 2; anything else prints a
one-line message (the traceback goes to the log at DEBUG level) and exits 3. No
traceback reaches a user unless ``KERMA_DEBUG=1``. A database URL Kerma cannot use
(``mysql://...``) is refused before the command starts.

May import ``kerma.errors``, ``kerma.config`` and ``kerma.cli``.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from kerma.cli.console import make_console
from kerma.errors import ConfigurationError, KermaError

#: How Typer renders help texts: Markdown, so docstring paragraphs are rewrapped and
#: ``code`` is shown as code, never as literal backticks. Typed as the literal that
#: ``typer.Typer(rich_markup_mode=...)`` accepts (its ``MarkupMode``, a ``Literal``).
RICH_MARKUP_MODE: Literal["markdown"] = "markdown"

#: Modules that add commands, in the order of ``kerma --help``; each has
#: ``register(app: typer.Typer) -> None``. A module that does not exist is skipped.
COMMAND_MODULES = (
    "kerma.cli.inspect",
    "kerma.cli.ingest",
    "kerma.cli.registry",
    "kerma.cli.conflicts",
    "kerma.cli.patient",
    "kerma.cli.devices",
    "kerma.cli.sites",
    "kerma.cli.db",
    "kerma.cli.demo",
    "kerma.cli.net",
    "kerma.cli.analysis",
    "kerma.cli.skin",
    "kerma.cli.quality",
    "kerma.cli.alerts",
    "kerma.cli.serve",
    "kerma.cli.keys",
    "kerma.cli.hl7",
    "kerma.cli.users",
    "kerma.cli.export",
    "kerma.cli.jobs",
)

#: The modules to load for each command, tried in order until one adds it; a command
#: not listed here (or not added by its modules) loads every module.
COMMANDS: dict[str, tuple[str, ...]] = {
    "inspect": ("kerma.cli.inspect",),
    "import": ("kerma.cli.ingest",),
    "rejects": ("kerma.cli.ingest",),
    "ignored": ("kerma.cli.ingest",),
    "reprocess": ("kerma.cli.ingest",),
    "studies": ("kerma.cli.registry", "kerma.cli.ingest"),
    "summary": ("kerma.cli.registry", "kerma.cli.ingest"),
    "conflicts": ("kerma.cli.conflicts",),
    "patient": ("kerma.cli.patient",),
    "devices": ("kerma.cli.devices",),
    "sites": ("kerma.cli.sites",),
    "db": ("kerma.cli.db",),
    "demo": ("kerma.cli.demo",),
    "listen": ("kerma.cli.net",),
    "pull": ("kerma.cli.net",),
    "exams": ("kerma.cli.analysis",),
    "drl": ("kerma.cli.analysis",),
    "stats": ("kerma.cli.analysis",),
    "cumulative": ("kerma.cli.analysis",),
    "skin-dose": ("kerma.cli.skin",),
    "quality": ("kerma.cli.quality",),
    "alerts": ("kerma.cli.alerts",),
    "serve": ("kerma.cli.serve",),
    "key": ("kerma.cli.keys",),
    "hl7": ("kerma.cli.hl7",),
    "fhir": ("kerma.cli.hl7",),
    "users": ("kerma.cli.users",),
    "tokens": ("kerma.cli.users",),
    "export": ("kerma.cli.export",),
    "worker": ("kerma.cli.jobs",),
    "jobs": ("kerma.cli.jobs",),
}

#: Commands that do not open the registry database (its URL is not checked for them).
NO_DATABASE_COMMANDS = frozenset({"inspect", "demo"})

#: Database back ends Kerma runs on (SQLAlchemy dialect names) and an example URL each.
SUPPORTED_DATABASES: dict[str, str] = {
    "sqlite": "sqlite:///kerma.db",
    "postgresql": "postgresql+psycopg://user@host/kerma",
}

#: PostgreSQL drivers Kerma installs (psycopg 3); ``postgresql://`` alone means psycopg2.
POSTGRESQL_DRIVERS = frozenset({"psycopg", "psycopg2"})

err_console = make_console(stderr=True)
logger = logging.getLogger("kerma")


def _print_version(value: bool) -> None:
    """Print ``kerma <version>`` and stop, for ``kerma --version``."""
    if value:
        from kerma import __version__

        print(f"kerma {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the Kerma version and exit.",
        ),
    ] = False,
) -> None:
    """Kerma: an open registry of patient radiation dose."""


def _command_names(app: typer.Typer) -> set[str]:
    """Return the names of the commands and groups registered on ``app``."""
    names = set()
    for command in app.registered_commands:
        if command.name:
            names.add(command.name)
        elif command.callback is not None:
            names.add(command.callback.__name__.replace("_", "-"))
    for group in app.registered_groups:
        name = group.name or (group.typer_instance.info.name if group.typer_instance else None)
        if isinstance(name, str):
            names.add(name)
    return names


def _register(app: typer.Typer, modules: Sequence[str]) -> None:
    """Import each module and let it add its commands (missing modules are skipped)."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(app)


def build_app(command: str | None = None) -> typer.Typer:
    """Return the ``kerma`` Typer app with the commands needed to run ``command``.

    Parameters
    ----------
    command : str, optional
        The command about to run: only its module is imported (:data:`COMMANDS`).
        :data:`VERSION_ONLY` imports none; ``None``, or a command that its modules do
        not add, registers every command.

    Returns
    -------
    typer.Typer
        The root app.
    """
    app = typer.Typer(
        name="kerma",
        help="Kerma: an open registry of patient radiation dose.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=RICH_MARKUP_MODE,
    )
    app.callback()(_root)
    if command == VERSION_ONLY:
        return app
    for module in COMMANDS.get(command or "", ()):
        _register(app, [module])
        if command in _command_names(app):
            return app
    if command is not None and command in COMMANDS:
        app = build_app(None)
    elif command is None or not _command_names(app):
        _register(app, COMMAND_MODULES)
    return app


def __getattr__(name: str) -> Any:
    """Build the full app on first use of ``kerma.cli.main.app`` (tests, documentation)."""
    if name == "app":
        full = build_app(None)
        globals()["app"] = full
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: What :func:`command_of` returns for ``kerma --version``: no command module is needed.
VERSION_ONLY = ""


def command_of(argv: Sequence[str]) -> str | None:
    """Return the command a ``kerma`` command line runs.

    The root takes only flags (``--version``, ``--help``), so the command is the first
    argument that is not an option.

    Returns
    -------
    str or None
        The command; :data:`VERSION_ONLY` when ``--version`` comes first (it stops
        before any command runs); ``None`` for help or no command (every module is
        loaded, to list the commands).
    """
    for arg in argv:
        if arg == "--version":
            return VERSION_ONLY
        if arg in {"--help", "-h"}:
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _mask_password(url: str) -> str:
    """Return a database URL with its password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def check_database_url(url: str) -> None:
    """Refuse a database URL Kerma cannot use, naming the ones it can.

    Parameters
    ----------
    url : str
        ``KERMA_DATABASE_URL``.

    Raises
    ------
    ConfigurationError
        When its back end is not SQLite or PostgreSQL, or it is PostgreSQL through a
        driver that is not installed.
    """
    scheme = url.split("://", 1)[0] if "://" in url else url.split(":", 1)[0]
    backend, _, driver = scheme.lower().partition("+")
    supported = " or ".join(
        f"{'SQLite' if name == 'sqlite' else 'PostgreSQL'} ({example})"
        for name, example in SUPPORTED_DATABASES.items()
    )
    shown = _mask_password(url)
    if backend not in SUPPORTED_DATABASES:
        raise ConfigurationError(
            f"KERMA_DATABASE_URL {shown!r} is not a database Kerma can use: Kerma stores its "
            f"registry in {supported}. Set KERMA_DATABASE_URL to one of these."
        )
    if backend == "postgresql":
        module = "psycopg2" if driver in {"", "psycopg2"} else driver
        unknown = bool(driver) and driver not in POSTGRESQL_DRIVERS
        if unknown or importlib.util.find_spec(module) is None:
            raise ConfigurationError(
                f"KERMA_DATABASE_URL {shown!r} asks for the PostgreSQL driver "
                f"{module!r}, which is not installed; Kerma installs psycopg 3: write the "
                f"URL as {SUPPORTED_DATABASES['postgresql']}."
            )


def _setting_name(loc: tuple[int | str, ...]) -> str:
    """Name the variable of a validation error's ``loc``: ``KERMA_SITE_MAP['North']``.

    The first item is the settings field (its variable is ``KERMA_`` + the name in
    capitals); further items are keys or indexes inside its JSON value.
    """
    field, *inner = loc
    return f"KERMA_{str(field).upper()}" + "".join(f"[{item!r}]" for item in inner)


def _check_settings(command: str | None) -> None:
    """Read the settings and check the database URL before a command that uses it.

    Raises
    ------
    ConfigurationError
        When a setting is invalid or the database URL cannot be used.
    """
    if not command or command in NO_DATABASE_COMMANDS:
        return
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from kerma.config import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_setting_name(error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigurationError(f"Unable to read the settings: {problems}.") from None
    except SettingsError as exc:
        # pydantic-settings could not decode a complex (JSON) value of a variable
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"KERMA_{field.group(1).upper()}" if field else "a KERMA_ variable"
        raise ConfigurationError(
            f"Unable to read the settings: {name} is not valid JSON; write it as a JSON "
            "object or list (README.md, Configuration)."
        ) from None
    check_database_url(settings.database_url)
    if settings.database_read_url:
        check_read_url(settings.database_read_url, primary=settings.database_url)


def _read_url_set() -> bool:
    """Return whether the settings (environment or ``.env``) name a read replica."""
    from kerma.config import get_settings

    try:
        return bool(get_settings().database_read_url)
    except ValueError:  # settings unreadable (ValidationError, SettingsError): reported already
        return False


def check_read_url(url: str, *, primary: str) -> None:
    """Refuse a read-replica URL that cannot be a hot standby of the primary.

    A read replica is a PostgreSQL hot standby of a PostgreSQL primary (docs/scaling.md,
    "Read replica"); any other URL would make the analytics read another database.

    Parameters
    ----------
    url : str
        ``KERMA_DATABASE_READ_URL``.
    primary : str
        ``KERMA_DATABASE_URL`` (already checked by :func:`check_database_url`).

    Raises
    ------
    ConfigurationError
        When the primary is not PostgreSQL, or ``url`` is not a PostgreSQL URL through
        an installed driver.
    """
    shown = _mask_password(url)
    if not primary.lower().startswith("postgresql"):
        raise ConfigurationError(
            f"KERMA_DATABASE_READ_URL {shown!r} is set, but the registry is SQLite "
            "(KERMA_DATABASE_URL): a read replica is a PostgreSQL hot standby of a "
            "PostgreSQL registry. Unset KERMA_DATABASE_READ_URL."
        )
    if not url.lower().startswith("postgresql"):
        raise ConfigurationError(
            f"KERMA_DATABASE_READ_URL {shown!r} is not a PostgreSQL hot standby: write "
            f"it as {SUPPORTED_DATABASES['postgresql']} (the replica of KERMA_DATABASE_URL), "
            "or unset it to read the primary (docs/scaling.md, 'Read replica')."
        )
    try:
        check_database_url(url)
    except ConfigurationError as exc:
        raise ConfigurationError(
            str(exc).replace("KERMA_DATABASE_URL", "KERMA_DATABASE_READ_URL")
        ) from None


#: Format of every log line.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PrivateFileHandler(logging.FileHandler):
    """A :class:`logging.FileHandler` whose file is created with mode 0600 (folder 0700)."""

    def _open(self) -> Any:
        """Open the log file for appending, mode 0600 whatever the umask."""
        from kerma.files import open_private

        return open_private(
            self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors
        )


#: Lowest level shown of the libraries' own loggers (without ``KERMA_DEBUG=1``).
LIBRARY_LOG_LEVELS: dict[str, int] = {"pydicom": logging.ERROR, "pynetdicom": logging.CRITICAL}


def quiet_libraries(record: logging.LogRecord) -> bool:
    """Drop pydicom and pynetdicom records below :data:`LIBRARY_LOG_LEVELS` (a filter)."""
    root = record.name.split(".", 1)[0]
    return record.levelno >= LIBRARY_LOG_LEVELS.get(root, logging.NOTSET)


def configure_logging(*, debug: bool = False) -> None:
    """Configure the root logger: standard error, and ``KERMA_LOG_FILE`` when set.

    ``KERMA_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARNING`` ...; default ``WARNING``,
    ``DEBUG`` with ``KERMA_DEBUG=1``) sets the level. The log file is created with mode
    0600; Kerma logs SOP Instance UIDs and archive hashes, never patient data
    (docs/privacy.md).
    """
    default = "DEBUG" if debug else "WARNING"
    name = os.environ.get("KERMA_LOG_LEVEL", default).strip().upper() or default
    level = logging.getLevelName(name)
    unknown = not isinstance(level, int)
    if unknown:
        level = logging.getLevelName(default)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    log_file = os.environ.get("KERMA_LOG_FILE")
    if log_file:
        handlers.append(PrivateFileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers)
    if unknown:
        logger.warning("KERMA_LOG_LEVEL %r is not a log level (DEBUG, INFO, WARNING, ERROR)", name)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``kerma`` command with error mapping (entry point of the console script).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``kerma``; default ``sys.argv[1:]``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("KERMA_DEBUG") == "1"
    configure_logging(debug=debug)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    if not debug:
        # pydicom logs every lenient decode (e.g. an IS holding a decimal) at WARNING;
        # Kerma reports what matters as warnings on the dose record instead. pynetdicom
        # logs a refused TCP connection at ERROR before Kerma's own message says it.
        # A filter on the handlers, not a logger level: importing pydicom resets its
        # logger's level to WARNING (pydicom.config.debug(False)).
        for handler in logging.getLogger().handlers:
            handler.addFilter(quiet_libraries)
    command = command_of(args)
    try:
        _check_settings(command)
        code = build_app(command)(args, prog_name="kerma", standalone_mode=False)
    except KermaError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # the CLI's boundary (STYLE.md B6): no traceback for users
        sys.exit(_report(exc, debug=debug))
    sys.exit(code if isinstance(code, int) else 0)


def _report(exc: Exception, *, debug: bool) -> int:
    """Print an error a user can act on and return the exit code (2 usage, 3 internal)."""
    if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click/typer usage errors
        exc.show()
        return int(exc.exit_code)
    if debug:
        raise exc
    logger.debug("error", exc_info=True)
    # an OSError without errno is Kerma's own sentence ("Unable to write ..."): no class name
    own_sentence = isinstance(exc, OSError) and exc.errno is None
    message = str(exc) if own_sentence else f"{type(exc).__name__}: {exc}"
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError

        if isinstance(exc, ArgumentError | SQLAlchemyError):
            first_line = str(exc).splitlines()[0]
            # a read replica (KERMA_DATABASE_READ_URL) is a second database that can fail
            names = "KERMA_DATABASE_URL"
            if _read_url_set():
                names = "KERMA_DATABASE_URL and KERMA_DATABASE_READ_URL (the read replica)"
            err_console.print(
                f"[red]error:[/red] the registry database cannot be used ({escape(first_line)}). "
                f"Check {names} (e.g. sqlite:///kerma.db or "
                "postgresql+psycopg://user@host/db) and that the server is running.",
                soft_wrap=True,
            )
            return 2
    if isinstance(exc, re.error):
        err_console.print(
            f"[red]error:[/red] invalid regular expression ({escape(str(exc))}); check "
            "KERMA_NON_PATIENT_PATTERNS and the exam rules file.",
            soft_wrap=True,
        )
        return 2
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        # "address 127.0.0.1:8000: Address already in use" when the command named it
        where = f"address {exc.filename}: " if exc.filename else ""
        message = f"{where}{exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        err_console.print(
            f"[red]error:[/red] {escape(message)}. Another program (another kerma serve, "
            "listen or hl7 listen?) listens on that port: stop it, or choose another port "
            "with --port.",
            soft_wrap=True,
        )
        return 2
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        err_console.print(
            f"[red]error:[/red] {escape(message)}. The --host address is not one of this "
            "machine's (127.0.0.1 for this machine only, 0.0.0.0 for every interface).",
            soft_wrap=True,
        )
        return 2
    if isinstance(exc, OSError):
        err_console.print(
            f"[red]error:[/red] {escape(message)}. Check the path and permissions.", soft_wrap=True
        )
        return 2
    if isinstance(exc, ValueError | KeyError):
        err_console.print(
            f"[red]error:[/red] {escape(message)}. Check the command's options (--help).",
            soft_wrap=True,
        )
        return 2
    err_console.print(
        f"[red]internal error:[/red] {escape(message)}. "
        "Run with KERMA_DEBUG=1 for details and report it.",
        soft_wrap=True,
    )
    return 3


if __name__ == "__main__":
    main()
