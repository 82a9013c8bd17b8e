"""Distributed re-processing on procrastinate's job queue (#15), on a real PostgreSQL.

A registry holding the objects of ``../shared/dicom`` is damaged the same way twice
(every CT event's CTDIvol doubled, every study's summary emptied); one copy is repaired
by the serial ``kerma reprocess``, ``kerma alerts recheck`` and ``kerma exams --apply``,
the other by the same work queued in chunks (``--queue``) and run by two ``kerma worker
--until-empty`` processes at once. Both must equal each other (counts, every stored value by natural
key: :func:`tests.scale.test_race._compare`) and the registry before the damage. A
chunk that fails is listed by ``kerma jobs`` with its error and the other chunks still
run. On SQLite the queue is refused with a message naming the serial command.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from kerma.services.registry import Registry
from tests.db_fixtures import fresh_database, make_settings
from tests.scale.race_data import SHARED_DICOM, fingerprint
from tests.scale.test_race import _compare, _counts, _env

#: Statements that damage a registry the way an old extractor or derive version could.
DAMAGE = (
    "UPDATE irradiation_event SET ctdivol_mgy = ctdivol_mgy * 2 WHERE ctdivol_mgy IS NOT NULL",
    "UPDATE study SET ct_dlp_total_mgycm = NULL, dap_total_gym2 = NULL",
)


#: Jobs that ended well.
DONE = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

#: An argument of the one failed job.
FAILED_ARG = "SELECT args->>'{arg}' FROM procrastinate_jobs WHERE status = 'failed'"


def _execute(url: str, *statements: str) -> None:
    """Run SQL statements on a registry in one transaction."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def _scalar(url: str, query: str) -> object:
    """Return the one value of a query."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(query)).scalar_one()
    finally:
        engine.dispose()


def _ctdivol(url: str) -> dict[tuple[str, int], tuple[int, float]]:
    """Return (SOP Instance UID, event index) -> (study id, CTDIvol mGy) of the CT events."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT r.sop_instance_uid, e.event_index, e.study_id, e.ctdivol_mgy "
                    "FROM irradiation_event e JOIN dose_report r ON r.id = e.dose_report_id "
                    "WHERE e.ctdivol_mgy IS NOT NULL"
                )
            )
            return {(str(r[0]), int(r[1])): (int(r[2]), float(r[3])) for r in rows}
    finally:
        engine.dispose()


def _kerma(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run ``kerma ARGS`` in a subprocess and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "kerma.cli.main", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _workers(n: int, env: dict[str, str], cwd: Path) -> list[tuple[int, str, str]]:
    """Run ``n`` ``kerma worker --until-empty`` processes at once; their exit and output."""
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "kerma.cli.main", "worker", "--until-empty"],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    return [(node.wait(timeout=900), *node.communicate()) for node in nodes]


