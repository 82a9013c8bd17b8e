"""Sites (#15): set at ingest, filters and statistics by site, users restricted to sites.

Service-level tests on SQLite and PostgreSQL: two nodes' imports (``KERMA_SITE``), the
object's Institution Name and ``KERMA_SITE_MAP``; site filters return each site's
studies only; a user of one site is refused the other's study detail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kerma.db.filters import StudyFilter
from kerma.errors import NotFoundError, SiteAccessError
from kerma.services.registry import Registry
from kerma.services.sites import narrow_filter
from kerma.web.security import Principal, Role
from tests.db_fixtures import make_settings
from tests.scale.race_data import SHARED_DICOM

pytestmark = pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom missing")

NORTH = ["CT-RDSR-Siemens_Flash-TAP-SS.dcm", "DX-RDSR-Canon_CXDI.dcm"]
SOUTH = ["CT-RDSR-Toshiba_DoseCheck.dcm", "MG-RDSR-Hologic_2D.dcm", "RF-RDSR-Siemens-Zee.dcm"]


@pytest.fixture
def two_sites(database_url: str, tmp_path: Path) -> Registry:
    """A registry whose studies came from two nodes, North and South."""
    for site, names in (("North", NORTH), ("South", SOUTH)):
        settings = make_settings(database_url, tmp_path, site=site)
        with Registry(settings=settings) as node:
            node.import_paths([SHARED_DICOM / n for n in names])
    registry = Registry(settings=make_settings(database_url, tmp_path))
    yield registry
    registry.close()


def test_site_set_by_the_receiving_node_and_filters(two_sites: Registry) -> None:
    """Each node's studies carry its site; site filters return that site's studies only."""
    sites = two_sites.sites().set_index("name")
    assert sites.loc["North", "studies"] == 2 and sites.loc["South", "studies"] == 3
    north = two_sites.studies(flt=StudyFilter(site_names=("north",)))
    south_id = two_sites.site_ids(["South"])
    south = two_sites.studies(flt=StudyFilter(site_ids=south_id))
    assert len(north) == 2 and len(south) == 3
    assert set(north["study_id"]).isdisjoint(set(south["study_id"]))
    assert two_sites.count_studies(StudyFilter(site_ids=())) == 0
    stats = two_sites.statistics(StudyFilter(site_names=("South",)), by=("modality_family",))
    assert stats.table["n"].sum() > 0
    with pytest.raises(NotFoundError, match="No site named 'East'"):
        two_sites.site_ids(["East"])


def test_user_restricted_to_a_site(two_sites: Registry) -> None:
    """A physicist of North sees North's studies and is refused South's study detail."""
    north_id, south_id = two_sites.site_ids(["North", "South"])
    assert two_sites.sites_for_user("anna") is None  # no assignment: every site
    two_sites.assign_user_sites("anna", ["North"])
    assert two_sites.sites_for_user("anna") == (north_id,)
    anna = Principal("anna", Role.physicist, site_ids=two_sites.sites_for_user("anna"))
    seen = two_sites.studies(flt=narrow_filter(None, anna))
    assert len(seen) == 2
    # asking for South through the filter gives nothing, not South's studies
    assert two_sites.count_studies(narrow_filter(StudyFilter(site_ids=(south_id,)), anna)) == 0
    south = two_sites.studies(flt=StudyFilter(site_ids=(south_id,)))
    own = int(seen["study_id"].iloc[0])
    assert two_sites.study(own, principal=anna).study["study_id"] == own
    with pytest.raises(SiteAccessError, match="not of a site you are assigned to"):
        two_sites.study(int(south["study_id"].iloc[0]), principal=anna)
    admin = Principal("root", Role.admin)  # site_ids None: every site
    assert two_sites.study(int(south["study_id"].iloc[0]), principal=admin) is not None
    two_sites.assign_user_sites("anna", [])
    assert two_sites.sites_for_user("anna") is None


def test_site_from_institution_name_and_map(database_url: str, tmp_path: Path) -> None:
    """Without KERMA_SITE the Institution Name is the site; KERMA_SITE_MAP renames it."""
    import pydicom

    mapped_file = SHARED_DICOM / "RF-RDSR-Siemens-Zee.dcm"
    institution = str(pydicom.dcmread(mapped_file, stop_before_pixels=True).InstitutionName)
    plain_file = SHARED_DICOM / "CT-RDSR-Toshiba_DoseCheck.dcm"
    plain = str(pydicom.dcmread(plain_file, stop_before_pixels=True).InstitutionName)
    assert institution and plain and plain != institution
    settings = make_settings(
        database_url, tmp_path, site_map={f"  {institution.upper()} ": "Central"}
    )
    with Registry(settings=settings) as registry:
        registry.import_paths([mapped_file, plain_file])
        frame = registry.sites()
    assert sorted(frame["name"]) == sorted(["Central", " ".join(plain.split())])
    assert list(frame["studies"]) == [1, 1]


def test_site_map_tells_apart_institutions_of_one_name_by_address(
    database_url: str, tmp_path: Path
) -> None:
    """Two hospitals both called 'General Hospital': ``"Name|Address"`` keys of
    KERMA_SITE_MAP give each its site; an unlisted address takes the key of the name
    alone, and without a map both are one site (the address is not part of the key)."""
    import pydicom
    from pydicom.uid import generate_uid

    def variant(name: str, address: str | None) -> Path:
        ds = pydicom.dcmread(SHARED_DICOM / name)
        ds.InstitutionName = "General Hospital"
        if address is None:
            ds.pop("InstitutionAddress", None)
        else:
            ds.InstitutionAddress = address
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        out = tmp_path / "in" / f"{address or 'none'}-{name}"
        out.parent.mkdir(exist_ok=True)
        ds.save_as(out)
        return out

    files = [
        variant("CT-RDSR-Toshiba_DoseCheck.dcm", "1 Main Street,  Springfield"),
        variant("DX-RDSR-Canon_CXDI.dcm", "9 High Street, Shelbyville"),
        variant("MG-RDSR-Hologic_2D.dcm", None),
    ]
    site_map = {
        "general hospital | 1 MAIN STREET, Springfield": "Springfield General",
        "General Hospital|9 High Street, Shelbyville": "Shelbyville General",
        "General Hospital": "General (address unknown)",
    }
    settings = make_settings(database_url, tmp_path, site_map=site_map)
    with Registry(settings=settings) as registry:
        registry.import_paths(files)
        by_site = dict(zip(registry.sites()["name"], registry.sites()["studies"], strict=True))
    assert by_site == {
        "Springfield General": 1,
        "Shelbyville General": 1,
        "General (address unknown)": 1,
    }
    unmapped = make_settings(database_url, tmp_path / "other", site_map={})
    with Registry(settings=unmapped) as registry:
        registry.import_paths(
            [
                variant("RF-RDSR-Siemens-Zee.dcm", "2 Elm Road, Springfield"),
                variant("DX-RDSR-Carestream_DRXEvolution.dcm", "7 Oak Lane, Shelbyville"),
            ]
        )
        frame = registry.sites()
    assert dict(zip(frame["name"], frame["studies"], strict=True))["General Hospital"] == 2


def test_reprocess_keeps_the_sites_and_makes_no_new_ones(two_sites: Registry) -> None:
    """A reprocess (no node site given) keeps each study's site and adds no empty site.

    The objects' Institution Names are not sites here (the nodes named them North and
    South); the reprocess must not create a site row per Institution Name.
    """
    before = two_sites.sites().set_index("name")["studies"].to_dict()
    assert before == {"North": 2, "South": 3}
    two_sites.reprocess()
    after = two_sites.sites().set_index("name")["studies"].to_dict()
    assert after == {"North": 2, "South": 3}


def test_assign_to_a_name_that_is_no_user_warns(tmp_path: Path) -> None:
    """``kerma sites assign annna North``: kept (a directory user), but a note says so."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, COLUMNS="400", KERMA_DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}")
    env["KERMA_ARCHIVE_DIR"] = str(tmp_path / "archive")

    def kerma(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kerma.cli.main", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

    imported = kerma("import", "--site", "North", str(SHARED_DICOM / NORTH[0]))
    assert imported.returncode == 0, imported.stderr
    run = kerma("sites", "assign", "annna", "North")
    assert run.returncode == 0, run.stderr
    assert "'annna' is not a user yet" in run.stderr
    assert "annna sees the studies of: North" in run.stdout
    registry = Registry(settings=make_settings(env["KERMA_DATABASE_URL"], tmp_path))
    try:
        assert registry.sites_for_user("annna") == tuple(registry.site_ids(["North"]))
    finally:
        registry.close()
