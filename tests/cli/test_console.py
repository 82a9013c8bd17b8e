"""Width of the ``kerma`` consoles off a terminal (pipes, CI logs): kerma.cli.console."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kerma.cli.console import NON_TERMINAL_WIDTH, console_width, make_console
from tests.conftest import CASES_DIR, DICOM_DIR, ROOT
from tests.db_fixtures import TEST_PSEUDONYM_KEY


class TestConsoleWidth:
    """console_width and make_console."""

    def test_pipe_without_columns_gets_wide_width(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A stream that is not a terminal and no COLUMNS: 160 columns, not Rich's 80."""
        monkeypatch.delenv("COLUMNS", raising=False)
        assert console_width(io.StringIO()) == NON_TERMINAL_WIDTH == 160

    def test_columns_is_honoured(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """COLUMNS wins over the default, on a pipe as on a terminal."""
        monkeypatch.setenv("COLUMNS", "97")
        assert console_width(io.StringIO()) == 97
        monkeypatch.setattr(sys, "stdout", io.StringIO())
        assert make_console().width == 97

    def test_bad_columns_is_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A COLUMNS that is not a positive number is ignored."""
        monkeypatch.setenv("COLUMNS", "wide")
        assert console_width(io.StringIO()) == NON_TERMINAL_WIDTH
        monkeypatch.setenv("COLUMNS", "0")
        assert console_width(io.StringIO()) == NON_TERMINAL_WIDTH

    def test_terminal_is_left_to_rich(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a terminal (a pseudo-terminal here) Rich measures the width itself."""
        monkeypatch.delenv("COLUMNS", raising=False)
        leader, follower = os.openpty()
        try:
            with open(follower, "w", closefd=False) as tty:
                assert tty.isatty()
                assert console_width(tty) is None
        finally:
            os.close(leader)
            os.close(follower)

    def test_make_console_on_stderr(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """make_console(stderr=True) writes to stderr with the same width rule."""
        monkeypatch.delenv("COLUMNS", raising=False)
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        console = make_console(stderr=True)
        assert console.stderr and console.width == NON_TERMINAL_WIDTH


@pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared is not beside the repository")
class TestPipedTables:
    """``kerma studies | cat``: a real subprocess whose stdout is a pipe."""

    def run(self, workdir: Path, *args: str, columns: str | None = None) -> str:
        """Run ``kerma ARGS`` with stdout to a pipe; return stdout."""
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        env.update(
            KERMA_DATABASE_URL=f"sqlite:///{workdir / 'kerma.db'}",
            KERMA_ARCHIVE_DIR=str(workdir / "archive"),
            KERMA_PSEUDONYM_KEY=TEST_PSEUDONYM_KEY,
            PYTHONPATH=str(ROOT / "src"),
        )
        if columns is not None:
            env["COLUMNS"] = columns
        done = subprocess.run(
            [sys.executable, "-m", "kerma.cli.main", *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def test_studies_table_is_not_folded_to_80_columns(self, tmp_path: Path) -> None:
        """Piped output is up to 160 columns wide (or COLUMNS), so rows stay on one line."""
        self.run(
            tmp_path,
            "import",
            str(CASES_DIR / "C05-ct-siemens-continued-study-a.dcm"),
            str(DICOM_DIR / "DX-Im-GE_XR220-1.dcm"),
        )
        wide = self.run(tmp_path, "studies").splitlines()
        assert 80 < max(len(line) for line in wide) <= NON_TERMINAL_WIDTH
        body = [line for line in wide if line.startswith("│")]
        assert len(body) == 2  # one line per study: nothing folded
        narrow = self.run(tmp_path, "studies", columns="70").splitlines()
        assert max(len(line) for line in narrow) <= 70
        assert len([line for line in narrow if line.startswith("│")]) > 2
