"""``kerma pull`` against a real Orthanc PACS: C-MOVE, C-GET and DICOMweb (QIDO/WADO)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from kerma.api import Registry
from kerma.config import Settings
from kerma.net.pull import PacsPeer, PullCriteria, PullSummary, pull_dimse
from tests.net.conftest import DICOM_DIR, ROOT, Orthanc, free_port, registry_sop_uids

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


def pull_in_process(pacs: Orthanc, settings: Settings, method: str) -> PullSummary:
    """Pull everything from ``pacs`` into the registry of ``settings`` (C-GET or DICOMweb)."""
    with Registry(settings=settings) as reg:
        if method == "dicomweb":
            from kerma.net.dicomweb import pull_dicomweb

            return pull_dicomweb(settings, pacs.dicomweb_url, PullCriteria(), registry=reg)
        peer = PacsPeer(pacs.aet, "127.0.0.1", pacs.dicom_port, calling_ae_title=KERMA_AET)
        return pull_dimse(settings, peer, PullCriteria(), registry=reg, method="get")


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
