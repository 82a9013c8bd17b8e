"""``kerma pull`` against a real Orthanc PACS: C-MOVE, C-GET and DICOMweb (QIDO/WADO)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Collection, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from kerma.api import Registry
from kerma.config import Settings
from kerma.ingest.pipeline import Importer
from kerma.net.pull import PacsPeer, PullCriteria, PullSummary, pull_dimse
from kerma.services.intake import known_instances
from tests.net.conftest import (
    DICOM_DIR,
    ROOT,
    Orthanc,
    dataset_bytes,
    free_port,
    registry_sop_uids,
    require_binary,
)

pytestmark = pytest.mark.network

#: Shared files loaded into the PACS: RDSRs (two cumulative reports of one study), a CT
#: dose screen, DX and MG images (one per series), a radiopharmaceutical RDSR and an
#: Enhanced SR that is not a dose report.
PACS_FILES = (
    "CT-RDSR-Siemens-Multi-1.dcm",
    "CT-RDSR-Siemens-Multi-2.dcm",
    "CT-RDSR-Toshiba_DoseCheck.dcm",
    "CT-SC-Philips_Brilliance16P.dcm",
    "DX-Im-GE_XR220-1.dcm",
    "DX-RDSR-Canon_CXDI.dcm",
    "MG-Im-GE-SenDS-scaled.dcm",
    "MG-RDSR-Hologic_2D.dcm",
    "NM-RRDSR-Siemens.dcm",
    "RF-RDSR-Philips_Allura.dcm",
    "ESR_non-dose.dcm",
)

KERMA_AET = "KERMA"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """An Orthanc loaded with :data:`PACS_FILES`, knowing Kerma as a C-MOVE destination."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc"), KERMA_AET, free_port())
    orthanc.start()
    try:
        assert orthanc.upload(DICOM_DIR / name for name in PACS_FILES) == len(PACS_FILES)
        yield orthanc
    finally:
        orthanc.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Studies of a registry filled by importing the same files (``kerma import``)."""
    workdir = tmp_path_factory.mktemp("reference")
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'kerma.db'}", archive_dir=workdir / "archive"
    )
    with Registry(settings=settings) as reg:
        reg.import_paths([DICOM_DIR / name for name in PACS_FILES])
        return reg.studies(include_non_patient=True)


def run_pull(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``kerma pull`` with a registry and archive in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        KERMA_DATABASE_URL=f"sqlite:///{workdir / 'kerma.db'}",
        KERMA_ARCHIVE_DIR=str(workdir / "archive"),
        KERMA_SCP_AET=KERMA_AET,
        PYTHONPATH=str(ROOT / "src"),
        COLUMNS="200",
    )
    return subprocess.run(
        [sys.executable, "-m", "kerma.cli.main", "pull", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def studies_of(workdir: Path) -> pd.DataFrame:
    """Studies of the registry in ``workdir``."""
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'kerma.db'}", archive_dir=workdir / "archive"
    )
    with Registry(settings=settings) as reg:
        return reg.studies(include_non_patient=True)


def assert_same_studies(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Assert the same studies, event counts and dose totals."""
    assert sorted(got["study_instance_uid"]) == sorted(want["study_instance_uid"])
    assert got["number_of_events"].sum() == want["number_of_events"].sum()
    assert got["number_of_reports"].sum() == want["number_of_reports"].sum()
    assert got["ct_dlp_total_mgycm"].sum() == pytest.approx(want["ct_dlp_total_mgycm"].sum())
    assert got["dap_total_gym2"].sum() == pytest.approx(want["dap_total_gym2"].sum())


def pacs_args(pacs: Orthanc) -> list[str]:
    """The PACS options of ``kerma pull``."""
    return ["--pacs-aet", pacs.aet, "--pacs-host", "127.0.0.1", "--pacs-port", str(pacs.dicom_port)]


