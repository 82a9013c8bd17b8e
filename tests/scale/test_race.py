"""Several ingest nodes, one PostgreSQL: the registry equals a serial import's (#15).

Four ``kerma import`` processes import overlapping folders at once (the same objects in
different orders; cumulative CT and mammography reports and the parts of continued
studies split across them) into one PostgreSQL database. The result must be the
registry one serial import of the same objects makes: the same counts, the same stored
values by natural key (:func:`tests.scale.race_data.fingerprint`), the same dose digest
per study, and no duplicate report, event, study, device or patient.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from kerma.services.parallel import ParallelImporter
from kerma.services.registry import Registry
from tests.db_fixtures import TEST_PSEUDONYM_KEY, fresh_database, make_settings
from tests.scale.race_data import (
    SHARED_DICOM,
    build_objects,
    fingerprint,
    spread,
    study_digests,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom is not beside the repo"),
]

#: (table, natural key) pairs that must be unique: no duplicate under races.
NATURAL_KEYS = {
    "dose_report": "sop_instance_uid",
    "study": "study_instance_uid, device_id",
    "device": "device_key",
    "patient": "pseudonym",
    "irradiation_event": "dose_report_id, event_index",
    "event_group": "modality, device_id, acquisition_protocol, is_non_patient",
}


def _counts(url: str) -> dict[str, int]:
    """Return row counts of the registry tables and of current events and live reports."""
    engine = create_engine(url)
    queries = {
        **{t: f"SELECT count(*) FROM {t}" for t in NATURAL_KEYS},
        "rejected_object": "SELECT count(*) FROM rejected_object",
        "patient_size_measurement": "SELECT count(*) FROM patient_size_measurement",
        "current events": "SELECT count(*) FROM irradiation_event WHERE is_current",
        "superseded reports": "SELECT count(*) FROM dose_report WHERE superseded_by_id IS NOT NULL",
        "alert": "SELECT count(*) FROM alert",
    }
    try:
        with engine.connect() as conn:
            return {name: int(conn.execute(text(q)).scalar_one()) for name, q in queries.items()}
    finally:
        engine.dispose()


def _duplicates(url: str) -> dict[str, int]:
    """Return, per table, how many natural keys occur more than once."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: int(
                    conn.execute(
                        text(
                            f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY {key} "
                            "HAVING count(*) > 1) d"
                        )
                    ).scalar_one()
                )
                for table, key in NATURAL_KEYS.items()
            }
    finally:
        engine.dispose()


def _env(url: str, archive: Path) -> dict[str, str]:
    """Return the environment of a ``kerma`` subprocess on the shared registry."""
    env = dict(os.environ)
    env.update(
        KERMA_DATABASE_URL=url,
        KERMA_ARCHIVE_DIR=str(archive),
        KERMA_PSEUDONYM_KEY=TEST_PSEUDONYM_KEY,
        KERMA_ARCHIVE_MODE="original",
        PYTHONPATH=str(ROOT / "src"),
    )
    return env


def _compare(serial_url: str, racing_url: str) -> None:
    """Assert that two registries hold the same values (the difference shown when not)."""
    assert _duplicates(racing_url) == dict.fromkeys(NATURAL_KEYS, 0)
    assert _counts(racing_url) == _counts(serial_url)
    assert study_digests(racing_url) == study_digests(serial_url)
    serial, racing = fingerprint(serial_url), fingerprint(racing_url)
    for table in serial:
        only_serial = sorted(set(serial[table]) - set(racing[table]))[:3]
        only_racing = sorted(set(racing[table]) - set(serial[table]))[:3]
        fields = [
            {k: (a.get(k), b.get(k)) for k in a if a.get(k) != b.get(k)}
            for a, b in zip(
                map(json.loads, only_serial), map(json.loads, only_racing), strict=False
            )
        ]
        assert (only_serial, only_racing) == ([], []), f"{table}: {fields}"
        assert serial[table] == racing[table], table


def test_four_import_processes_equal_a_serial_import(tmp_path: Path) -> None:
    """4 concurrent ``kerma import`` processes on overlapping folders = one serial import."""
    objects = build_objects(tmp_path / "objects")
    folders = spread(objects, tmp_path / "nodes")
    with (
        fresh_database("postgresql", tmp_path) as serial_url,
        fresh_database("postgresql", tmp_path) as racing_url,
    ):
        settings = make_settings(serial_url, tmp_path / "serial")
        with Registry(settings=settings) as registry:
            summary = registry.import_paths([tmp_path / "objects"])
        assert summary.n_imported > 75
        assert summary.replaced + summary.superseded >= 10  # cumulative reports took part

        env = _env(racing_url, tmp_path / "racing-archive")
        # the schema is made once before the nodes start (as `kerma db upgrade` would)
        Registry(settings=make_settings(racing_url, tmp_path / "racing")).close()
        nodes = [
            subprocess.Popen(
                [sys.executable, "-m", "kerma.cli.main", "import", str(folder)],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for folder in folders
        ]
        results = [(node.wait(timeout=900), *node.communicate()) for node in nodes]
        for code, out, err in results:
            assert code == 0, out + err
            assert "Traceback" not in err
        _compare(serial_url, racing_url)


def test_import_workers_equal_a_serial_import(tmp_path: Path) -> None:
    """``kerma import --workers 3`` on all folders at once = one serial import."""
    objects = build_objects(tmp_path / "objects", demo_studies=24)
    folders = spread(objects, tmp_path / "nodes", seed=3)
    with (
        fresh_database("postgresql", tmp_path) as serial_url,
        fresh_database("postgresql", tmp_path) as parallel_url,
    ):
        with Registry(settings=make_settings(serial_url, tmp_path / "serial")) as registry:
            registry.import_paths([tmp_path / "objects"])
        settings = make_settings(parallel_url, tmp_path / "parallel")
        handled: list[int] = []
        with ParallelImporter(settings, workers=3) as importer:
            summary = importer.import_paths(folders, progress=handled.append)
        assert summary.objects_read == sum(handled) == sum(len(list(f.iterdir())) for f in folders)
        assert summary.already_present > 0
        _compare(serial_url, parallel_url)
