"""Planted identity: no patient data in the database, archive index, spool or logs.

A real CT RDSR from ``../shared/dicom`` gets a distinctive token (``ZQXPLANTnnn``) in
every text element that can carry identity: every top-level PN, LO, SH, LT, ST and UT
element except the four that describe the machine (Manufacturer, Manufacturer's Model
Name, Device Serial Number, Software Versions: the device registry needs them), a
distinctive birth date, person-name and comment attributes it did not have, and the
SR content tree's free text (TEXT items: acquisition protocol, comments, device
observer name and location) plus a PNAME item. It is imported by file (from a folder
named after the patient), through the Storage SCP (``kerma listen`` + dcmtk
``storescu``) and through STOW-RS (``kerma serve``), each with ``KERMA_LOG_LEVEL=DEBUG``
and ``KERMA_LOG_FILE``. Then the database (every column of every table), the archive
folder (every file name and every file's bytes: the default archive is encrypted), the
spool and every log are scanned.

- With the site marking every stored free-text attribute as identifying
  (``KERMA_IDENTIFYING_ATTRIBUTES``), no token is found anywhere.
- With the default configuration, no patient identity token (names, IDs, birth date,
  address, physicians, operators, patient comments) is found; the study/series
  descriptions, accession number, station, institution, protocol and event comments
  are stored until a site marks them (docs/privacy.md).
- In ``original`` archive mode the archive files hold the identity (documented: only
  there), while the database and logs still hold none.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import create_engine

from kerma.ingest.pipeline import IDENTIFYING_FIELDS
from tests.conftest import DICOM_DIR, ROOT
from tests.ingest.helpers import dump_text

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

SOURCE = DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm"

#: Top-level text attributes left alone: they describe the machine, not a person.
DEVICE_KEYWORDS = frozenset(
    {"Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions"}
)

#: Attributes planted in addition to those the file has.
EXTRA_KEYWORDS = (
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OperatorsName",
    "PerformingPhysicianName",
    "RequestingPhysician",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "PatientComments",
    "AdditionalPatientHistory",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PerformedProcedureStepDescription",
    "StudyID",
    "ImageComments",
)

#: The planted birth date (DA holds no letters), and how Kerma would write it.
BIRTH_DATE = "19230417"
BIRTH_DATE_FORMS = ("19230417", "1923-04-17")

#: What is patient identity (never stored, whatever the configuration).
PATIENT_IDENTITY = frozenset(
    {
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OperatorsName",
        "PerformingPhysicianName",
        "ReferringPhysicianName",
        "RequestingPhysician",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "PatientComments",
        "AdditionalPatientHistory",
        "StudyID",
        "PNAME Person Name",
        "PatientBirthDate",
    }
)

TOKEN = re.compile(rb"zqxplant\d{3}", re.IGNORECASE)

#: Media type of a STOW-RS request body (PS3.18 Section 10.5).
STOW_TYPE = 'multipart/related; type="application/dicom"'

#: Name of the folder the file is imported from: folders are often named after patients.
FOLDER_TOKEN = "ZQXPLANT999"


def plant(out: Path) -> dict[str, str]:
    """Write a planted copy of SOURCE to ``out``; return {token: where it was planted}."""
    ds = pydicom.dcmread(SOURCE)
    where: dict[str, str] = {}

    def token(label: str) -> str:
        value = f"ZQXPLANT{len(where):03d}"
        where[value] = label
        return value

    for elem in list(ds):
        if elem.tag.is_private or elem.keyword in DEVICE_KEYWORDS:
            continue
        if elem.VR in {"PN", "LO", "SH", "LT", "ST", "UT"}:
            elem.value = token(elem.keyword)
    for keyword in EXTRA_KEYWORDS:
        setattr(ds, keyword, token(keyword))
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientAge = "093Y"

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            meaning = item.ConceptNameCodeSequence[0].CodeMeaning
            if item.get("ValueType") == "TEXT" and meaning != "Identification of the X-Ray Source":
                item.TextValue = token(f"TEXT {meaning}")
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    person = Dataset()
    person.RelationshipType = "CONTAINS"
    person.ValueType = "PNAME"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "113870", "DCM"
    concept.CodeMeaning = "Person Name"
    person.ConceptNameCodeSequence = [concept]
    person.PersonName = token("PNAME Person Name")
    ds.ContentSequence.append(person)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
    return where


def found_in(data: bytes, where: dict[str, str]) -> set[str]:
    """Return the planted labels whose token (or the birth date) is in ``data``."""
    labels = {where.get(m.decode().upper(), "folder name") for m in TOKEN.findall(data)}
    if any(form.encode() in data for form in BIRTH_DATE_FORMS):
        labels.add("PatientBirthDate")
    return labels


def scan(workdir: Path, database_url: str, where: dict[str, str], logs: list[Path]) -> dict:
    """Return what planted labels each place holds: database, archive names/bytes, logs."""
    engine = create_engine(database_url)
    try:
        database = found_in(dump_text(engine).encode("utf-8"), where)
    finally:
        engine.dispose()
    names: set[str] = set()
    contents: set[str] = set()
    spool: set[str] = set()
    archive = workdir / "archive"
    for path in archive.rglob("*"):
        names |= found_in(path.relative_to(archive).as_posix().encode(), where)
        if path.is_file():
            found = found_in(path.read_bytes(), where)
            if path.relative_to(archive).parts[0] in {"incoming", "quarantine"}:
                spool |= found
            else:
                contents |= found
    logged: set[str] = set()
    for log in logs:
        assert log.is_file(), f"{log} was not written"
        logged |= found_in(log.read_bytes(), where)
    return {
        "database": database,
        "archive_index": names,
        "archive_files": contents,
        "spool": spool,
        "logs": logged,
    }


def run_env(workdir: Path, *, log_name: str, marked: bool, mode: str) -> dict[str, str]:
    """Environment of one Kerma process on the registry in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERMA_")}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        KERMA_DATABASE_URL=f"sqlite:///{workdir / 'kerma.db'}",
        KERMA_ARCHIVE_DIR=str(workdir / "archive"),
        KERMA_KEY_FILE=str(workdir / "kerma-key" / "kerma.key"),
        KERMA_LOG_FILE=str(workdir / "logs" / log_name),
        KERMA_LOG_LEVEL="DEBUG",
        KERMA_ARCHIVE_MODE=mode,
    )
    if marked:
        from kerma.config import DEFAULT_IDENTIFYING_ATTRIBUTES

        env["KERMA_IDENTIFYING_ATTRIBUTES"] = json.dumps(
            [*DEFAULT_IDENTIFYING_ATTRIBUTES, *IDENTIFYING_FIELDS]
        )
    return env