class TestPull:
    """Pull from Orthanc gives the same registry as importing the files."""

    def test_cmove_gives_same_studies_as_import(
        self, pacs: Orthanc, reference: pd.DataFrame, tmp_path: Path
    ) -> None:
        """C-MOVE to a temporary SCP: same studies and totals as import; a rerun skips them."""
        run = run_pull(tmp_path, *pacs_args(pacs), "--port", str(pacs.kerma_port))
        assert run.returncode == 0, run.stdout + run.stderr
        assert_same_studies(studies_of(tmp_path), reference)
        again = run_pull(tmp_path, *pacs_args(pacs), "--port", str(pacs.kerma_port))
        assert again.returncode == 0, again.stdout + again.stderr
        # every object is skipped, the non-dose ESR too (recorded as ignored)
        assert f"already in the registry {len(PACS_FILES)};" in again.stdout
        assert "retrieved 0," in again.stdout
        assert_same_studies(studies_of(tmp_path), reference)
        uids = registry_sop_uids(
            Settings(database_url=f"sqlite:///{tmp_path / 'kerma.db'}", archive_dir=tmp_path)
        )
        assert len(uids) == len(set(uids))

    def test_cget_gives_same_studies_as_import(
        self, pacs: Orthanc, reference: pd.DataFrame, tmp_path: Path
    ) -> None:
        """C-GET: same studies and totals as import."""
        run = run_pull(tmp_path, *pacs_args(pacs), "--get")
        assert run.returncode == 0, run.stdout + run.stderr
        assert_same_studies(studies_of(tmp_path), reference)

    def test_modality_filter_pulls_only_ct(
        self, pacs: Orthanc, reference: pd.DataFrame, tmp_path: Path
    ) -> None:
        """--modality CT --from/--to: only the studies of that modality and date range."""
        run = run_pull(
            tmp_path,
            *pacs_args(pacs),
            "--get",
            "--modality",
            "CT",
            "--from",
            "2017-01-01",
            "--to",
            "2018-12-31",
        )
        assert run.returncode == 0, run.stdout + run.stderr
        got = studies_of(tmp_path)
        want = reference[
            (reference["study_date"] >= "2017-01-01")
            & (reference["study_date"] <= "2018-12-31")
            & reference["modality"].eq("CT")
        ]
        assert sorted(got["study_instance_uid"]) == sorted(want["study_instance_uid"])

    def test_dicomweb_gives_same_studies_as_import(
        self, pacs: Orthanc, reference: pd.DataFrame, tmp_path: Path
    ) -> None:
        """QIDO-RS + WADO-RS from Orthanc's DICOMweb plugin: same studies and totals as import."""
        if not pacs.has_dicomweb:
            pytest.skip("the Orthanc DICOMweb plugin is not installed")
        run = run_pull(tmp_path, "--dicomweb", pacs.dicomweb_url)
        assert run.returncode == 0, run.stdout + run.stderr
        assert_same_studies(studies_of(tmp_path), reference)


def pull_in_process(
    pacs: Orthanc, settings: Settings, method: str, criteria: PullCriteria | None = None
) -> PullSummary:
    """Pull from ``pacs`` into the registry of ``settings`` (C-GET or DICOMweb), in this process.

    The network side gets what the CLI gives it: an importer factory and a check of the
    SOP Instance UIDs the registry knows.
    """
    criteria = criteria or PullCriteria()
    with Registry(settings=settings) as reg:

        def known(uids: Collection[str]) -> set[str]:
            with reg.session(write=False) as session:
                return known_instances(session, uids)

        def factory() -> Importer:
            return reg.importer

        if method == "dicomweb":
            from kerma.net.dicomweb import pull_dicomweb

            return pull_dicomweb(
                settings, pacs.dicomweb_url, criteria, importer_factory=factory, known=known
            )
        peer = PacsPeer(pacs.aet, "127.0.0.1", pacs.dicom_port, calling_ae_title=KERMA_AET)
        return pull_dimse(
            settings, peer, criteria, importer_factory=factory, known=known, method="get"
        )


