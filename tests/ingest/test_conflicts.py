"""Conflicts are held, not decided by arrival order (issue #11, item 3), on SQLite and PostgreSQL.

The forged-then-genuine sequence: a copy of a real RDSR whose DLP was changed, with the
genuine SOP Instance UID, arrives first; the genuine file follows. Both versions are
kept, the study is in conflict, the totals stay on the first (unconfirmed) version
until a user or the rule decides, and every decision is logged in an append-only table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app
from kerma.db.models import ConflictDecision, DoseReport, RejectedObject
from kerma.errors import ConflictError, NotFoundError
from kerma.ingest.pipeline import ImportStatus
from kerma.ingest.versions import RULE_DECIDER, Transport, transport_of
from tests.conftest import DICOM_DIR
from tests.db_fixtures import TEST_PSEUDONYM_KEY, make_settings
from tests.ingest.conflict_helpers import (
    FORGED_DLP_MGYCM,
    GENUINE,
    GENUINE_DLP_MGYCM,
    forged_bytes,
    sop_instance_uid,
    write_forged,
)

pytestmark = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)


def study_dlp(reg: Registry) -> float:
    """Return the DLP total (mGy·cm) of the registry's only study."""
    studies = reg.studies(include_non_patient=True)
    assert len(studies) == 1
    return float(studies["ct_dlp_total_mgycm"].iloc[0])


def event_dlps(reg: Registry) -> list[float]:
    """Return the DLP (mGy·cm) of every current irradiation event."""
    return sorted(float(x) for x in reg.events(include_non_patient=True)["dlp_mgycm"])


