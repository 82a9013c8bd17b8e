"""The ``kerma`` root command: ``--version``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from typer.testing import CliRunner

import kerma
from kerma.cli.main import app


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
