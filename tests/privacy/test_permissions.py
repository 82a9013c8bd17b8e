"""Files Kerma writes are 0600 and its folders 0700, whatever the umask (issue 11, item 5).

``kerma import`` and ``kerma listen`` run as subprocesses with umask 022 (the usual
default, which would leave files 0644, world-readable) in the default configuration
(relative paths, run from a working folder): every file and folder they wrote is then
checked, the SQLite ``-wal``/``-shm`` files, archive, spool, key, log and a CSV export
included.
"""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DICOM_DIR, ROOT

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

FILES = ("CT-RDSR-Siemens_Flash-TAP-SS.dcm", "DX-RDSR-Canon_CXDI.dcm", "ESR_non-dose.dcm")


def written(folder: Path, *, skip: tuple[str, ...] = ()) -> Iterator[tuple[Path, int, bool]]:
    """Yield (path, mode, is_dir) of everything under ``folder`` except top-level ``skip``."""
    for path in sorted(folder.rglob("*")):
        if path.relative_to(folder).parts[0] in skip:
            continue
        info = path.lstat()
        yield path, stat.S_IMODE(info.st_mode), stat.S_ISDIR(info.st_mode)


def wider_than_private(folder: Path, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Return what under ``folder`` is not 0600 (files) or 0700 (folders)."""
    return [
        f"{path.relative_to(folder)} {oct(mode)}"
        for path, mode, is_dir in written(folder, skip=skip)
        if mode != (0o700 if is_dir else 0o600)
    ]


def kerma(workdir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``kerma`` in ``workdir`` with umask 022."""
    return subprocess.run(
        [sys.executable, "-m", "kerma.cli.main", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        preexec_fn=lambda: os.umask(0o022),  # the child has no threads yet
    )


def default_env(workdir: Path) -> dict[str, str]:
    """Environment of a default configuration run from ``workdir`` (only a log file added)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERMA_")}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        KERMA_LOG_FILE="logs/kerma.log",
        KERMA_LOG_LEVEL="DEBUG",
    )
    return env


@needs_shared
def test_import_writes_only_private_files_under_umask_022(tmp_path: Path) -> None:
    """kerma import + rejects --out with umask 022: database, WAL, archive, key, log, CSV."""
    workdir = tmp_path / "work"
    source = workdir / "input"
    source.mkdir(parents=True)
    for name in FILES:
        (source / name).write_bytes((DICOM_DIR / name).read_bytes())
    env = default_env(workdir)
    done = kerma(workdir, "import", "input", env=env)
    assert done.returncode == 0, done.stderr
    done = kerma(workdir, "rejects", "--out", "exports/rejects.csv", env=env)
    assert done.returncode == 0, done.stderr
    names = {p.relative_to(workdir).as_posix() for p, _, _ in written(workdir, skip=("input",))}
    assert {"kerma.db", "kerma-key/kerma.key", "logs/kerma.log", "exports/rejects.csv"} <= names
    assert any(n.startswith("kerma-archive/") and n.endswith(".dcm") for n in names)
    assert wider_than_private(workdir, skip=("input",)) == []


@needs_shared
def test_sqlite_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    """The -wal and -shm files SQLite makes next to a 0600 database are 0600 too."""
    code = (
        "import os; os.umask(0o022)\n"
        "from kerma.api import Registry\n"
        "reg = Registry('sqlite:///kerma.db')\n"
        f"reg.import_paths([{str(DICOM_DIR / FILES[0])!r}])\n"
        "import pathlib, stat\n"
        "print(sorted((p.name, oct(stat.S_IMODE(p.stat().st_mode))) "
        "for p in pathlib.Path('.').glob('kerma.db*')))\n"
    )
    env = default_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert ("kerma.db-wal", "0o600") in listed
    assert ("kerma.db-shm", "0o600") in listed
    assert ("kerma.db", "0o600") in listed


@needs_shared
@pytest.mark.network
def test_scp_writes_only_private_files_under_umask_022(tmp_path: Path) -> None:
    """kerma listen with umask 022: spool, archive, database and log all private."""
    from tests.net.conftest import KermaListener, registry_sop_uids, storescu

    scp = KermaListener(tmp_path / "kerma", extra_env={"KERMA_LOG_FILE": "logs/listen.log"})
    old = os.umask(0o022)
    try:
        scp.start()
    finally:
        os.umask(old)
    try:
        done = storescu(scp.port, [DICOM_DIR / FILES[0], DICOM_DIR / FILES[1]])
        assert done.returncode == 0, done.stderr
        scp.wait_drained()
        assert len(registry_sop_uids(scp.settings)) == 2
    finally:
        scp.terminate()
        scp.reap_orphans()
    workdir = scp.workdir
    names = {p.relative_to(workdir).as_posix() for p, _, _ in written(workdir)}
    assert {"kerma.db", "kerma-key/kerma.key", "logs/listen.log", "archive/incoming"} <= names
    # listen.log is the test's own capture of the subprocess output, not a Kerma file
    assert wider_than_private(workdir, skip=("listen.log",)) == []


@needs_shared
def test_spreadsheet_parquet_and_quality_exports_are_private(tmp_path: Path) -> None:
    """export xlsx, export parquet and quality --csv under umask 022 write 0600 files in
    0700 folders (regression: the workbook and the Parquet files were 0644, world-readable,
    though they hold pseudonyms)."""
    workdir = tmp_path / "work"
    source = workdir / "input"
    source.mkdir(parents=True)
    for name in FILES:
        (source / name).write_bytes((DICOM_DIR / name).read_bytes())
    (workdir / "exports").mkdir(mode=0o700)
    env = default_env(workdir)
    assert kerma(workdir, "import", "input", env=env).returncode == 0
    for args in (
        ("export", "xlsx", "--out", "exports/all.xlsx"),
        ("export", "parquet", "--out", "exports/pq"),
        ("quality", "ei", "--csv", "exports/ei.csv"),
    ):
        done = kerma(workdir, *args, env=env)
        assert done.returncode == 0, done.stderr
    names = {p.relative_to(workdir).as_posix() for p, _, _ in written(workdir, skip=("input",))}
    assert {"exports/all.xlsx", "exports/ei.csv"} <= names
    assert any(n.startswith("exports/pq/studies/") and n.endswith(".parquet") for n in names)
    assert wider_than_private(workdir, skip=("input",)) == []