class TestPullIgnored:
    """Objects without dose information are recorded as ignored and not fetched again."""

    @pytest.mark.parametrize("method", ["get", "dicomweb"])
    def test_non_dose_object_ignored_then_skipped(
        self, pacs: Orthanc, tmp_path: Path, method: str
    ) -> None:
        """First pull: the ESR is listed by ignored(); second pull retrieves nothing."""
        if method == "dicomweb" and not pacs.has_dicomweb:
            pytest.skip("the Orthanc DICOMweb plugin is not installed")
        import pydicom

        esr_uid = str(pydicom.dcmread(DICOM_DIR / "ESR_non-dose.dcm").SOPInstanceUID)
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'kerma.db'}",
            archive_dir=tmp_path / "archive",
            scp_aet=KERMA_AET,
        )
        assert settings.scp_keep_non_dose is False
        first = pull_in_process(pacs, settings, method)
        assert first.failed == 0, first.warnings
        assert first.plan.instances_found == len(PACS_FILES)
        assert first.plan.instances_skipped == 0
        assert first.retrieved == len(PACS_FILES)
        with Registry(settings=settings) as reg:
            ignored = reg.ignored()
            rejects = reg.rejects()
        assert list(ignored["sop_instance_uid"]) == [esr_uid]
        assert list(ignored["modality"]) == ["SR"]
        assert esr_uid not in set(rejects["sop_instance_uid"])
        assert esr_uid not in registry_sop_uids(settings)

        second = pull_in_process(pacs, settings, method)
        assert second.plan.instances_found == len(PACS_FILES)
        assert second.plan.instances_skipped == len(PACS_FILES)
        assert second.plan.items == []
        assert (second.retrieved, second.failed, second.imported) == (0, 0, 0)


# -- a PACS holding CT, DX and RF dose objects ------------------------------------------------


def _copy_into_study(source: Path, target: Path, study_of: Path) -> Path:
    """Write ``source`` as a new instance of the study of ``study_of`` (new series, new SOP UID)."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = pydicom.dcmread(study_of, stop_before_pixels=True).StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture(scope="module")
def mixed_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, list[Path]]]:
    """An Orthanc holding CT, DX and RF dose objects; yields it and the CT files.

    - CT: a study with a CT dose screen (modality CT) and a CT RDSR in it; a study with
      only a CT RDSR (modality SR);
    - DX: a study with a DX image and a DX RDSR in it (modalities DX, SR); a study with
      only a DX RDSR;
    - RF: a study with only an RF RDSR.
    """
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    work = tmp_path_factory.mktemp("mixed")
    ct_sc = DICOM_DIR / "CT-SC-Philips_Brilliance16P.dcm"
    dx_image = DICOM_DIR / "DX-Im-GE_XR220-1.dcm"
    ct_files = [
        ct_sc,
        _copy_into_study(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", work / "ct-rdsr.dcm", ct_sc),
        DICOM_DIR / "CT-RDSR-Toshiba_DoseCheck.dcm",
    ]
    other_files = [
        dx_image,
        _copy_into_study(DICOM_DIR / "DX-RDSR-Canon_CXDI.dcm", work / "dx-rdsr.dcm", dx_image),
        DICOM_DIR / "Dual-RDSR-DX.dcm",
        DICOM_DIR / "RF-RDSR-Philips_Allura.dcm",
    ]
    orthanc = Orthanc(work / "orthanc", KERMA_AET, free_port())
    orthanc.start()
    try:
        assert orthanc.upload([*ct_files, *other_files]) == len(ct_files) + len(other_files)
        yield orthanc, ct_files
    finally:
        orthanc.stop()


def ct_reference(tmp_path: Path, ct_files: list[Path]) -> pd.DataFrame:
    """Studies of a registry that imported exactly the CT files."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'ref.db'}", archive_dir=tmp_path / "ref-archive"
    )
    with Registry(settings=settings) as reg:
        reg.import_paths(ct_files)
        return reg.studies(include_non_patient=True)


