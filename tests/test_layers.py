"""DESIGN.md's layers, enforced: the import-linter contracts of ``pyproject.toml``.

``[tool.importlinter]`` holds one contract per package of DESIGN.md's "Layers" table
(what each package must not import). import-linter (grimp) reads every ``import``
statement of a module, inside functions too, so an import hidden in a function breaks
a contract as a module-level one does; the second test shows it on a copy of the
package.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SRC = ROOT / "src" / "kerma"

#: Runs import-linter in a fresh interpreter whose ``kerma`` is the copy in the working
#: directory (``sys.argv[1]``: the configuration file); exits with the linter's code.
LINT_COPY = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, ".")
    import kerma
    assert kerma.__file__.startswith(sys.argv[2]), kerma.__file__
    from importlinter.cli import lint_imports
    sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))
    """
)


def lint_copy(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the contracts of ``pyproject.toml`` on the ``kerma`` package under ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", LINT_COPY, str(PYPROJECT), str(root)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def lint_in_process() -> int:
    """Run the contracts in this process, leaving the logging configuration as it was.

    import-linter configures logging with ``dictConfig`` (``disable_existing_loggers``
    true), which would silence every ``kerma`` logger already made for the tests that
    follow (the HL7 tests read Kerma's log).
    """
    loggers = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    try:
        return lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    finally:
        for logger in loggers:
            logger.disabled = False


class TestLayers:
    """The import rules of DESIGN.md hold and the check can fail."""

    def test_contracts_kept(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Every import-linter contract is kept by the package as it is."""
        code = lint_in_process()
        output = capsys.readouterr().out
        assert code == 0, output
        assert "0 broken" in output

    def test_contracts_cover_every_package(self) -> None:
        """Each package of src/kerma is the source of a contract (none is left out)."""
        import tomllib

        config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
        sources = {
            m for c in config["contracts"] for m in c.get("source_modules", c.get("modules", []))
        }
        packages = {
            f"kerma.{p.stem if p.is_file() else p.name}"
            for p in SRC.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists())
            or (p.suffix == ".py" and p.name != "__init__.py")
        }
        assert packages - sources == set()

    @pytest.mark.parametrize(
        ("module", "forbidden", "contract"),
        [
            ("analysis/stats.py", "kerma.db.session", "analysis is pure"),
            ("api.py", "kerma.db.studies", "api (kerma.Registry) is a facade over services"),
            ("cli/inspect.py", "kerma.dicom.extract", "cli calls services"),
            ("net/scp.py", "kerma.services.registry", "net hands bytes to ingest"),
        ],
        ids=["analysis-db", "api-db", "cli-dicom", "net-services"],
    )
    def test_import_inside_function_breaks_contract(
        self, tmp_path: Path, module: str, forbidden: str, contract: str
    ) -> None:
        """A forbidden import placed inside a function of a copy is reported as broken."""
        copy = tmp_path / "kerma"
        shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
        target = copy / module
        with target.open("a", encoding="utf-8") as handle:
            handle.write(f"\n\ndef _layer_probe() -> object:\n    import {forbidden}\n\n")
            handle.write(f"    return {forbidden}\n")
        result = lint_copy(tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        dotted = "kerma." + module.removesuffix(".py").replace("/", ".")
        assert f"{contract}" in result.stdout
        assert "BROKEN" in result.stdout
        assert f"{dotted} -> {forbidden}" in result.stdout

    def test_unchanged_copy_passes(self, tmp_path: Path) -> None:
        """The same run on an unchanged copy keeps every contract (the probe is the cause)."""
        shutil.copytree(SRC, tmp_path / "kerma", ignore=shutil.ignore_patterns("__pycache__"))
        result = lint_copy(tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
