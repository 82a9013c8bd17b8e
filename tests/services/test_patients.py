"""Following up a patient: ``kerma patient`` and ``Registry.patient`` on the shared files.

The registry holds ../shared/dicom; the patient IDs, names, birth dates and accession
numbers are read back from those files with pydicom. ``kerma patient`` must find a
patient's studies from the typed ID, and no identifying value may appear in clear in
any text column of any table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app, main
from kerma.config import Settings
from kerma.errors import NotFoundError
from kerma.records import display_pseudonym
from tests.conftest import DICOM_DIR
from tests.db_fixtures import BACKENDS, TEST_PSEUDONYM_KEY, fresh_database, make_settings

pytestmark = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

#: Files the registry rejects (not dose objects): their studies are not listed.
REJECTED = {"ESR_non-dose.dcm"}

#: Placeholders anonymisers wrote instead of an identity (not identifying).
PLACEHOLDERS = {"REMOVED", "REMOVED1", "REMOVED2", "NOID", "NAME^NONE", "xxxx"}
MIN_LENGTH = 4  # 'FFS', 'HFS', 'HFP' accession numbers are also patient orientations

#: The identifying attributes (what Kerma must never store in clear).
IDENTIFYING = {"PatientID", "PatientName", "PatientBirthDate", "AccessionNumber"}


@dataclass
class Identity:
    """The identifying attributes of one shared file, read with pydicom."""

    file: str
    patient_id: str
    issuer: str
    names: tuple[str, ...]
    birth_date: str
    accession: str
    study_instance_uid: str
    other_values: frozenset[str]


def read_identities() -> list[Identity]:
    """Return the identity of every shared file (pydicom, decoded as the file says)."""
    out = []
    for path in sorted(DICOM_DIR.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        name = str(ds.get("PatientName") or "")
        names = {name, name.replace("^", " ").strip()}
        parts = [p for p in name.split("^") if p]
        if len(parts) >= 2:
            names.add(f"{parts[1]} {parts[0]}")
        # the values the file carries in non-identifying attributes
        other = frozenset(
            str(element.value).strip()
            for element in ds.iterall()
            if element.keyword not in IDENTIFYING
            and isinstance(element.value, str | bytes)
            and not isinstance(element.value, bytes)
        )
        out.append(
            Identity(
                path.name,
                str(ds.get("PatientID") or "").strip(),
                str(ds.get("IssuerOfPatientID") or "").strip(),
                tuple(n for n in names if n),
                str(ds.get("PatientBirthDate") or "").strip(),
                str(ds.get("AccessionNumber") or "").strip(),
                str(ds.get("StudyInstanceUID") or ""),
                other,
            )
        )
    return out


@dataclass
class Imported:
    """A registry holding ../shared/dicom and how to run the CLI on it."""

    registry: Registry
    settings: Settings
    env: dict[str, str]


@pytest.fixture(scope="module", params=BACKENDS)
def imported(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Imported]:
    """Import ../shared/dicom into a fresh registry (one per backend)."""
    folder = tmp_path_factory.mktemp("patients")
    with fresh_database(request.param, folder) as url:
        settings = make_settings(url, folder)
        reg = Registry(settings=settings)
        reg.import_paths([DICOM_DIR])
        env = {
            "KERMA_DATABASE_URL": url,
            "KERMA_ARCHIVE_DIR": str(folder / "archive"),
            "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
            "COLUMNS": "250",
        }
        yield Imported(reg, settings, env)
        reg.close()


def expected_uids(patient_id: str, issuer: str = "") -> set[str]:
    """Return the Study Instance UIDs of the imported files of one patient (pydicom)."""
    return {
        i.study_instance_uid
        for i in read_identities()
        if i.patient_id == patient_id and i.issuer == issuer and i.file not in REJECTED
    }


class TestPatientLookup:
    """kerma patient / Registry.patient."""

    def test_cli_finds_the_studies_of_a_patient_id_read_from_a_file(
        self, imported: Imported
    ) -> None:
        """The ID of CT-RDSR-Siemens-Multi-1.dcm finds that patient's studies, and no others."""
        ds = pydicom.dcmread(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", stop_before_pixels=True)
        patient_id = str(ds.PatientID)
        result = CliRunner().invoke(app, ["patient", patient_id], env=imported.env)
        assert result.exit_code == 0, result.output
        record = imported.registry.patient(patient_id)
        assert set(record.studies["study_instance_uid"]) == expected_uids(patient_id)
        assert len(record.studies) == 2  # the Siemens Multi study and the Toshiba one
        shown = display_pseudonym(record.patient_pseudonyms[0])
        assert shown is not None and shown.startswith("P-") and len(shown) == 12
        assert shown in result.output
        assert ": 2 studies" in result.output
        assert f"Study Instance UID {ds.StudyInstanceUID}" in result.output
        study_date = str(ds.StudyDate)
        assert f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}" in result.output
        assert patient_id not in result.output  # the typed ID is not echoed
        assert "Cumulative dose" in result.output
        assert record.cumulative["number_of_studies"].tolist() == [2]

    def test_issuer_is_part_of_the_pseudonym(self, imported: Imported) -> None:
        """The same Patient ID with issuer 'Random' (Canon CXDI) is another patient."""
        ds = pydicom.dcmread(DICOM_DIR / "DX-RDSR-Canon_CXDI.dcm", stop_before_pixels=True)
        with_issuer = imported.registry.patient(str(ds.PatientID), issuer=str(ds.IssuerOfPatientID))
        assert set(with_issuer.studies["study_instance_uid"]) == {str(ds.StudyInstanceUID)}
        without = imported.registry.patient(str(ds.PatientID))
        assert str(ds.StudyInstanceUID) not in set(without.studies["study_instance_uid"])

    def test_accession_number_finds_its_study(self, imported: Imported) -> None:
        """The accession number of RF-RDSR-Philips_Allura.dcm finds its study (CLI too)."""
        ds = pydicom.dcmread(DICOM_DIR / "RF-RDSR-Philips_Allura.dcm", stop_before_pixels=True)
        record = imported.registry.patient(accession=str(ds.AccessionNumber))
        assert set(record.studies["study_instance_uid"]) == {str(ds.StudyInstanceUID)}
        result = CliRunner().invoke(
            app, ["patient", "--accession", str(ds.AccessionNumber)], env=imported.env
        )
        assert result.exit_code == 0, result.output
        assert ": 1 study" in result.output

    def test_unknown_id_says_what_to_check(
        self, imported: Imported, monkeypatch: pytest.MonkeyPatch, capsys
    ) -> None:
        """An ID with no study is a NotFoundError naming what to check; exit code 2."""
        with pytest.raises(NotFoundError, match="give it with --issuer"):
            imported.registry.patient("NO-SUCH-PATIENT")
        for name, value in imported.env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as stopped:
            main(["patient", "NO-SUCH-PATIENT"])
        assert stopped.value.code == 2
        assert "No study in the registry has this Patient ID" in capsys.readouterr().err

    def test_no_argument_is_a_usage_error(self, imported: Imported) -> None:
        """Neither an ID nor an accession number: a usage error."""
        result = CliRunner().invoke(app, ["patient"], env=imported.env)
        assert result.exit_code == 2
        assert "PATIENT_ID" in result.output