def _import(url: str, folder: Path) -> None:
    """Import the shared objects into a registry (serially, in one process)."""
    with Registry(settings=make_settings(url, folder)) as registry:
        summary = registry.import_paths([SHARED_DICOM])
    assert summary.n_imported > 40


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom is not beside the repo")
class TestJobQueue:
    """``--queue`` + ``kerma worker`` on PostgreSQL."""

    def test_two_workers_equal_the_serial_commands(self, tmp_path: Path) -> None:
        """Queued reprocess, recheck and derive run by 2 workers = the serial commands."""
        with (
            fresh_database("postgresql", tmp_path) as serial_url,
            fresh_database("postgresql", tmp_path) as queued_url,
        ):
            _import(serial_url, tmp_path / "serial")
            _import(queued_url, tmp_path / "queued")
            before = fingerprint(queued_url)
            for url in (serial_url, queued_url):
                _execute(url, *DAMAGE)
            assert _scalar(queued_url, "SELECT count(ct_dlp_total_mgycm) FROM study") == 0

            with Registry(settings=make_settings(serial_url, tmp_path / "serial")) as registry:
                serial = registry.reprocess()
                registry.recheck_alerts()
                registry.apply_exams()
            assert serial.reports > 40

            env = _env(queued_url, tmp_path / "queued" / "archive")
            queued = _kerma(["reprocess", "--queue", "--chunk-size", "5"], env, tmp_path)
            assert queued.returncode == 0, queued.stdout + queued.stderr
            assert "kerma.reprocess_reports" in queued.stdout
            recheck = _kerma(["alerts", "recheck", "--queue", "--chunk-size", "7"], env, tmp_path)
            assert recheck.returncode == 0, recheck.stdout + recheck.stderr
            derive = _kerma(["exams", "--apply", "--queue", "--chunk-size", "9"], env, tmp_path)
            assert derive.returncode == 0, derive.stdout + derive.stderr
            assert "kerma.derive" in derive.stdout
            studies = int(_scalar(queued_url, "SELECT count(*) FROM study"))  # type: ignore[arg-type]
            jobs = int(_scalar(queued_url, "SELECT count(*) FROM procrastinate_jobs"))  # type: ignore[arg-type]
            rejected = int(_scalar(queued_url, "SELECT count(*) FROM rejected_object"))  # type: ignore[arg-type]
            assert jobs == -(-studies // 5) + -(-rejected // 5) + -(-studies // 7) + -(
                -studies // 9
            )

            for code, out, err in _workers(2, env, tmp_path):
                assert code == 0, out + err
                assert "Traceback" not in err
            states = _kerma(["jobs"], env, tmp_path)
            assert states.returncode == 0, states.stdout + states.stderr
            assert "failed" not in states.stdout
            done = _scalar(
                queued_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            assert done == jobs

            _compare(serial_url, queued_url)
            assert _counts(queued_url)["current events"] > 100
            repaired = fingerprint(queued_url)
            for table in ("current_event", "dose_report"):
                assert repaired[table] == before[table], table

    def test_a_failing_chunk_is_listed_and_the_others_run(self, tmp_path: Path) -> None:
        """A chunk the database refuses fails alone; `kerma jobs` shows its error."""
        with fresh_database("postgresql", tmp_path) as url:
            _import(url, tmp_path / "registry")
            stored = _ctdivol(url)
            _execute(url, DAMAGE[0])
            victim = int(_scalar(url, "SELECT min(study_id) FROM irradiation_event"))  # type: ignore[arg-type]
            _execute(
                url,
                "CREATE FUNCTION refuse_study() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'test: study % refused', OLD.study_id; END $$",
                f"CREATE TRIGGER refuse_study BEFORE UPDATE OR DELETE ON irradiation_event "
                f"FOR EACH ROW WHEN (OLD.study_id = {victim}) EXECUTE FUNCTION refuse_study()",
            )
            env = _env(url, tmp_path / "registry" / "archive")
            queued = _kerma(["reprocess", "--queue", "--chunk-size", "5"], env, tmp_path)
            assert queued.returncode == 0, queued.stdout + queued.stderr
            jobs = int(_scalar(url, "SELECT count(*) FROM procrastinate_jobs"))  # type: ignore[arg-type]

            ((code, out, err),) = _workers(1, env, tmp_path)
            assert code == 1, out + err  # cron can tell (was 0)
            assert f"1 of {jobs} jobs failed; see kerma jobs" in " ".join(err.split())
            assert f"test: study {victim} refused" in err  # logged, without traceback
            assert "Traceback" not in err

            states = _kerma(["jobs"], env, tmp_path)
            assert states.returncode == 0, states.stdout + states.stderr
            assert "Failed jobs" in states.stdout
            assert f"test: study {victim} refused" in states.stdout
            assert "first_study_id=" not in states.stdout  # readable: "studies 1-5"
            assert (
                _scalar(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'") == 1
            )
            assert (
                _scalar(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
                == jobs - 1
            )
            # the other chunks' studies were repaired; the refused study's events were not
            first = int(_scalar(url, FAILED_ARG.format(arg="first_study_id")))  # type: ignore[arg-type]
            last = int(_scalar(url, FAILED_ARG.format(arg="last_study_id")))  # type: ignore[arg-type]
            assert first <= victim <= last
            assert f"studies {first}-{last}" in states.stdout
            after = _ctdivol(url)
            assert after.keys() == stored.keys()
            for key, (study_id, value) in after.items():
                if study_id == victim:
                    assert value == pytest.approx(stored[key][1] * 2), key
                elif not first <= study_id <= last:
                    assert value == pytest.approx(stored[key][1]), (key, study_id)

    def test_sigterm_finishes_the_running_job_and_stops(self, tmp_path: Path) -> None:
        """SIGTERM: the worker ends its running job, exits 0; the rest waits as todo."""
        with fresh_database("postgresql", tmp_path) as url:
            _import(url, tmp_path / "registry")
            env = _env(url, tmp_path / "registry" / "archive")
            queued = _kerma(["reprocess", "--queue", "--chunk-size", "2"], env, tmp_path)
            assert queued.returncode == 0, queued.stdout + queued.stderr
            jobs = int(_scalar(url, "SELECT count(*) FROM procrastinate_jobs"))  # type: ignore[arg-type]
            node = subprocess.Popen(
                [sys.executable, "-m", "kerma.cli.main", "worker"],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 300
            while _scalar(url, DONE) == 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            node.send_signal(signal.SIGTERM)
            code = node.wait(timeout=300)
            out, err = node.communicate()
            assert code == 0, out + err
            assert "Traceback" not in err
            done = int(_scalar(url, DONE))  # type: ignore[arg-type]
            assert 1 <= done < jobs
            assert _scalar(url, "SELECT count(*) FROM procrastinate_jobs WHERE status <> "
                           "'succeeded' AND status <> 'todo'") == 0  # fmt: skip
            ((code, out, err),) = _workers(1, env, tmp_path)
            assert code == 0, out + err
            assert _scalar(url, DONE) == jobs


def _import_demo(url: str, folder: Path) -> None:
    """Import 12 generated demo studies (synthetic, no PHI) into a registry."""
    from kerma.demo.generator import generate_demo_files

    files = generate_demo_files(folder / "files", studies=12, seed=5, end_date=dt.date(2026, 6, 30))
    with Registry(settings=make_settings(url, folder)) as registry:
        summary = registry.import_paths(files)
    assert summary.n_imported == len(files) == 12


def _refuse_study(url: str) -> int:
    """Damage every CT event, make the database refuse changes to one study's events.

    Returns the refused study's id: the reprocess chunk holding it fails (for real, in
    the database) until :data:`ALLOW` drops the trigger.
    """
    _execute(url, DAMAGE[0])
    victim = int(_scalar(url, "SELECT min(study_id) FROM irradiation_event "
                              "WHERE ctdivol_mgy IS NOT NULL"))  # type: ignore[arg-type]  # fmt: skip
    _execute(
        url,
        "CREATE FUNCTION refuse_study() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'test: study % refused', OLD.study_id; END $$",
        f"CREATE TRIGGER refuse_study BEFORE UPDATE OR DELETE ON irradiation_event "
        f"FOR EACH ROW WHEN (OLD.study_id = {victim}) EXECUTE FUNCTION refuse_study()",
    )
    return victim


#: Let the refused study be changed again.
ALLOW = "DROP TRIGGER refuse_study ON irradiation_event"

#: Jobs per status.
STATUSES = "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status"


def _statuses(url: str) -> dict[str, int]:
    """Return the number of jobs per status."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {str(s): int(n) for s, n in conn.execute(text(STATUSES))}
    finally:
        engine.dispose()


def _age(url: str, job_ids: list[int], days: int) -> None:
    """Move every event of the jobs ``days`` days back (their last event is their age)."""
    ids = ", ".join(str(i) for i in job_ids)
    _execute(
        url,
        f"UPDATE procrastinate_events SET at = at - interval '{days} days' WHERE job_id IN ({ids})",
    )


def _ids(url: str, status: str) -> list[int]:
    """Return the ids of the jobs in a status, ascending."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id FROM procrastinate_jobs WHERE status::text = :s ORDER BY id"),
                {"s": status},
            )
            return [int(r[0]) for r in rows]
    finally:
        engine.dispose()


@pytest.mark.postgres
class TestRetryAndClean:
    """``kerma jobs retry`` and ``kerma jobs clean`` on a real PostgreSQL queue."""

    def test_retried_job_runs_again_and_succeeds(self, tmp_path: Path) -> None:
        """A job failed in the database is retried by id and by --all-failed, then runs."""
        with fresh_database("postgresql", tmp_path) as url:
            _import_demo(url, tmp_path / "registry")
            stored = _ctdivol(url)
            victim = _refuse_study(url)
            env = _env(url, tmp_path / "registry" / "archive")
            queued = _kerma(["reprocess", "--queue", "--chunk-size", "5"], env, tmp_path)
            assert queued.returncode == 0, queued.stdout + queued.stderr
            ((code, out, err),) = _workers(1, env, tmp_path)
            assert code == 1, out + err
            jobs = sum(_statuses(url).values())
            assert _statuses(url) == {"failed": 1, "succeeded": jobs - 1}
            (failed,) = _ids(url, "failed")
            succeeded = _ids(url, "succeeded")[0]

            # only failed jobs can be retried; nothing is retried when one id is wrong
            wrong = _kerma(["jobs", "retry", str(failed), str(succeeded), "999999"], env, tmp_path)
            assert wrong.returncode == 2, wrong.stdout + wrong.stderr
            message = " ".join(wrong.stderr.split())
            assert f"job {succeeded} has succeeded" in message
            assert "job 999999 does not exist" in message
            assert "Traceback" not in wrong.stderr
            assert _ids(url, "failed") == [failed]
            neither = _kerma(["jobs", "retry"], env, tmp_path)
            assert neither.returncode == 2
            assert "--all-failed" in neither.stderr

            # retried while the cause is still there: it fails again, one attempt more
            again = _kerma(["jobs", "retry", str(failed)], env, tmp_path)
            assert again.returncode == 0, again.stdout + again.stderr
            assert f"1 failed jobs queued again ({failed})" in again.stdout
            assert _statuses(url)["todo"] == 1
            ((code, out, err),) = _workers(1, env, tmp_path)
            assert code == 1, out + err
            assert "1 of 1 job failed; see kerma jobs" in " ".join(err.split())
            assert _ids(url, "failed") == [failed]
            attempts = _scalar(url, f"SELECT attempts FROM procrastinate_jobs WHERE id = {failed}")
            # procrastinate counts each run and the retry itself (procrastinate_retry_job_v2)
            assert attempts == 3
            still = _ctdivol(url)
            refused = [key for key, (study, _value) in stored.items() if study == victim]
            assert refused
            for key in refused:  # the refused study is still damaged
                assert still[key][1] == pytest.approx(2 * stored[key][1]), key

            # the cause fixed, --all-failed: the job runs and repairs the study
            _execute(url, ALLOW)
            retried = _kerma(["jobs", "retry", "--all-failed"], env, tmp_path)
            assert retried.returncode == 0, retried.stdout + retried.stderr
            assert f"1 failed jobs queued again ({failed})" in retried.stdout
            ((code, out, err),) = _workers(1, env, tmp_path)
            assert code == 0, out + err  # nothing failed in this run
            assert _statuses(url) == {"succeeded": jobs}
            after = _ctdivol(url)
            assert after.keys() == stored.keys()
            for key, (_study, value) in after.items():
                assert value == pytest.approx(stored[key][1]), key
            nothing = _kerma(["jobs", "retry", "--all-failed"], env, tmp_path)
            assert nothing.returncode == 0, nothing.stdout + nothing.stderr
            assert "no failed jobs to retry" in nothing.stdout

    def test_clean_removes_old_finished_jobs_and_keeps_new_ones(self, tmp_path: Path) -> None:
        """--older-than DAYS deletes succeeded and failed jobs older; newer and todo stay."""
        with fresh_database("postgresql", tmp_path) as url:
            _import_demo(url, tmp_path / "registry")
            _refuse_study(url)
            env = _env(url, tmp_path / "registry" / "archive")
            queued = _kerma(["reprocess", "--queue", "--chunk-size", "2"], env, tmp_path)
            assert queued.returncode == 0, queued.stdout + queued.stderr
            ((code, out, err),) = _workers(1, env, tmp_path)
            assert code == 1, out + err  # the refused chunk failed
            (failed,) = _ids(url, "failed")
            succeeded = _ids(url, "succeeded")
            assert len(succeeded) >= 3
            assert _scalar(url, "SELECT count(*) FROM job_failure") == 1
            waiting = _kerma(["exams", "--apply", "--queue", "--chunk-size", "6"], env, tmp_path)
            assert waiting.returncode == 0, waiting.stdout + waiting.stderr
            todo = _ids(url, "todo")
            assert len(todo) == 2
            old, recent, new = succeeded[:-2], succeeded[-2], succeeded[-1]
            _age(url, [*old, failed, *todo], days=10)
            _age(url, [recent], days=3)

            cleaned = _kerma(["jobs", "clean", "--older-than", "7"], env, tmp_path)
            assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
            assert f"{len(old) + 1} finished jobs older than 7 days deleted" in cleaned.stdout
            assert _ids(url, "succeeded") == [recent, new]
            assert _ids(url, "failed") == []
            assert _ids(url, "todo") == todo
            assert _scalar(url, "SELECT count(*) FROM job_failure") == 0

            cleaned = _kerma(["jobs", "clean", "--older-than", "2"], env, tmp_path)
            assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
            assert "1 finished jobs older than 2 days deleted" in cleaned.stdout
            assert _ids(url, "succeeded") == [new]
            assert _ids(url, "todo") == todo
            negative = _kerma(["jobs", "clean", "--older-than", "-1"], env, tmp_path)
            assert negative.returncode == 2
            assert _ids(url, "succeeded") == [new]


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--until-empty"],
        ["reprocess", "--queue"],
        ["alerts", "recheck", "--queue"],
        ["jobs"],
        ["jobs", "retry", "--all-failed"],
        ["jobs", "clean", "--older-than", "30"],
    ],
    ids=["worker", "reprocess", "recheck", "jobs", "retry", "clean"],
)
def test_sqlite_has_no_queue(args: list[str], tmp_path: Path) -> None:
    """On SQLite the queue commands refuse with the serial command named, no traceback."""
    env = _env(f"sqlite:///{tmp_path / 'kerma.db'}", tmp_path / "archive")
    result = _kerma(args, env, tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join((result.stdout + result.stderr).split())
    assert "a job queue needs PostgreSQL" in message
    assert "'kerma reprocess'" in message or "'kerma alerts recheck'" in message
    assert "does the same work in this process" in message
    assert "Traceback" not in result.stderr


class TestJobWording:
    """The failed-job listing's range and the retry refusal's job states, readable."""

    @pytest.mark.parametrize(
        ("task", "args", "expected"),
        [
            ("kerma.derive", {"first_id": 1, "last_id": 100}, "studies 1-100"),
            (
                "kerma.reprocess_reports",
                {"first_study_id": 101, "last_study_id": None},
                "studies from 101",
            ),
            ("kerma.reprocess_rejected", {"first_id": 5, "last_id": 9}, "rejected objects 5-9"),
            (
                "kerma.recheck_alerts",
                {"notify": False, "last_id": 100, "first_id": 1, "rule_id": None},
                "studies 1-100",
            ),
            (
                "kerma.recheck_alerts",
                {"notify": True, "last_id": 100, "first_id": 1, "rule_id": "ct-dlp"},
                "studies 1-100, rule ct-dlp, with notifications",
            ),
        ],
        ids=["derive", "open-end", "rejected", "recheck", "recheck-rule-notify"],
    )
    def test_job_range_reads_as_words(self, task: str, args: dict[str, Any], expected: str) -> None:
        """``notify=False, last_id=100, first_id=1`` reads ``studies 1-100``."""
        from kerma.cli.jobs import job_range

        assert job_range(task, args) == expected

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            ("succeeded", "has succeeded"),
            ("todo", "is waiting"),
            ("doing", "is running"),
            ("cancelled", "was cancelled"),
        ],
    )
    def test_retry_refusal_states(self, status: str, expected: str) -> None:
        """``job 1 is succeeded`` reads ``job 1 has succeeded`` (and the other states)."""
        from procrastinate.jobs import Status

        from kerma.services.jobs import _state_text

        assert _state_text(Status(status)) == expected
        assert _state_text(status) == expected