def archived_objects(settings: Settings) -> dict[str, bytes]:
    """Return the archived objects' original bytes by file name (spool and quarantine left
    out), decrypted with the registry's key (the default archive is encrypted)."""
    from kerma.services.keys import read_archived_file

    archive_dir = settings.archive_dir
    return {
        p.name: read_archived_file(settings, p)
        for p in archive_dir.rglob("*.dcm")
        if not {"incoming", "quarantine"} & set(p.relative_to(archive_dir).parts)
    }


class TestPullModality:
    """``kerma pull -m CT`` keeps CT's dose objects only, from a PACS that holds others too."""

    @pytest.mark.parametrize("method", ["get", "dicomweb"])
    def test_only_ct_is_kept_and_dx_study_not_retrieved(
        self, mixed_pacs: tuple[Orthanc, list[Path]], tmp_path: Path, method: str
    ) -> None:
        """Same CT studies as importing the CT files; the DX study is not even retrieved."""
        pacs, ct_files = mixed_pacs
        if method == "dicomweb" and not pacs.has_dicomweb:
            pytest.skip("the Orthanc DICOMweb plugin is not installed")
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'kerma.db'}",
            archive_dir=tmp_path / "archive",
            scp_aet=KERMA_AET,
        )
        summary = pull_in_process(pacs, settings, method, PullCriteria(modalities=("CT",)))
        assert summary.failed == 0, summary.warnings
        plan = summary.plan
        assert plan.studies_other_modality == 1  # DX image + DX RDSR: not retrieved
        assert plan.studies_sr_only == 3  # CT, DX and RF RDSRs alone in their studies
        assert plan.studies_found == 4
        assert summary.skipped_other_modality == 2  # the DX and RF RDSRs, read, not kept
        assert summary.retrieved == 5  # CT screen, 2 CT RDSRs, DX and RF RDSRs (SR-only)
        got = studies_of(tmp_path)
        want = ct_reference(tmp_path, ct_files)
        assert set(got["modality"]) == {"CT"}
        assert_same_studies(got, want)
        # nothing but the CT objects was archived, each as the PACS holds it
        import pydicom

        archived = archived_objects(settings)
        assert len(archived) == len(ct_files)
        for path in ct_files:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            held = pacs.instance_file(uid)
            if method == "dicomweb":  # WADO-RS transfer-syntax=*: the stored file itself
                assert f"{hashlib.sha256(held).hexdigest()}.dcm" in archived
            else:  # C-GET: the data set as sent, behind Kerma's file meta
                assert dataset_bytes(held) in {dataset_bytes(d) for d in archived.values()}

    def test_cli_cmove_modality_ct_says_what_it_left_out(
        self, mixed_pacs: tuple[Orthanc, list[Path]], tmp_path: Path
    ) -> None:
        """kerma pull -m CT (C-MOVE): only CT studies; the output counts what was left out."""
        pacs, ct_files = mixed_pacs
        run = run_pull(tmp_path, *pacs_args(pacs), "--port", str(pacs.kerma_port), "-m", "ct")
        assert run.returncode == 0, run.stdout + run.stderr
        out = " ".join(run.stdout.split())
        assert "studies found 4" in out
        assert (
            "modality CT: 1 studies of other modalities not retrieved; 3 studies holding only "
            "SR objects checked, 2 of their dose reports of other modalities not kept"
        ) in out
        got = studies_of(tmp_path)
        assert set(got["modality"]) == {"CT"}
        assert_same_studies(got, ct_reference(tmp_path, ct_files))

    def test_move_dest_leaves_out_reports_of_unknown_modality(
        self, mixed_pacs: tuple[Orthanc, list[Path]], tmp_path: Path
    ) -> None:
        """With --move-dest, SR-only studies are not moved (that listener keeps everything)."""
        pacs, _ = mixed_pacs
        run = run_pull(tmp_path, *pacs_args(pacs), "--move-dest", "ELSEWHERE", "-m", "CT")
        out = " ".join(run.stdout.split())
        assert "dose reports of studies holding only SR objects were not moved to ELSEWHERE" in out