def text_values(engine: sa.Engine) -> Iterator[tuple[str, str, str]]:
    """Yield (table, column, value) of every text or JSON column of every table."""
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        for table in inspector.get_table_names():
            for column in inspector.get_columns(table):
                kind = column["type"]
                if not isinstance(kind, sa.String | sa.Text | sa.JSON) and "JSON" not in str(kind):
                    continue
                name = column["name"]
                stmt = sa.text(f'SELECT "{name}" FROM "{table}" WHERE "{name}" IS NOT NULL')
                for (value,) in conn.execute(stmt):
                    text = (
                        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                    )
                    yield table, name, text


class TestNoIdentityInClear:
    """The database holds no patient name, ID, birth date or accession number in clear."""

    def test_every_text_column_is_free_of_identifiers(self, imported: Imported) -> None:
        """Scan every text/JSON column of every table for the files' identifiers."""
        identities = read_identities()
        # values some file also carries in a non-identifying attribute (a test system's
        # serial number '123456', a station 'HOST-ABCD1234' holding an anonymised ID
        # 'ABCD1234', a protocol '4DCT /PHYSICS') are stored there legitimately
        non_identifying = "\x00".join(frozenset().union(*(i.other_values for i in identities)))
        wanted: dict[str, str] = {}
        for i in identities:
            for kind, values in (
                ("Patient ID", (i.patient_id,)),
                ("Patient's Name", i.names),
                ("Patient's Birth Date", (i.birth_date,)),
                ("Accession Number", (i.accession,)),
            ):
                for value in values:
                    if (
                        len(value) >= MIN_LENGTH
                        and value not in PLACEHOLDERS
                        and value not in non_identifying
                    ):
                        wanted[value] = f"{kind} of {i.file}"
        assert len(wanted) > 80  # the scan looks for many values
        found = [
            f"{table}.{column} holds the {wanted[value]} ({value!r})"
            for table, column, text in text_values(imported.registry.engine)
            for value in wanted
            if value in text
        ]
        assert found == [], "\n".join(found)


class TestAccessionStorage:
    """KERMA_ACCESSION_IN_CLEAR and the hashing of clear numbers already stored."""

    def test_clear_numbers_are_hashed_when_the_setting_is_turned_off(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Kept in clear with the setting; hashed and removed on the next open without it."""
        path = DICOM_DIR / "RF-RDSR-Philips_Allura.dcm"
        accession = str(pydicom.dcmread(path, stop_before_pixels=True).AccessionNumber)
        clear = make_settings(database_url, tmp_path, accession_in_clear=True)
        with Registry(settings=clear) as reg:
            reg.import_paths([path])
            studies = reg.studies()
            assert studies["accession_number"].tolist() == [accession]
            hashed = studies["accession_pseudonym"].tolist()[0]
            assert len(hashed) == 64 and accession not in hashed
        with Registry(settings=make_settings(database_url, tmp_path)) as reg:
            studies = reg.studies()
            assert studies["accession_number"].isna().all()
            assert studies["accession_pseudonym"].tolist() == [hashed]
            found = [v for _, _, v in text_values(reg.engine) if accession in v]
            assert found == []
            assert len(reg.patient(accession=accession).studies) == 1
