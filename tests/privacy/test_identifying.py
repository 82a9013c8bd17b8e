"""KERMA_IDENTIFYING_ATTRIBUTES: free text a site marks as identifying is not stored.

On SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from kerma.api import Registry
from kerma.db.models import Device, DoseReport, IrradiationEvent, Study
from kerma.errors import ConfigurationError
from kerma.ingest.pipeline import check_identifying_attributes
from tests.conftest import DICOM_DIR
from tests.db_fixtures import make_settings
from tests.ingest.helpers import dump_text

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

FILE = DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm"


def test_misspelt_keyword_is_refused() -> None:
    """A keyword that names no attribute is a configuration error, not silently ignored."""
    with pytest.raises(ConfigurationError, match="names no DICOM attribute: StudyDescripton"):
        check_identifying_attributes(["OperatorsName", "StudyDescripton"])
    check_identifying_attributes(["OperatorsName", "StudyDescription", "Comment"])


@needs_shared
def test_marked_free_text_is_not_stored(database_url: str, tmp_path: Path) -> None:
    """Marked description, station and event comments: absent from columns and content."""
    ds = pydicom.dcmread(FILE)
    ds.StudyDescription = "Phantom QA Doe^Jane"
    ds.StationName = "ROOM-DOE"
    path = tmp_path / "in" / "marked.dcm"
    path.parent.mkdir()
    ds.save_as(path)
    marked = ["StudyDescription", "StationName", "Comment", "AccessionNumber"]
    settings = make_settings(database_url, tmp_path, identifying_attributes=marked)
    with Registry(settings=settings) as reg:
        assert reg.import_paths([path.parent]).n_imported == 1
        with reg.session(write=False) as session:
            study = session.scalars(select(Study)).one()
            assert (study.study_description, study.accession_number) == (None, None)
            assert study.is_non_patient  # the QA flag still saw the description
            assert session.scalars(select(Device.station_name)).one() is None
            comments = session.scalars(select(IrradiationEvent.comment)).all()
            assert comments and all(c is None for c in comments)
            report = session.scalars(select(DoseReport)).one()
            assert report.source == "marked.dcm"
            assert report.content["study"]["study_description"] is None
        text = dump_text(reg.engine)
    for value in ("Doe^Jane", "ROOM-DOE", "Internal technical scan parameters", "ACC12345601"):
        assert value not in text
    assert str(tmp_path) not in text  # no folder above the one imported


@needs_shared
def test_unmarked_free_text_is_stored(database_url: str, tmp_path: Path) -> None:
    """By default the study description and event comments are kept (a site may mark them)."""
    with Registry(settings=make_settings(database_url, tmp_path)) as reg:
        reg.import_paths([FILE])
        with reg.session(write=False) as session:
            assert session.scalars(select(Study.study_description)).one() == "Thorax^TAP (Adult)"
