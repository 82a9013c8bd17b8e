"""The ``kerma`` root command: ``--version``, start-up cost, configuration errors, help texts."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest
import typer
from typer.testing import CliRunner

import kerma
from kerma.cli.main import COMMANDS, app, build_app, check_database_url, command_of
from kerma.errors import ConfigurationError


class TestVersionOption:
    """``kerma --version`` prints the installed version and exits 0."""

    def test_version_printed_alone(self) -> None:
        """The output is exactly ``kerma <version>``, the package's version."""
        result = CliRunner().invoke(app, ["--version"])
        assert result.exit_code == 0, result.output
        assert result.output == f"kerma {kerma.__version__}\n"
        assert kerma.__version__ == version("kerma")  # metadata and code agree

    def test_version_wins_over_a_command(self) -> None:
        """``--version`` is eager: the command after it does not run."""
        result = CliRunner().invoke(app, ["--version", "rejects"])
        assert result.exit_code == 0, result.output
        assert result.output == f"kerma {kerma.__version__}\n"

    def test_console_entry_point_exits_zero(self) -> None:
        """Through ``main()`` (the console script's error mapping) the exit code is 0."""
        completed = subprocess.run(
            [sys.executable, "-c", "from kerma.cli.main import main; main()", "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout == f"kerma {kerma.__version__}\n"


#: Libraries ``kerma --version`` and ``kerma inspect FILE`` must not load (issue #9 item 7).
HEAVY_MODULES = ("pandas", "sqlalchemy", "pynetdicom", "fastapi", "uvicorn")


def modules_loaded_by(*args: str) -> set[str]:
    """Run ``kerma ARGS`` in a fresh interpreter; return the top-level modules it loaded."""
    code = (
        "import contextlib, io, sys\n"
        "from kerma.cli.main import main\n"
        "out = io.StringIO()\n"
        "try:\n"
        "    with contextlib.redirect_stdout(out):\n"
        f"        main({list(args)!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(code, file=sys.stderr)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "0", run.stderr
    return set(run.stdout.split())


class TestStartUp:
    """``kerma`` imports only the module of the command it runs."""

    def test_version_loads_no_heavy_library(self) -> None:
        """``kerma --version``: none of pandas, SQLAlchemy, pynetdicom, FastAPI, uvicorn."""
        loaded = modules_loaded_by("--version")
        assert "typer" in loaded
        assert not loaded & set(HEAVY_MODULES), loaded & set(HEAVY_MODULES)

    def test_inspect_one_file_loads_no_heavy_library(self) -> None:
        """``kerma inspect FILE`` reads the file with pydicom, without the registry or network."""
        from tests.conftest import DICOM_DIR

        if not DICOM_DIR.is_dir():
            pytest.skip("../shared/dicom is not beside the repository")
        loaded = modules_loaded_by("inspect", str(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"))
        assert "pydicom" in loaded
        assert not loaded & set(HEAVY_MODULES), loaded & set(HEAVY_MODULES)

    @pytest.mark.parametrize(
        ("argv", "command"),
        [
            (["--version"], ""),
            (["--version", "import", "x"], ""),
            (["--help"], None),
            ([], None),
            (["import", "--help"], "import"),
            (["rejects", "purge", "--yes"], "rejects"),
        ],
        ids=str,
    )
    def test_command_of(self, argv: list[str], command: str | None) -> None:
        """The command is the first argument that is not an option; --version needs none."""
        assert command_of(argv) == command

    def test_only_the_commands_module_is_registered(self) -> None:
        """``build_app("listen")`` adds the network commands only; None adds every command."""
        names = {c.name for c in build_app("listen").registered_commands}
        assert names == {"listen", "pull"}
        full = build_app(None)
        every = {c.name for c in full.registered_commands} | {
            g.name for g in full.registered_groups
        }
        assert {"inspect", "import", "rejects", "listen", "pull", "serve", "db"} <= every
        assert build_app("no-such-command").registered_commands  # all, for the error

    def test_every_command_is_mapped_to_its_module(self) -> None:
        """Each command of ``kerma --help`` is found through COMMANDS, not by loading all."""
        full = build_app(None)
        every = {c.name for c in full.registered_commands} | {
            g.name for g in full.registered_groups
        }
        assert every <= set(COMMANDS)
        for name in every:
            app_ = build_app(name)
            names = {c.name for c in app_.registered_commands} | {
                g.name for g in app_.registered_groups
            }
            assert name in names
            assert len(names) < len(every), name


class TestConfigurationErrors:
    """A database URL Kerma cannot use is refused at start, naming what it can use."""

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("mysql://kerma:secret@db/kerma", "'mysql://kerma:***@db/kerma' is not a database"),
            ("mssql+pyodbc://db/kerma", "is not a database Kerma can use"),
            ("postgresql+asyncpg://db/kerma", "asks for the PostgreSQL driver 'asyncpg'"),
        ],
        ids=["mysql", "mssql", "postgresql-other-driver"],
    )
    def test_unsupported_database_url(self, url: str, message: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """Exit 2, one clear line naming SQLite and PostgreSQL, no traceback, password hidden."""
        env = dict(os.environ, KERMA_DATABASE_URL=url, COLUMNS="400")
        run = subprocess.run(
            [sys.executable, "-m", "kerma.cli.main", "rejects"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert run.returncode == 2, run.stderr
        assert message in run.stderr
        assert "Traceback" not in run.stderr + run.stdout
        assert "secret" not in run.stderr
        if "is not a database" in message:
            assert "SQLite (sqlite:///kerma.db) or PostgreSQL" in run.stderr
        assert not (tmp_path / "kerma-archive").exists()

    def test_supported_urls_pass(self) -> None:
        """SQLite and PostgreSQL through psycopg are accepted."""
        for url in ("sqlite:///kerma.db", "sqlite://", "postgresql+psycopg://u@h/db"):
            check_database_url(url)
        with pytest.raises(ConfigurationError, match="not a database Kerma can use"):
            check_database_url("oracle://h/db")

    def test_invalid_setting_is_a_clear_error(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """KERMA_SCP_PORT=abc: exit 2 naming the variable, no traceback."""
        env = dict(os.environ, KERMA_SCP_PORT="abc", COLUMNS="400")
        run = subprocess.run(
            [sys.executable, "-m", "kerma.cli.main", "listen"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert run.returncode == 2
        assert "KERMA_SCP_PORT:" in run.stderr
        assert "Traceback" not in run.stderr

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("not json", "KERMA_SITE_MAP is not valid JSON"),
            ('{"General Hospital": 1}', "KERMA_SITE_MAP['General Hospital']: Input should be"),
        ],
    )
    def test_invalid_json_setting_names_the_variable(  # type: ignore[no-untyped-def]
        self, tmp_path, value: str, message: str
    ) -> None:
        """A JSON setting that is no JSON, or a wrong value in it: exit 2, the variable named."""
        env = dict(os.environ, KERMA_SITE_MAP=value, COLUMNS="400")
        env["KERMA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'k.db'}"
        run = subprocess.run(
            [sys.executable, "-m", "kerma.cli.main", "sites", "list"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert run.returncode == 2, run.stderr
        assert message in run.stderr
        assert "--help" not in run.stderr and "Traceback" not in run.stderr


class TestReadReplicaUrl:
    """``KERMA_DATABASE_READ_URL``: refused unless a PostgreSQL replica of a PostgreSQL
    primary; a replica that does not answer is named in the error."""

    @staticmethod
    def _kerma(tmp_path, **env_values: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        env = dict(os.environ, COLUMNS="400", **env_values)
        return subprocess.run(
            [sys.executable, "-m", "kerma.cli.main", "sites", "list"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

    def test_sqlite_read_url_refused(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """A SQLite "replica" would silently read another registry: exit 2, no read."""
        run = self._kerma(
            tmp_path,
            KERMA_DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}",
            KERMA_DATABASE_READ_URL=f"sqlite:///{tmp_path / 'other.db'}",
        )
        assert run.returncode == 2, run.stdout + run.stderr
        assert "KERMA_DATABASE_READ_URL" in run.stderr
        assert "PostgreSQL hot standby" in run.stderr
        assert not (tmp_path / "other.db").exists()
        assert "Traceback" not in run.stderr

    def test_postgresql_read_url_on_sqlite_refused(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """A replica of a SQLite registry cannot exist: exit 2, the variable named."""
        run = self._kerma(
            tmp_path,
            KERMA_DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}",
            KERMA_DATABASE_READ_URL="postgresql+psycopg://kerma@127.0.0.1/kerma",
        )
        assert run.returncode == 2, run.stdout + run.stderr
        assert "KERMA_DATABASE_READ_URL" in run.stderr and "SQLite" in run.stderr
        assert "Traceback" not in run.stderr

    @pytest.mark.postgres
    def test_replica_url_works_or_is_named(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """The primary itself as the replica works; a replica nothing answers is named."""
        import socket

        from tests.db_fixtures import fresh_database

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with fresh_database("postgresql", tmp_path) as url:
            same = self._kerma(tmp_path, KERMA_DATABASE_URL=url, KERMA_DATABASE_READ_URL=url)
            assert same.returncode == 0, same.stdout + same.stderr
            down = self._kerma(
                tmp_path,
                KERMA_DATABASE_URL=url,
                KERMA_DATABASE_READ_URL=f"postgresql+psycopg://kerma@127.0.0.1:{port}/kerma",
            )
        assert down.returncode == 2, down.stdout + down.stderr
        assert "KERMA_DATABASE_READ_URL" in down.stderr
        assert "Traceback" not in down.stderr


class TestBusyPort:
    """A port another program holds is a one-line error saying what to do, exit 2."""

    def test_serve_on_a_busy_port(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """``kerma serve --port P`` while P is held: no uvicorn log, no traceback."""
        import socket

        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            port = held.getsockname()[1]
            env = {k: v for k, v in os.environ.items() if not k.startswith("KERMA_")}
            env.update(COLUMNS="400", KERMA_DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}")
            run = subprocess.run(
                [sys.executable, "-m", "kerma.cli.main", "serve", "--port", str(port)],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
                env=env,
                cwd=tmp_path,
            )
        assert run.returncode == 2, run.stderr
        assert f"address 127.0.0.1:{port}: Address already in use" in run.stderr
        assert "choose another port with --port" in run.stderr
        assert "Traceback" not in run.stderr + run.stdout
        assert "Uvicorn running" not in run.stderr


#: Commands of the intake engineer's modules (ingest, net, serve, db), whose help is checked.
INTAKE_COMMANDS = (
    ["import"],
    ["rejects"],
    ["rejects", "purge"],
    ["ignored"],
    ["reprocess"],
    ["listen"],
    ["pull"],
    ["serve"],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
)


@pytest.fixture
def wide_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render Typer help 1,000 columns wide (restored afterwards).

    Typer reads ``TERMINAL_WIDTH`` once, when ``typer.rich_utils`` is first imported, so
    another test's environment may have fixed its width for the session.
    """
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 1000)


@pytest.mark.usefixtures("wide_help")
class TestHelpTexts:
    """Help texts: paragraphs not hard-wrapped, no reStructuredText markup."""

    @pytest.mark.parametrize("command", INTAKE_COMMANDS, ids=" ".join)
    def test_help_paragraphs_are_whole_lines(self, command: list[str]) -> None:
        """On a wide console each docstring paragraph is one line; no ``double backticks``."""
        import inspect as inspect_module

        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "1000"})
        assert result.exit_code == 0, result.output
        out = result.output
        assert "``" not in out and ":class:" not in out and ":func:" not in out
        click_command = typer.main.get_command(app)
        for name in command:
            click_command = click_command.commands[name]  # type: ignore[attr-defined]
        doc = inspect_module.cleandoc(click_command.help or "")
        lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
        for paragraph in doc.split("\n\n"):
            text = " ".join(paragraph.replace("`", "").split())
            assert any(text in line for line in lines), f"{text!r} is wrapped in:\n{out}"

    @pytest.mark.parametrize("command", INTAKE_COMMANDS, ids=" ".join)
    def test_help_shows_metavars_not_python_types(self, command: list[str]) -> None:
        """Arguments read ``PATHS...``; no ``<bool>``, ``<list[Path]>`` or ``{paths}``.

        Typer 0.27 and later print Python types in help; pyproject pins below it.
        """
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "1000"})
        out = result.output
        assert "<bool>" not in out and "<list[" not in out, out
        assert "{" not in out.split("Usage:", 1)[1].splitlines()[0], out

    def test_markup_in_option_help_is_shown_literally(self) -> None:
        """Markdown help must not swallow ``<file>``/``<uid>`` as HTML tags."""
        result = CliRunner().invoke(app, ["rejects", "--help"], env={"COLUMNS": "1000"})
        assert "where <file> and <uid> stand for any text" in result.output
