"""Read replica (#15): the analytics read a hot standby; writes go to the primary.

The test starts a second PostgreSQL cluster as a streaming hot standby of the test
server (``pg_basebackup -R`` from 127.0.0.1:5432 into a temporary folder, ``pg_ctl
start`` on a free loopback port, run as the ``postgres`` OS user), imports into the
primary through a registry with ``KERMA_DATABASE_READ_URL`` pointing at the standby,
and reads the studies, statistics and sites back through the replica. The primary must
accept replication connections from 127.0.0.1 (``scripts/test`` adds the pg_hba.conf
line; ``docs/scaling.md``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from kerma.services.registry import Registry
from tests.db_fixtures import fresh_database, make_settings, postgres_admin_url
from tests.scale.race_data import SHARED_DICOM

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command as the ``postgres`` OS user (the tests run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def _drop_slot(admin: str, slot: str) -> None:
    """Drop a replication slot of the test server when it exists."""
    import psycopg

    conninfo = make_url(admin).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (slot,),
        )


@pytest.fixture
def standby() -> Iterator[int]:
    """Start a hot standby of the test server on a free port; yield the port."""
    admin = postgres_admin_url()
    if admin is None or not BIN or shutil.which("runuser") is None:
        pytest.skip("needs a PostgreSQL server, its binaries and runuser")
    url = make_url(admin)
    if url.host not in {"127.0.0.1", "localhost"}:
        pytest.skip("the standby is made from a server on this machine")
    # pytest's own temporary folders are root's (0700): the standby's folder is one the
    # postgres user owns, in the system's temporary directory
    folder = Path(tempfile.mkdtemp(prefix="kerma-standby-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    bin_dir = Path(BIN[-1])
    # a physical replication slot keeps the WAL the standby has not received yet (a busy
    # server recycles it within seconds); dropped when the test ends
    slot = f"kerma_test_{os.getpid()}_{_free_port()}"
    for _attempt in range(3):  # a shared server may end a walsender (DROP ... FORCE)
        made = _as_postgres(
            str(bin_dir / "pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres",
            "-D", str(data), "-R", "-X", "stream", "--checkpoint=fast", "-C", "-S", slot,
            timeout=600,
        )  # fmt: skip
        if made.returncode == 0 or "pg_hba.conf" in made.stderr:
            break
        _drop_slot(admin, slot)
    if made.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(
            f"the server refuses a base backup (replication in pg_hba.conf?): {made.stderr}"
        )
    # a Debian cluster keeps its configuration in /etc/postgresql (not copied): the
    # standby gets a minimal one of its own
    for name, body in (
        ("postgresql.conf", "hot_standby = on\n"),
        ("pg_hba.conf", "local all all trust\nhost all all 127.0.0.1/32 trust\n"),
        ("pg_ident.conf", ""),
    ):
        target = data / name
        if not target.exists():
            target.write_text(body)
            if os.geteuid() == 0:
                shutil.chown(target, "postgres", "postgres")
    port = _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c hot_standby=on"
    started = _as_postgres(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
        "-w", "start", timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr + (folder / "log").read_text()
    try:
        yield port
    finally:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop", timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
        _drop_slot(admin, slot)


def _wait_for_studies(registry: Registry, n: int, timeout_s: float = 60.0) -> int:
    """Return the replica's study count once it is ``n`` (or when ``timeout_s`` passed)."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        try:
            with registry.read_session() as session:
                seen = int(session.execute(text("SELECT count(*) FROM study")).scalar_one())
        except (OperationalError, ProgrammingError):  # database or table not replayed yet
            seen = -1
        if seen == n:
            return seen
        time.sleep(0.2)
    return seen


def test_analytics_read_what_the_primary_wrote(standby: int, tmp_path: Path) -> None:
    """Imported through the primary, the studies and statistics are read on the standby."""
    with fresh_database("postgresql", tmp_path) as url:
        replica_url = make_url(url).set(port=standby).render_as_string(hide_password=False)
        settings = make_settings(url, tmp_path, database_read_url=replica_url, site="North")
        with Registry(settings=settings) as registry:
            summary = registry.import_paths(
                [
                    SHARED_DICOM / n
                    for n in ("CT-RDSR-Toshiba_DoseCheck.dcm", "DX-RDSR-Canon_CXDI.dcm")
                ]
            )
            assert summary.n_imported == 2
            assert registry.replica_engine is not None
            # the standby replays the primary's WAL (the new database included): wait
            # until it has our studies
            seen = _wait_for_studies(registry, 2)
            assert seen == 2
            with registry.read_session() as session:
                assert session.execute(text("SELECT pg_is_in_recovery()")).scalar_one() is True
                port = session.execute(text("SELECT current_setting('port')")).scalar_one()
            assert int(port) == standby
            frame = registry.studies()
            assert len(frame) == 2
            assert sorted(frame["modality"]) == ["CT", "DX"]
            assert list(registry.sites()["studies"]) == [2]
            stats = registry.statistics(by=("modality_family",))
            assert stats.table["n"].sum() >= 2
            with registry.session(write=False) as session:  # writes and own reads: primary
                assert session.execute(text("SELECT pg_is_in_recovery()")).scalar_one() is False