def import_by_file(workdir: Path, env: dict[str, str]) -> dict[str, str]:
    """Plant a copy in a folder named after the patient and ``kerma import`` the folder."""
    folder = workdir / FOLDER_TOKEN
    where = plant(folder / "planted.dcm")
    done = subprocess.run(
        [sys.executable, "-m", "kerma.cli.main", "import", FOLDER_TOKEN],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout
    (workdir / "logs" / "import.stderr").write_text(done.stderr)
    return where


@needs_shared
@pytest.mark.network
def test_marked_identity_is_nowhere_after_file_scp_and_stow(tmp_path: Path) -> None:
    """Every planted token: not in database, archive (names, bytes), spool or logs."""
    from tests.net.conftest import KermaListener, free_port, storescu, wait_until

    workdir = tmp_path / "kerma"
    (workdir / "logs").mkdir(parents=True)
    import_env = run_env(workdir, log_name="import.log", marked=True, mode="encrypted")
    where = import_by_file(workdir, import_env)
    logs = [workdir / "logs" / "import.log", workdir / "logs" / "import.stderr"]
    # the Storage SCP
    listen_env = run_env(workdir, log_name="listen.log", marked=True, mode="encrypted")
    scp = KermaListener(
        workdir,
        extra_env={
            k: v
            for k, v in listen_env.items()
            if k.startswith("KERMA_LOG") or k in {"KERMA_IDENTIFYING_ATTRIBUTES"}
        },
    )
    scp.start()
    try:
        where |= plant(tmp_path / "scp" / "planted.dcm")
        done = storescu(scp.port, [tmp_path / "scp" / "planted.dcm"])
        assert done.returncode == 0, done.stderr
        scp.wait_drained()
    finally:
        scp.terminate()
        scp.reap_orphans()
    logs += [workdir / "logs" / "listen.log", workdir / "listen.log"]
    # STOW-RS
    port = free_port()
    serve_env = run_env(workdir, log_name="serve.log", marked=True, mode="encrypted")
    with (workdir / "logs" / "serve.stderr").open("wb") as captured:
        server = subprocess.Popen(
            [sys.executable, "-m", "kerma.cli.main", "serve", "--port", str(port)],
            cwd=workdir,
            env=serve_env,
            stdout=captured,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{url}/login", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return server.poll() is not None

            assert wait_until(up, timeout=120) and server.poll() is None
            from kerma.config import Settings
            from tests.net.conftest import bearer, stow_token

            token = stow_token(Settings(database_url=serve_env["KERMA_DATABASE_URL"]))
            where |= plant(tmp_path / "stow" / "planted.dcm")
            part = (tmp_path / "stow" / "planted.dcm").read_bytes()
            boundary = "kerma-planted"
            body = (
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + part
                + f"\r\n--{boundary}--\r\n".encode()
            )
            r = httpx.post(
                f"{url}/dicomweb/studies",
                content=body,
                headers={"Content-Type": f"{STOW_TYPE}; boundary={boundary}", **bearer(token)},
                timeout=120,
            )
            assert r.status_code == 200, r.text
            incoming = workdir / "archive" / "incoming"
            assert wait_until(lambda: not list(incoming.glob("*.dcm")), timeout=300)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    logs += [workdir / "logs" / "serve.log", workdir / "logs" / "serve.stderr"]
    from tests.net.conftest import registry_sop_uids

    assert len(registry_sop_uids(scp.settings)) == 3  # file, SCP and STOW copies stored
    found = scan(workdir, f"sqlite:///{workdir / 'kerma.db'}", where, logs)
    assert found == {
        "database": set(),
        "archive_index": set(),
        "archive_files": set(),
        "spool": set(),
        "logs": set(),
    }


@needs_shared
@pytest.mark.parametrize("mode", ["encrypted", "original"])
def test_default_configuration_stores_no_patient_identity(tmp_path: Path, mode: str) -> None:
    """Default settings: no patient identity token anywhere but an original-mode archive."""
    workdir = tmp_path / "kerma"
    (workdir / "logs").mkdir(parents=True)
    env = run_env(workdir, log_name="import.log", marked=False, mode=mode)
    where = import_by_file(workdir, env)
    logs = [workdir / "logs" / "import.log", workdir / "logs" / "import.stderr"]
    found = scan(workdir, f"sqlite:///{workdir / 'kerma.db'}", where, logs)
    for place in ("database", "archive_index", "spool", "logs"):
        assert found[place] & PATIENT_IDENTITY == set(), place
    assert "folder name" not in found["database"] | found["logs"]
    if mode == "original":  # the archive keeps the object as received: only there
        assert PATIENT_IDENTITY <= found["archive_files"]
    else:
        assert found["archive_files"] == set()
    # what a site may mark: stored by default (documented in docs/privacy.md); the
    # Accession Number only as a keyed hash unless KERMA_ACCESSION_IN_CLEAR (issue #10)
    assert {"StudyDescription", "StationName"} <= found["database"]
    assert "AccessionNumber" not in found["database"]