def getscu_reference(pacs: Orthanc, folder: Path) -> dict[str, bytes]:
    """Retrieve every study of ``pacs`` with dcmtk ``getscu +B`` (bit-preserving).

    Returns the objects by SOP Instance UID: the data sets exactly as Orthanc sends them
    over C-GET (Orthanc's DCMTK may encode a data set differently from the file it holds,
    e.g. sequence lengths).
    """
    import pydicom

    exe = require_binary("getscu")
    folder.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=60) as client:
        studies = client.get(f"{pacs.url}/studies", params={"expand": "1"}).json()
    for study in studies:
        uid = study["MainDicomTags"]["StudyInstanceUID"]
        run = subprocess.run(
            [
                exe,
                "-S",
                "+B",
                "-od",
                str(folder),
                "-aet",
                KERMA_AET,  # the calling AE title Orthanc knows
                "-aec",
                pacs.aet,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={uid}",
                "127.0.0.1",
                str(pacs.dicom_port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
    out = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = data
    return out


class TestPullKeepsTheSendersBytes:
    """Every object pulled is archived as the PACS holds it."""

    @pytest.mark.parametrize("method", ["get", "dicomweb"])
    def test_archived_objects_are_the_pacs_objects(
        self, pacs: Orthanc, tmp_path: Path, method: str
    ) -> None:
        """DICOMweb: the same bytes (SHA-256); C-GET: the same data set behind its file meta."""
        import pydicom

        if method == "dicomweb" and not pacs.has_dicomweb:
            pytest.skip("the Orthanc DICOMweb plugin is not installed")
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'kerma.db'}",
            archive_dir=tmp_path / "archive",
            scp_aet=KERMA_AET,
            scp_keep_non_dose=True,  # keep the ESR too: every object pulled is archived
        )
        summary = pull_in_process(pacs, settings, method)
        assert summary.failed == 0, summary.warnings
        archived = archived_objects(settings)
        assert len(archived) == len(PACS_FILES)
        if method == "get":  # what dcmtk getscu receives, written bit-preserving (+B)
            sent = getscu_reference(pacs, tmp_path / "getscu")
            assert len(sent) >= len(PACS_FILES) - 1
        for name in PACS_FILES:
            uid = str(pydicom.dcmread(DICOM_DIR / name, stop_before_pixels=True).SOPInstanceUID)
            if method == "dicomweb":  # WADO-RS transfer-syntax=*: the file Orthanc holds
                held = pacs.instance_file(uid)
                assert archived[f"{hashlib.sha256(held).hexdigest()}.dcm"] == held, name
            else:  # C-GET: the data set as Orthanc sends it, behind Kerma's file meta
                # (getscu does not propose the Radiopharmaceutical Radiation Dose SR class:
                # that one is compared with the file Orthanc holds)
                reference = sent.get(uid) or pacs.instance_file(uid)
                assert dataset_bytes(reference) in {dataset_bytes(d) for d in archived.values()}
        with Registry(settings=settings) as reg:
            sources = set(reg.studies(include_non_patient=True)["study_instance_uid"])
            rejects = reg.rejects()
        assert sources
        origin = (
            f"WADO-RS {pacs.dicomweb_url}"
            if method == "dicomweb"
            else f"C-GET from {pacs.aet} at 127.0.0.1:{pacs.dicom_port}"
        )
        assert list(rejects["file_name"]) == [origin]  # the ESR, kept and rejected