class TestForgedThenGenuineByFile:
    """kerma import of a forged copy, then of the genuine file."""

    def test_both_versions_kept_and_study_in_conflict(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """The genuine file is held as version 2; totals stay on version 1, unconfirmed."""
        forged = write_forged(tmp_path / "in")
        uid = sop_instance_uid()
        assert registry.import_paths([forged]).n_imported == 1
        assert study_dlp(registry) == pytest.approx(FORGED_DLP_MGYCM)
        summary = registry.import_paths([GENUINE])
        assert (summary.conflicts, summary.conflicts_already_held) == (1, 0)
        assert (summary.rejected, summary.n_imported, summary.already_present) == (0, 0, 0)
        assert registry.rejects().empty
        detail = registry.conflict(uid)
        assert detail.is_open
        assert [(v.version, v.is_current) for v in detail.versions] == [(1, True), (2, False)]
        assert [v.source for v in detail.versions] == [str(forged), str(GENUINE)]
        assert [v.transport for v in detail.versions] == ["file", "file"]
        # both archived, byte for byte
        archive = registry.settings.archive_dir
        assert (archive / detail.versions[0].archive_path).read_bytes() == forged.read_bytes()
        assert (archive / detail.versions[1].archive_path).read_bytes() == GENUINE.read_bytes()
        # the differing values side by side
        differences = dict(detail.differences)
        assert differences["event 1 dlp_mgycm"] == pytest.approx(
            [FORGED_DLP_MGYCM, GENUINE_DLP_MGYCM]
        )
        assert differences["ct_dlp_total_mgycm"] == pytest.approx(
            [FORGED_DLP_MGYCM, GENUINE_DLP_MGYCM]
        )
        # the study is marked and filterable; totals still those of version 1
        studies = registry.studies(include_non_patient=True)
        assert studies["has_conflict"].tolist() == [True]
        assert len(registry.studies(has_conflict=True, include_non_patient=True)) == 1
        assert len(registry.studies(has_conflict=False, include_non_patient=True)) == 0
        assert study_dlp(registry) == pytest.approx(FORGED_DLP_MGYCM)
        assert [c.sop_instance_uid for c in registry.conflicts()] == [uid]

    def test_resolve_keeps_the_chosen_version_and_totals_follow(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """Resolve --keep 2: report, events and study totals are the genuine ones; logged."""
        forged = write_forged(tmp_path / "in")
        uid = sop_instance_uid()
        registry.import_paths([forged, GENUINE])
        detail = registry.resolve_conflict(
            uid, keep=2, reason="genuine file from the modality", user="physicist"
        )
        assert not detail.is_open
        assert detail.current_version == 2
        assert study_dlp(registry) == pytest.approx(GENUINE_DLP_MGYCM)
        assert event_dlps(registry) == pytest.approx([GENUINE_DLP_MGYCM])
        studies = registry.studies(include_non_patient=True)
        assert studies["has_conflict"].tolist() == [False]
        assert registry.studies(has_conflict=True, include_non_patient=True).empty
        with registry.session(write=False) as session:
            report = session.scalars(select(DoseReport)).one()
            assert report.source == str(GENUINE)
            assert report.ct_dlp_total_mgycm == pytest.approx(GENUINE_DLP_MGYCM)
        [decision] = registry.conflict_decisions()
        assert decision.sop_instance_uid == uid
        assert (decision.version_kept, decision.version_before) == (2, 1)
        assert (decision.method, decision.decided_by) == ("user", "physicist")
        assert decision.reason == "genuine file from the modality"
        assert isinstance(decision.decided_at, dt.datetime)
        assert registry.conflicts() == []
        assert len(registry.conflicts(include_decided=True)) == 1

    def test_reimport_of_the_same_bytes_adds_no_third_version(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """Importing either file again (before and after a decision) adds no version."""
        forged = write_forged(tmp_path / "in")
        uid = sop_instance_uid()
        registry.import_paths([forged, GENUINE])
        again = registry.import_paths([GENUINE, forged])
        assert (again.conflicts, again.conflicts_already_held, again.already_present) == (1, 1, 1)
        assert len(registry.conflict(uid).versions) == 2
        registry.resolve_conflict(uid, keep=2, reason="genuine", user="physicist")
        after = registry.import_paths([GENUINE, forged])
        assert (after.already_present, after.conflicts_already_held) == (1, 1)
        detail = registry.conflict(uid)
        assert len(detail.versions) == 2
        assert not detail.is_open  # an old version re-sent does not reopen the decision
        assert study_dlp(registry) == pytest.approx(GENUINE_DLP_MGYCM)

    def test_re_encoded_identical_copy_is_a_plain_duplicate(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """The genuine object re-encoded (other file meta) is already present: no conflict."""
        ds = pydicom.dcmread(GENUINE)
        ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
        copy = tmp_path / "copy.dcm"
        ds.save_as(copy, enforce_file_format=True)
        registry.import_paths([GENUINE])
        summary = registry.import_paths([copy])
        assert (summary.already_present, summary.conflicts) == (1, 0)
        assert registry.conflicts(include_decided=True) == []
        assert registry.studies(include_non_patient=True)["has_conflict"].tolist() == [False]

    def test_third_different_version_reopens_a_decided_conflict(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """A new content after a decision is version 3 and opens the conflict again."""
        uid = sop_instance_uid()
        registry.import_paths([write_forged(tmp_path / "a"), GENUINE])
        registry.resolve_conflict(uid, keep=2, reason="genuine", user="physicist")
        third = tmp_path / "third.dcm"
        third.write_bytes(forged_bytes(factor=3.0))
        outcome = registry.import_bytes(third.read_bytes(), source=str(third))
        assert outcome.status is ImportStatus.CONFLICT
        assert outcome.version == 3
        detail = registry.conflict(uid)
        assert detail.is_open and detail.current_version == 2
        assert study_dlp(registry) == pytest.approx(GENUINE_DLP_MGYCM)

    def test_resolve_errors_name_what_to_do(self, registry: Registry, tmp_path: Path) -> None:
        """Unknown UID, version not held, empty reason: clear errors, nothing changed."""
        uid = sop_instance_uid()
        registry.import_paths([write_forged(tmp_path / "in"), GENUINE])
        with pytest.raises(NotFoundError, match=r"no versions of this SOP Instance UID"):
            registry.resolve_conflict("1.2.3", keep=1, reason="x", user="u")
        with pytest.raises(ConflictError, match=r"it holds versions 1, 2"):
            registry.resolve_conflict(uid, keep=3, reason="x", user="u")
        with pytest.raises(ConflictError, match=r"give a reason"):
            registry.resolve_conflict(uid, keep=2, reason="  ", user="u")
        assert registry.conflict(uid).is_open
        assert registry.conflict_decisions() == []

    def test_decision_log_is_append_only(self, registry: Registry, tmp_path: Path) -> None:
        """UPDATE and DELETE on conflict_decision are refused by the database."""
        uid = sop_instance_uid()
        registry.import_paths([write_forged(tmp_path / "in"), GENUINE])
        registry.resolve_conflict(uid, keep=2, reason="genuine", user="physicist")
        for statement in (
            update(ConflictDecision).values(reason="rewritten"),
            text("DELETE FROM conflict_decision"),
        ):
            with (
                pytest.raises(DBAPIError, match="append-only"),
                registry.session(write=True) as session,
            ):
                session.execute(statement)
        [decision] = registry.conflict_decisions(uid)
        assert decision.reason == "genuine"


class TestHeldBytes:
    """The archived bytes of every held version count as used."""

    def test_held_version_bytes_are_stored_for_the_purge(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """stored_archive_sha256s (what kerma rejects purge keeps) includes held versions."""
        from kerma.db.intake_queries import stored_archive_sha256s

        registry.import_paths([write_forged(tmp_path / "in"), GENUINE])
        detail = registry.conflict(sop_instance_uid())
        shas = {
            hashlib.sha256(
                (registry.settings.archive_dir / v.archive_path).read_bytes()
            ).hexdigest()
            for v in detail.versions
        }
        assert len(shas) == 2
        with registry.session(write=False) as session:
            assert stored_archive_sha256s(session, sha256s=shas) == shas


class TestConflictRule:
    """KERMA_CONFLICT_RULE=prefer-device-association."""

    @pytest.fixture
    def rule_registry(self, database_url: str, tmp_path: Path):
        """A registry whose conflicts the rule decides."""
        settings = make_settings(database_url, tmp_path, conflict_rule="prefer-device-association")
        reg = Registry(settings=settings)
        yield reg
        reg.close()

    def test_device_association_wins_over_stow(self, rule_registry: Registry) -> None:
        """Forged by STOW-RS first, genuine by C-STORE from the device: the rule keeps it."""
        uid = sop_instance_uid()
        first = rule_registry.importer.import_bytes(
            forged_bytes(), source="STOW-RS from 10.0.0.9", origin="STOW-RS from 10.0.0.9"
        )
        assert first.status is ImportStatus.IMPORTED
        origin = "C-STORE from CTAWP12345 at 10.0.0.5"
        second = rule_registry.importer.import_bytes(
            GENUINE.read_bytes(), source=origin, origin=origin
        )
        assert second.status is ImportStatus.CONFLICT
        detail = rule_registry.conflict(uid)
        assert not detail.is_open
        assert detail.current_version == 2
        assert [(v.transport, v.calling_ae_title) for v in detail.versions] == [
            ("stow-rs", None),
            ("c-store", "CTAWP12345"),
        ]
        assert study_dlp(rule_registry) == pytest.approx(GENUINE_DLP_MGYCM)
        assert rule_registry.studies(include_non_patient=True)["has_conflict"].tolist() == [False]
        [decision] = rule_registry.conflict_decisions(uid)
        assert (decision.method, decision.decided_by) == ("rule", RULE_DECIDER)
        assert (decision.version_kept, decision.version_before) == (2, 1)
        assert "C-STORE from the study's device" in decision.reason

    def test_device_version_first_is_confirmed(self, rule_registry: Registry) -> None:
        """Genuine by C-STORE first, forged by STOW-RS later: version 1 kept, logged."""
        uid = sop_instance_uid()
        origin = "C-STORE from SOMEAE at 10.0.0.5"  # matched by the Device Observer UID
        rule_registry.importer.import_bytes(GENUINE.read_bytes(), source=origin, origin=origin)
        rule_registry.importer.import_bytes(forged_bytes(), source="STOW-RS from 10.0.0.9")
        detail = rule_registry.conflict(uid)
        assert (detail.is_open, detail.current_version) == (False, 1)
        assert study_dlp(rule_registry) == pytest.approx(GENUINE_DLP_MGYCM)
        [decision] = rule_registry.conflict_decisions(uid)
        assert (decision.version_kept, decision.version_before) == (1, 1)

    def test_two_file_imports_wait_for_a_user(
        self, rule_registry: Registry, tmp_path: Path
    ) -> None:
        """No version came from the device's association: the conflict stays open."""
        uid = sop_instance_uid()
        rule_registry.import_paths([write_forged(tmp_path / "in"), GENUINE])
        assert rule_registry.conflict(uid).is_open
        assert rule_registry.conflict_decisions() == []
        assert study_dlp(rule_registry) == pytest.approx(FORGED_DLP_MGYCM)

    def test_manual_default_leaves_device_version_undecided(self, registry: Registry) -> None:
        """With the default (manual) rule, even a device association waits for a user."""
        uid = sop_instance_uid()
        registry.importer.import_bytes(forged_bytes(), source="STOW-RS from 10.0.0.9")
        origin = "C-STORE from CTAWP12345 at 10.0.0.5"
        registry.importer.import_bytes(GENUINE.read_bytes(), source=origin)
        assert registry.conflict(uid).is_open
        assert study_dlp(registry) == pytest.approx(FORGED_DLP_MGYCM)


class TestTransportOf:
    """Where a version came from, parsed from the origins the intake writes."""

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("C-STORE from CT01 at 10.0.0.5", (Transport.C_STORE, "CT01")),
            ("C-STORE from ? at 10.0.0.5", (Transport.C_STORE, None)),
            ("C-STORE from an unknown peer", (Transport.C_STORE, None)),
            ("C-GET from PACS at 10.0.0.7:104", (Transport.C_GET, "PACS")),
            ("STOW-RS from 127.0.0.1", (Transport.STOW_RS, None)),
            ("WADO-RS http://pacs/dicomweb", (Transport.WADO_RS, None)),
            ("spool file abc.dcm (origin not recorded)", (Transport.OTHER, None)),
            ("/data/in/rdsr.dcm", (Transport.FILE, None)),
        ],
        ids=[
            "c-store",
            "c-store-no-ae",
            "c-store-unknown",
            "c-get",
            "stow",
            "wado",
            "spool",
            "file",
        ],
    )
    def test_origin_parsed(self, source: str, expected: tuple[Transport, str | None]) -> None:
        """Each origin form gives its transport and AE title."""
        assert transport_of(source) == expected


class TestSharedConflictingCopies:
    """The three copies of one Siemens Zee SOP Instance UID in ../shared/dicom."""

    FILES = (
        "OR1-RF-RDSR-Siemens-Zee_adjusted.dcm",
        "RF-RDSR-Siemens-Zee.dcm",
        "RF-RDSR-Siemens-Zee_adjusted.dcm",
    )

    def test_held_as_three_versions_not_rejected(self, registry: Registry) -> None:
        """Imported in name order: version 1 current, two held; resolve moves the study."""
        paths = [DICOM_DIR / name for name in self.FILES]
        uid = sop_instance_uid(paths[0])
        summary = registry.import_paths(paths)
        assert (summary.n_imported, summary.conflicts, summary.rejected) == (1, 2, 0)
        detail = registry.conflict(uid)
        assert [v.source for v in detail.versions] == [str(p) for p in paths]
        fields = dict(detail.differences)
        assert fields["study_date"] == ["2016-05-10", "2016-05-12", "2016-05-10"]
        assert "event 1 comment" in fields
        # version 2 belongs to another Study Instance UID and date: keeping it moves the
        # report to that study
        registry.resolve_conflict(uid, keep=2, reason="the original export", user="u")
        studies = registry.studies(include_non_patient=True)
        assert studies["study_date"].astype(str).tolist() == ["2016-05-12"]
        assert studies["study_instance_uid"].tolist() == [detail.versions[1].study_instance_uid]
        assert studies["has_conflict"].tolist() == [False]

    def test_reprocess_turns_old_conflict_rejections_into_versions(
        self, registry: Registry
    ) -> None:
        """A conflicting copy rejected by an older Kerma is held as a version on reprocess."""
        first, second = DICOM_DIR / self.FILES[1], DICOM_DIR / self.FILES[2]
        registry.import_paths([first])
        archived = registry.importer.archive.store(second.read_bytes())
        with registry.session(write=True) as session:  # as Kerma before 0009 left it
            session.add(
                RejectedObject(
                    archive_sha256=archived.sha256,
                    archive_path=archived.relative_path,
                    file_name=str(second),
                    reason="Not imported: <file> has the same SOP Instance UID ...",
                    sop_instance_uid=sop_instance_uid(second),
                    rejected_at=dt.datetime.now(dt.UTC),
                )
            )
        result = registry.reprocess()
        assert (result.rejected_now_held, result.rejected_still) == (1, 0)
        assert registry.rejects().empty
        assert len(registry.conflict(sop_instance_uid(first)).versions) == 2


class TestConflictsCli:
    """kerma conflicts list / show / resolve / log, and kerma studies --conflicts."""

    def test_list_show_resolve_log(self, database_url: str, tmp_path: Path) -> None:
        """The whole workflow from the command line."""
        runner = CliRunner()
        env = {
            "KERMA_DATABASE_URL": database_url,
            "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
            "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
            "COLUMNS": "250",
        }

        def run(*args: str):  # type: ignore[no-untyped-def]
            return runner.invoke(app, list(args), env=env, catch_exceptions=False)

        folder = tmp_path / "in"
        write_forged(folder, "a-forged.dcm")
        shutil.copy(GENUINE, folder / "b-genuine.dcm")
        uid = sop_instance_uid()
        result = run("import", str(folder))
        assert result.exit_code == 0, result.output
        assert "conflict: new version held" in result.output
        result = run("studies", "--conflicts")
        assert "Studies (1)" in result.output
        assert "open (totals unconfirmed)" in result.output
        result = run("conflicts", "list")
        assert uid in result.output and "1 (unconfirmed)" in result.output
        result = run("conflicts", "show", uid)
        assert result.exit_code == 0, result.output
        assert "Differing values" in result.output
        line = next(x for x in result.output.splitlines() if "event 1 dlp_mgycm" in x)
        assert "74.6" in line and "7.46" in line
        result = run(
            "conflicts", "resolve", uid, "--keep", "2", "--reason", "genuine", "--user", "mpe"
        )
        assert result.exit_code == 0, result.output
        assert "version 2 kept (was 1) by mpe" in result.output
        assert "Studies (0)" in run("studies", "--conflicts").output
        log = run("conflicts", "log").output
        assert uid in log and "mpe" in log and "genuine" in log
        # errors are messages with exit code 2, never tracebacks
        for args in (("show", "1.2.3"), ("resolve", uid, "--keep", "9", "--reason", "x")):
            result = subprocess.run(
                [sys.executable, "-m", "kerma.cli.main", "conflicts", *args],
                env={**os.environ, **env},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
            assert "error:" in result.stderr
