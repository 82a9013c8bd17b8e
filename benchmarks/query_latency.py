"""Query latency and memory of Kerma's listings and analytics on a registry of N events.

Builds a registry of N irradiation events (default 1,000,000, about 100,000 studies)
quickly through the store: bulk inserts with SQLAlchemy Core into the real tables
(``device``, ``patient``, ``study``, ``dose_report``, ``irradiation_event``), then the
same derive code the ingest runs (:func:`kerma.services.derive.refresh_all`: summary
columns, standard exams, event groups), never through DICOM files. The data are
synthetic: 24 rooms (CT, DX, MG, RF/XA with biplane, NM), standard exams from the
packaged rules, study dates over three years, log-normal doses per exam and room; one
site (``Site 01``).

Ten million events through that path take about an hour; ``--replicate-from BASE``
builds BASE events that way, then copies them in SQL as further sites of a hospital
group (``Site 02`` ...; one ``INSERT ... SELECT`` per table and copy, new ids, keys,
UIDs, devices and patients; derived columns copied, so consistent) up to ``--events``,
and checks the result: counts, unique keys, every column of the first and last copy
against its original (:func:`replicate_registry`, :func:`verify_replicas`).

Then it measures each call in a fresh child process (so each call's peak memory is its
own, ``ru_maxrss``):

- in-process, through the Python API (``kerma.Registry``): the first page of studies,
  a filtered page, the last page, the DRL comparison, statistics per exam and room,
  the summary per protocol and the cumulative dose, and the listing, DRL comparison,
  statistics and summary of one site and of one year; median and 95th percentile of
  the wall time over ``--repeat`` runs in one process, and the process's peak RSS;
- as whole CLI processes (``kerma studies --limit 50``, filtered, last page, ``kerma
  drl``, ``kerma stats``, ``kerma summary``, ``kerma cumulative``): wall time of the
  whole process (interpreter start and imports included) and its peak RSS.

Usage (from the repository root, in the project's virtual environment)::

    .venv/bin/python benchmarks/query_latency.py --backend both
    .venv/bin/python benchmarks/query_latency.py --events 100000 --backend sqlite
    .venv/bin/python benchmarks/query_latency.py --events 10000000 --replicate-from 1000000 \
        --backend postgresql --repeat 5 --cli-repeat 1

PostgreSQL: ``--postgres-url`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
is the server's admin database; the benchmark creates ``kerma_bench_<hex>`` and drops
it afterwards unless ``--keep``. SQLite: a file in ``--workdir`` (kept with ``--keep``).
``--reuse URL`` measures an existing benchmark registry without building it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: Rooms: (family, modality, device name, station, biplane).
ROOMS: tuple[tuple[str, str, str, str, bool], ...] = (
    *(("CT", "CT", f"ACME CT {i}", f"CTROOM{i}", False) for i in range(1, 7)),
    *(("DX", "DX", f"ACME DR {i}", f"DXROOM{i}", False) for i in range(1, 7)),
    *(("MG", "MG", f"ACME Mammo {i}", f"MAMMO{i}", False) for i in range(1, 5)),
    ("RF/XA", "XA", "ACME Cath Lab 1", "CATH1", True),
    ("RF/XA", "XA", "ACME Cath Lab 2", "CATH2", True),
    ("RF/XA", "XA", "ACME Angio Suite", "ANGIO1", False),
    ("RF/XA", "RF", "ACME Fluoro 1", "FLUORO1", False),
    ("RF/XA", "RF", "ACME Fluoro 2", "FLUORO2", False),
    *(("NM", "NM", f"ACME Gamma {i}", f"NM{i}", False) for i in range(1, 4)),
)

#: Share of studies per family, mean events per study (RF/XA: log-normal).
FAMILY_SHARE = {"CT": 0.35, "DX": 0.35, "MG": 0.15, "RF/XA": 0.10, "NM": 0.05}

#: CT exams: description -> (CTDIvol median mGy, scan length cm, head phantom, protocols).
CT_EXAMS = {
    "CT HEAD": (50.0, 18.0, True, ("Head routine", "Head helical")),
    "CT HEAD STROKE": (55.0, 18.0, True, ("Head stroke",)),
    "CT CHEST": (8.0, 35.0, False, ("Thorax routine", "Thorax low dose")),
    "CT ABDOMEN PELVIS": (10.0, 45.0, False, ("Abdomen routine",)),
    "CT CHEST ABDOMEN PELVIS": (10.0, 65.0, False, ("CAP routine",)),
    "CT ABDOMEN APPENDICITIS": (11.0, 45.0, False, ("Abdomen acute",)),
    "CT SINUS": (15.0, 12.0, True, ("Sinus",)),
    "CT CERVICAL SPINE": (20.0, 20.0, False, ("C-spine",)),
}
#: DX exams: description -> (KAP median Gy·m² per projection, projections, protocol, view).
DX_EXAMS = {
    "CHEST PA": (1.0e-5, (1, 2), "Chest PA", "PA"),
    "PELVIS AP": (1.0e-4, (1, 1), "Pelvis AP", "AP"),
    "ABDOMEN": (1.5e-4, (1, 2), "Abdomen AP", "AP"),
    "LUMBAR SPINE AP": (1.5e-4, (1, 3), "Lumbar spine AP", "AP"),
    "KNEE": (2.0e-5, (2, 4), "Knee", "AP"),
}
MG_EXAMS = {"SCREENING MAMMOGRAPHY": 1.3, "DIAGNOSTIC MAMMOGRAPHY": 1.6}
#: RF/XA exams: description -> (events median, KAP per event median Gy·m², Ka,r per event Gy).
RF_EXAMS = {
    "CORONARY ANGIOGRAPHY": (50, 4.0e-5, 0.004),
    "PCI": (120, 5.0e-5, 0.006),
    "CEREBRAL ANGIOGRAPHY": (80, 3.0e-5, 0.005),
    "BARIUM SWALLOW": (15, 2.0e-5, 0.001),
}
RF_PROTOCOLS = ("Fluoro low", "Fluoro normal", "Cine 15 fps", "DSA 2 fps")
NM_EXAMS = {"BONE SCAN": 650.0, "MYOCARDIAL PERFUSION": 900.0, "THYROID SCAN": 150.0}

FIRST_DAY = dt.date(2023, 1, 1)
DAYS = 3 * 365


# -- building ------------------------------------------------------------------------------------


#: The pseudonym key of the benchmark registry (one key for building and measuring;
#: Kerma needs at least 32 bytes and refuses a registry made with another key).
BENCHMARK_KEY = "kerma-benchmark-pseudonym-key-0123456789abcdef"

#: The builder's synthetic accession numbers stay in clear (``KERMA_ACCESSION_IN_CLEAR``
#: and the registry's ``accession_storage`` setting say so): otherwise the first opening
#: of the registry hashes every one, one UPDATE per study (over 3 minutes at 1,000,000
#: studies on the shared machine), which no call measured here needs.
ACCESSION_IN_CLEAR = True


def _families(n_events: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return each study's family index and its number of events, totalling about n_events."""
    names = list(FAMILY_SHARE)
    mean = (
        0.35 * 4.0 + 0.35 * 2.1 + 0.15 * 4.0 + 0.10 * 68.0 + 0.05 * 1.0
    )  # events per study, ≈ 9.6
    n_studies = max(int(n_events / mean), 10)
    family = rng.choice(len(names), size=n_studies, p=list(FAMILY_SHARE.values()))
    counts = np.ones(n_studies, dtype=int)
    for index, name in enumerate(names):
        mask = family == index
        k = int(mask.sum())
        if name == "CT":
            counts[mask] = rng.integers(2, 7, k)  # a localiser + 1-5 acquisitions
        elif name == "DX":
            counts[mask] = rng.integers(1, 4, k)
        elif name == "MG":
            counts[mask] = 4
        elif name == "RF/XA":
            counts[mask] = np.clip(rng.lognormal(np.log(50), 0.7, k).astype(int), 3, 600)
        else:
            counts[mask] = 1
    # scale the fluoroscopy studies so that the total hits n_events
    rf = family == names.index("RF/XA")
    others = int(counts[~rf].sum())
    if rf.any() and n_events > others:
        factor = (n_events - others) / counts[rf].sum()
        counts[rf] = np.maximum(1, np.round(counts[rf] * factor)).astype(int)
    return family, counts


def build_registry(
    url: str, n_events: int, *, seed: int = 20261205, analyse: bool = True, log: Any = print
) -> None:
    """Create and fill a registry of about ``n_events`` events at ``url`` (see module doc).

    Every device and study is of the site :func:`site_name` ``(0)``. ``analyse=False``
    leaves out the final ``VACUUM ANALYZE`` (:func:`replicate_registry` runs it after
    the copies).
    """
    from sqlalchemy import delete, insert, text

    from kerma.db.migrate import ensure_schema
    from kerma.db.models import (
        Device,
        DoseReport,
        IrradiationEvent,
        Patient,
        RegistrySetting,
        Site,
        Study,
    )
    from kerma.db.patients import ACCESSION_STORAGE_KEY
    from kerma.db.session import make_engine, make_session_factory
    from kerma.services.derive import make_context, refresh_all

    rng = np.random.default_rng(seed)
    engine = make_engine(url)
    ensure_schema(engine)
    if engine.dialect.name == "postgresql":  # the history's months get their partitions
        from kerma.db.partitions import ensure_partitions

        with engine.begin() as conn:
            ensure_partitions(conn, since=FIRST_DAY)
    started = time.perf_counter()
    family_names = list(FAMILY_SHARE)
    family, counts = _families(n_events, rng)
    n_studies = len(family)
    n_patients = max(n_studies // 2, 1)
    rooms_by_family = {f: [i for i, r in enumerate(ROOMS) if r[0] == f] for f in FAMILY_SHARE}
    with engine.begin() as conn:
        # replace the setting: a registry opened before the build (a test's) has one
        setting = RegistrySetting.__table__
        conn.execute(delete(setting).where(setting.c.key == ACCESSION_STORAGE_KEY))
        conn.execute(
            insert(setting),
            [
                {
                    "key": ACCESSION_STORAGE_KEY,
                    "value": "clear",
                    "updated_at": dt.datetime.now(dt.UTC),
                }
            ],
        )
        conn.execute(insert(Site.__table__), [{"id": 1, "name": site_name(0)}])
        conn.execute(
            insert(Device.__table__),
            [
                {
                    "id": i + 1,
                    "site_id": 1,
                    "device_key": f"bench-{i + 1:04d}".ljust(64, "0"),
                    "manufacturer": "ACME",
                    "manufacturer_model_name": name.removeprefix("ACME "),
                    "station_name": station,
                    "device_serial_number": f"SN{i + 1:04d}",
                    "device_name": f"{name} ({station})",
                }
                for i, (_, _, name, station, _) in enumerate(ROOMS)
            ],
        )
        for start in range(0, n_patients, 50_000):
            conn.execute(
                insert(Patient.__table__),
                [
                    {"id": p, "pseudonym": f"{p:064x}"}
                    for p in range(start + 1, min(start + 50_000, n_patients) + 1)
                ],
            )
    log(f"  {n_studies} studies, {int(counts.sum())} events, {n_patients} patients")
    chunk = 5_000
    event_id = 0
    for start in range(0, n_studies, chunk):
        ids = np.arange(start, min(start + chunk, n_studies))
        studies, reports, events = _chunk_rows(
            rng, ids, family[ids], counts[ids], family_names, rooms_by_family, n_patients, event_id
        )
        event_id += len(events)
        with engine.begin() as conn:
            conn.execute(insert(Study.__table__), studies)
            conn.execute(insert(DoseReport.__table__), reports)
            for e_start in range(0, len(events), 20_000):
                conn.execute(insert(IrradiationEvent.__table__), events[e_start : e_start + 20_000])
        if start // chunk % 5 == 0:
            log(f"  inserted {start + len(ids)} studies ({time.perf_counter() - started:.0f} s)")
    if engine.dialect.name == "postgresql":  # sequences after explicit ids
        with engine.begin() as conn:
            for table in ("site", "device", "patient", "study", "dose_report", "irradiation_event"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    inserted = time.perf_counter()
    log(f"  inserts: {inserted - started:.0f} s; deriving the summary columns ...")
    factory = make_session_factory(engine, write=True)

    def progress(done: int, total: int) -> None:
        if done % 20_000 < 500:
            log(f"  derived {done}/{total} studies ({time.perf_counter() - inserted:.0f} s)")

    refresh_all(factory, context=make_context(), batch_size=1000, progress=progress)
    derived = time.perf_counter()
    if analyse:
        log(f"  derive: {derived - inserted:.0f} s; analysing ...")
        _analyse(engine)
    log(f"  built in {time.perf_counter() - started:.0f} s")
    engine.dispose()


def _analyse(engine: Any) -> None:
    """Vacuum and analyse the registry (PostgreSQL) or analyse it (SQLite)."""
    from sqlalchemy import text

    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def _chunk_rows(
    rng: np.random.Generator,
    ids: np.ndarray,
    family: np.ndarray,
    counts: np.ndarray,
    family_names: list[str],
    rooms_by_family: dict[str, list[int]],
    n_patients: int,
    first_event_id: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the study, report and event rows of one chunk of studies."""
    studies, reports, events = [], [], []
    received = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    n = len(ids)
    days = rng.integers(0, DAYS, n)
    ages = np.round(rng.uniform(1, 95, n), 1)
    ages[rng.random(n) < 0.03] = np.nan
    sexes = rng.choice(["F", "M"], n)
    weights = np.round(rng.normal(75, 15, n).clip(20, 180), 1)
    patients = rng.integers(1, n_patients + 1, n)
    non_patient = rng.random(n) < 0.01
    for k in range(n):
        sid = int(ids[k]) + 1
        fam = family_names[int(family[k])]
        room = int(rng.choice(rooms_by_family[fam]))
        _, modality, _, _, biplane = ROOMS[room]
        room_factor = 1.0 + 0.08 * (room % 6)
        date = FIRST_DAY + dt.timedelta(days=int(days[k]))
        sex = str(sexes[k])
        study_events: list[dict[str, Any]] = []
        accumulated: dict[str, Any] = {}
        ct_total = None
        if fam == "CT":
            description = str(rng.choice(list(CT_EXAMS)))
            median, length, head, protocols = CT_EXAMS[description]
            study_events.append(
                {"ct_acquisition_type": "Constant Angle Acquisition", "ctdivol_mgy": 0.1,
                 "dlp_mgycm": 2.0, "acquisition_protocol": "Topogram"}
            )  # fmt: skip
            for _ in range(int(counts[k]) - 1):
                ctdivol = float(median * room_factor * rng.lognormal(0, 0.3))
                dw = float(rng.normal(160 if head else 280, 20 if head else 40))
                study_events.append(
                    {
                        "ct_acquisition_type": "Spiral Acquisition",
                        "ctdivol_mgy": round(ctdivol, 2),
                        "dlp_mgycm": round(ctdivol * length * rng.uniform(0.8, 1.2), 1),
                        "acquisition_protocol": str(rng.choice(protocols)),
                        "ctdiw_phantom_type": "IEC Head Dosimetry Phantom"
                        if head
                        else "IEC Body Dosimetry Phantom",
                        "kvp_kv": float(rng.choice([100.0, 120.0])),
                        "water_equivalent_diameter_mm": round(dw, 1)
                        if rng.random() < 0.6
                        else None,
                    }
                )
            ct_total = round(sum(e["dlp_mgycm"] for e in study_events), 1)
        elif fam == "DX":
            description = str(rng.choice(list(DX_EXAMS)))
            median, _, protocol, view = DX_EXAMS[description]
            for _ in range(int(counts[k])):
                study_events.append(
                    {
                        "dap_gym2": float(median * room_factor * rng.lognormal(0, 0.4)),
                        "entrance_dose_mgy": round(float(rng.lognormal(np.log(0.3), 0.4)), 3),
                        "acquisition_protocol": protocol,
                        "image_view": view,
                    }
                )
        elif fam == "MG":
            description = str(rng.choice(list(MG_EXAMS)))
            for side, view in (("Left", "CC"), ("Left", "MLO"), ("Right", "CC"), ("Right", "MLO")):
                study_events.append(
                    {
                        "agd_mgy": round(float(MG_EXAMS[description] * room_factor
                                               * rng.lognormal(0, 0.25)), 3),
                        "laterality": side,
                        "image_view": view,
                        "compression_thickness_mm": float(rng.integers(30, 80)),
                        "acquisition_protocol": "2D",
                    }
                )  # fmt: skip
            for side in ("left", "right"):
                accumulated[f"agd_total_{side}_mgy"] = sum(
                    e["agd_mgy"] for e in study_events if e["laterality"].lower() == side
                )
            sex = "F"
        elif fam == "RF/XA":
            options = [d for d in RF_EXAMS if (d == "BARIUM SWALLOW") == (modality == "RF")]
            description = str(rng.choice(options))
            _, dap_median, kar_median = RF_EXAMS[description]
            planes = ("Plane A", "Plane B") if biplane else ("Single Plane",)
            totals = {p: [0.0, 0.0, 0.0] for p in planes}
            for index in range(int(counts[k])):
                plane = planes[index % len(planes)]
                fluoro = rng.random() < 0.7
                dap = float(dap_median * room_factor * rng.lognormal(0, 0.6))
                kar = float(kar_median * room_factor * rng.lognormal(0, 0.6))
                duration = round(float(rng.uniform(2, 20)), 1) if fluoro else None
                study_events.append(
                    {
                        "acquisition_plane": plane,
                        "irradiation_event_type": "Fluoroscopy" if fluoro else "Stationary "
                        "Acquisition",
                        "acquisition_protocol": str(rng.choice(RF_PROTOCOLS[:2] if fluoro
                                                               else RF_PROTOCOLS[2:])),
                        "dap_gym2": dap,
                        "dose_rp_gy": kar,
                        "irradiation_duration_s": duration,
                    }
                )  # fmt: skip
                totals[plane][0] += dap
                totals[plane][1] += kar
                totals[plane][2] += duration or 0.0
            accumulated["planes"] = [
                {"acquisition_plane": p, "dap_total_gym2": t[0] * 1.02,
                 "dose_rp_total_gy": t[1] * 1.02, "fluoro_time_total_s": t[2]}
                for p, t in totals.items()
            ]  # fmt: skip
        else:
            description = str(rng.choice(list(NM_EXAMS)))
            study_events.append(
                {
                    "administered_activity_mbq": round(
                        float(NM_EXAMS[description] * rng.lognormal(0, 0.15)), 1
                    ),
                    "radionuclide": "Tc-99m",
                }
            )
        if non_patient[k]:
            description = "QA PHANTOM"
        studies.append(
            {
                "id": sid,
                "study_instance_uid": f"2.25.{sid}",
                "device_id": room + 1,
                "site_id": 1,
                "patient_id": int(patients[k]),
                "accession_number": f"A{sid:08d}",
                "study_date": date,
                "study_time": f"{int(rng.integers(7, 19)):02d}:{int(rng.integers(0, 60)):02d}:00",
                "study_description": description,
                "modality": modality,
                "modalities": modality,
                "patient_age_years": None if np.isnan(ages[k]) else float(ages[k]),
                "patient_sex": sex,
                "patient_weight_kg": float(weights[k]),
                "is_non_patient": bool(non_patient[k]),
            }
        )
        reports.append(
            {
                "id": sid,
                "sop_instance_uid": f"2.25.9{sid}",
                "kind": {"CT": "rdsr-ct", "NM": "rdsr-radiopharmaceutical"}.get(
                    fam, "rdsr-projection"
                ),
                "study_id": sid,
                "archive_sha256": f"{sid:064x}",
                "archive_path": f"bench/{sid}.dcm",
                "source": "benchmark",
                "received_at": received,
                "extractor_version": "benchmark",
                "warnings": [],
                "content": {"accumulated": accumulated},
                "number_of_events": len(study_events),
                "ct_dlp_total_mgycm": ct_total,
            }
        )
        for index, event in enumerate(study_events):
            eid = first_event_id + len(events) + 1
            events.append(
                {
                    "id": eid,
                    "dose_report_id": sid,
                    "study_id": sid,
                    "study_month": date.replace(day=1),
                    "event_index": index,
                    "event_key": f"{sid}.{index}",
                    "is_current": True,
                    "modality": modality,
                    **event,
                }
            )
    return studies, reports, _uniform(events)


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row the same keys (executemany needs one parameter set)."""
    keys = sorted({k for row in rows for k in row})
    return [{k: row.get(k) for k in keys} for row in rows]


# -- replicating: further sites of a hospital group ---------------------------------------------

#: Tables a benchmark registry fills per site, parents first (the order of the copies).
REPLICATED_TABLES = ("device", "patient", "event_group", "study", "dose_report",
                     "irradiation_event")  # fmt: skip

#: Tables that hold one set of rows for the whole registry, never copied.
REGISTRY_WIDE_TABLES = ("site", "registry_setting", "alembic_version")


def site_name(copy: int) -> str:
    """Return the site of the base registry (``copy`` 0) or of its ``copy``-th copy."""
    return f"Site {copy + 1:02d}"


def _copy_columns(table: str, copy: int, sizes: dict[str, int], site_id: int) -> dict[str, str]:
    """Return the SQL expression (of the original row ``o``) of every column a copy changes.

    Every other column is copied unchanged, derived columns included. Ids move by
    ``copy`` times the base table's largest id (the base's ids are 1..n); keys, UIDs,
    accession numbers and archive hashes follow :func:`build_registry`'s schemes on the
    new ids, so a copy is what the builder would have made with those ids; values that
    the base leaves empty (Device Observer UID, Irradiation Event UID, accession
    pseudonym) get a new SHA-256 when present. Each copy's devices are renamed with a
    station suffix (``CTROOM1-S02``) and belong to the copy's site.
    """

    def new(column: str, of: str) -> str:
        return f"o.{column} + {copy * sizes[of]}"

    def rehash(column: str) -> str:  # NULL stays NULL
        return f"encode(sha256(convert_to(o.{column} || '#{copy}', 'UTF8')), 'hex')"

    suffix = f"-S{copy + 1:02d}"
    if table == "device":
        return {
            "id": new("id", "device"),
            "device_key": f"rpad('bench-' || lpad(({new('id', 'device')})::text, 4, '0'), 64, '0')",
            "device_observer_uid": rehash("device_observer_uid"),
            "device_serial_number": f"o.device_serial_number || '{suffix}'",
            "station_name": f"o.station_name || '{suffix}'",
            "device_name": f"replace(o.device_name, '(' || o.station_name || ')', "
            f"'(' || o.station_name || '{suffix})')",
            "site_id": str(site_id),
        }
    if table == "patient":
        return {
            "id": new("id", "patient"),
            "pseudonym": f"lpad(to_hex({new('id', 'patient')}), 64, '0')",
        }
    if table == "event_group":
        return {"id": new("id", "event_group"), "device_id": new("device_id", "device")}
    if table == "study":
        return {
            "id": new("id", "study"),
            "study_instance_uid": f"'2.25.' || ({new('id', 'study')})",
            "device_id": new("device_id", "device"),
            "patient_id": new("patient_id", "patient"),
            "site_id": str(site_id),
            "accession_number": f"'A' || lpad(({new('id', 'study')})::text, 8, '0')",
            "accession_pseudonym": rehash("accession_pseudonym"),
        }
    if table == "dose_report":
        return {
            "id": new("id", "dose_report"),
            "sop_instance_uid": f"'2.25.9' || ({new('id', 'dose_report')})",
            "study_id": new("study_id", "study"),
            "archive_sha256": f"lpad(to_hex({new('id', 'dose_report')}), 64, '0')",
            "archive_path": f"'bench/' || ({new('id', 'dose_report')}) || '.dcm'",
            "superseded_by_id": new("superseded_by_id", "dose_report"),
        }
    if table == "irradiation_event":
        return {
            "id": new("id", "irradiation_event"),
            "dose_report_id": new("dose_report_id", "dose_report"),
            "study_id": new("study_id", "study"),
            "event_key": f"({new('study_id', 'study')}) || '.' || o.event_index",
            "irradiation_event_uid": rehash("irradiation_event_uid"),
            "event_group_id": new("event_group_id", "event_group"),
        }
    raise ValueError(f"not a replicated table: {table}")


def _column_sql(table: str, copy: int, sizes: dict[str, int], site_id: int) -> dict[str, str]:
    """Return every column of ``table`` with its expression in copy ``copy`` (model order)."""
    from kerma.db.base import Base

    changed = _copy_columns(table, copy, sizes, site_id)
    columns = [c.name for c in Base.metadata.tables[table].columns]
    unknown = set(changed) - set(columns)
    if unknown:
        raise ValueError(f"{table} has no column {sorted(unknown)}")
    return {name: changed.get(name, f"o.{name}") for name in columns}


def replicate_registry(url: str, copies: int, *, log: Any = print) -> dict[str, Any]:
    """Copy the registry at ``url`` ``copies`` times in SQL, each copy a further site.

    The registry (one site, :func:`build_registry`) is the base; copy ``k`` (1..copies)
    is a new site :func:`site_name` ``(k)`` with its own devices, patients, event
    groups, studies, reports and events: one ``INSERT ... SELECT`` per table and copy
    (:func:`_copy_columns`). Derived columns (summary, standard exams, effective dose,
    SSDE, event groups) stay consistent because they are copies of derived rows. Then
    the sequences, ``VACUUM ANALYZE`` and :func:`verify_replicas`. PostgreSQL only.

    Returns
    -------
    dict
        ``copy_s`` (seconds of the inserts), ``analyse_s`` and the verification.

    Raises
    ------
    ValueError
        When the registry is not PostgreSQL, holds no site or one site only is
        expected but more are there, or rows in a table the copy does not know.
    """
    from sqlalchemy import func, select, text

    from kerma.db.base import Base
    from kerma.db.session import make_engine

    engine = make_engine(url)
    if engine.dialect.name != "postgresql":
        raise ValueError("Unable to replicate the registry: PostgreSQL only.")
    started = time.perf_counter()
    with engine.begin() as conn:
        filled = {
            name
            for name, table in Base.metadata.tables.items()
            if conn.execute(select(func.count()).select_from(table)).scalar_one()
        }
        others = filled - set(REPLICATED_TABLES) - set(REGISTRY_WIDE_TABLES)
        if others:
            raise ValueError(f"Unable to replicate the registry: rows in {sorted(others)}.")
        sites = conn.execute(text("SELECT count(*) FROM site")).scalar_one()
        if sites != 1:
            raise ValueError(f"Unable to replicate the registry: {sites} sites, not 1.")
        sizes = {
            t: int(conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {t}")).scalar_one())
            for t in REPLICATED_TABLES
        }
    log(f"  replicating {copies} times: base sizes {sizes}")
    for copy in range(1, copies + 1):
        with engine.begin() as conn:
            site_id = conn.execute(
                text("INSERT INTO site (name, created_at) VALUES (:n, now()) RETURNING id"),
                {"n": site_name(copy)},
            ).scalar_one()
            for table in REPLICATED_TABLES:
                columns = _column_sql(table, copy, sizes, site_id)
                conn.execute(
                    text(
                        f"INSERT INTO {table} ({', '.join(columns)}) "
                        f"SELECT {', '.join(columns.values())} FROM {table} AS o "
                        f"WHERE o.id <= {sizes[table]}"
                    )
                )
        log(f"  copy {copy}/{copies} ({site_name(copy)}): {time.perf_counter() - started:.0f} s")
    copied = time.perf_counter()
    with engine.begin() as conn:
        for table in ("site", *REPLICATED_TABLES):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
    _analyse(engine)
    analysed = time.perf_counter()
    log(f"  inserts {copied - started:.0f} s, VACUUM ANALYZE {analysed - copied:.0f} s; verifying")
    verification = verify_replicas(engine, copies, sizes)
    engine.dispose()
    return {"copy_s": copied - started, "analyse_s": analysed - copied, "sizes": sizes,
            "verification": verification}  # fmt: skip


def verify_replicas(engine: Any, copies: int, sizes: dict[str, int]) -> dict[str, Any]:
    """Check a replicated registry; return what was checked, or raise ``AssertionError``.

    - every replicated table holds ``copies + 1`` times its base rows;
    - no duplicate of any unique constraint or unique index of the model, nor of an
      event's ``(study_id, event_key)``;
    - every row of the first and of the last copy equals its original in every column,
      the changed ones equal to their expression of the original (:func:`_copy_columns`);
    - per site: studies, events and the sum of the derived effective dose.
    """
    from sqlalchemy import JSON, text

    from kerma.db.base import Base

    out: dict[str, Any] = {"counts": {}, "duplicates": {}, "unequal_rows": {}}
    with engine.connect() as conn:

        def scalar(sql: str) -> Any:
            return conn.execute(text(sql)).scalar_one()

        for table in REPLICATED_TABLES:
            count = int(scalar(f"SELECT count(*) FROM {table}"))
            out["counts"][table] = count
            assert count == sizes[table] * (copies + 1), f"{table}: {count} rows"
            model = Base.metadata.tables[table]
            keys = [tuple(c.name for c in u.columns) for u in model.constraints
                    if u.__class__.__name__ == "UniqueConstraint"]  # fmt: skip
            keys += [(c.name,) for c in model.columns if c.unique]
            keys += [tuple(c.name for c in i.columns) for i in model.indexes if i.unique]
            if table == "irradiation_event":
                keys.append(("study_id", "event_key"))
            for key in keys:
                cols = ", ".join(key)
                dup = int(scalar(f"SELECT count(*) FROM (SELECT {cols} FROM {table} "
                                 f"GROUP BY {cols} HAVING count(*) > 1) AS d"))  # fmt: skip
                out["duplicates"][f"{table}({cols})"] = dup
                assert dup == 0, f"{dup} duplicate {table}({cols})"
            site_ids = dict(conn.execute(text("SELECT name, id FROM site")).all())
            for copy in sorted({1, copies}):
                columns = _column_sql(table, copy, sizes, site_ids[site_name(copy)])
                json_columns = {c.name for c in model.columns if isinstance(c.type, JSON)}
                same = " AND ".join(
                    f"n.{name}::text IS NOT DISTINCT FROM ({expr})::text"
                    if name in json_columns
                    else f"n.{name} IS NOT DISTINCT FROM ({expr})"
                    for name, expr in columns.items()
                )
                matched, unequal = conn.execute(
                    text(
                        f"SELECT count(*), count(*) FILTER (WHERE NOT ({same})) FROM {table} AS o "
                        f"JOIN {table} AS n ON n.id = o.id + {copy * sizes[table]} "
                        f"WHERE o.id <= {sizes[table]}"
                    )
                ).one()
                out["unequal_rows"][f"{table} copy {copy}"] = int(unequal)
                assert matched == sizes[table], f"{table} copy {copy}: {matched} rows matched"
                assert unequal == 0, f"{table} copy {copy}: {unequal} rows differ"
        out["per_site"] = [
            {
                "site": name,
                "studies": int(n),
                "events": int(e or 0),
                "effective_dose_msv": float(d or 0),
            }
            for name, n, e, d in conn.execute(
                text(
                    "SELECT site.name, count(*), sum(study.number_of_events), "
                    "round(sum(study.effective_dose_msv)::numeric, 3) FROM study "
                    "JOIN site ON site.id = study.site_id GROUP BY site.name ORDER BY site.name"
                )
            )
        ]
        first = out["per_site"][0]
        for row in out["per_site"]:
            same = {k: row[k] == first[k] for k in ("studies", "events", "effective_dose_msv")}
            assert all(same.values()), f"{row} differs from {first}"
    return out


# -- measuring -----------------------------------------------------------------------------------

#: In-process calls: name -> what the child runs.
CALLS = (
    "studies first page",
    "studies filtered page",
    "studies last page",
    "drl",
    "stats per exam and room",
    "summary",
    "summary, date filter (read path)",
    "cumulative",
    "studies first page, one site",
    "drl, one site",
    "stats per exam and room, one site",
    "summary, one site",
    "drl, one year",
    "stats per exam and room, one year",
)

#: The site and the year of the calls filtered to one site or one year (a hospital
#: group's usual questions: one site's rooms, last year's DRL survey).
ONE_SITE = site_name(0)
ONE_YEAR = {"date_from": "2025-01-01", "date_to": "2025-12-31"}

#: Filter of the "filtered page": CT of one room in a half year.
FILTERED = {"modalities": "CT", "date_from": "2025-01-01", "date_to": "2025-06-30",
            "device_name": "CT 2"}  # fmt: skip


def _run_call(name: str, registry: Any, last_offset: int) -> Any:
    """Run one named call on a registry (in the child)."""
    from kerma.services.filters import StudyFilter

    if name == "studies first page":
        return registry.list_studies(limit=50)
    if name == "studies filtered page":
        return registry.list_studies(StudyFilter(**FILTERED), limit=50)
    if name == "studies last page":
        return registry.list_studies(limit=50, offset=last_offset)
    if name == "drl":
        registry.ensure_exams_current()
        return registry.drl()
    if name == "stats per exam and room":
        registry.ensure_exams_current()
        return registry.statistics(by=("standard_exam", "device_name"))
    if name == "summary":
        return registry.summary()
    if name == "summary, date filter (read path)":
        return registry.summary(date_from="2024-01-01")
    if name == "cumulative":
        registry.ensure_exams_current()
        return registry.cumulative()
    site, year = StudyFilter(site_names=(ONE_SITE,)), StudyFilter(**ONE_YEAR)
    if name == "studies first page, one site":
        return registry.list_studies(site, limit=50)
    if name == "summary, one site":
        return registry.summary(flt=site)
    registry.ensure_exams_current()
    if name == "drl, one site":
        return registry.drl(site)
    if name == "stats per exam and room, one site":
        return registry.statistics(site, by=("standard_exam", "device_name"))
    if name == "drl, one year":
        return registry.drl(year)
    if name == "stats per exam and room, one year":
        return registry.statistics(year, by=("standard_exam", "device_name"))
    raise ValueError(name)


def open_benchmark_registry(url: str) -> Any:
    """Open the benchmark registry at ``url`` with the builder's settings (its key, its
    accession storage, an archive folder in the temporary directory)."""
    from kerma.config import Settings
    from kerma.services.registry import Registry

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        archive_dir=Path(tempfile.gettempdir()) / "kerma-bench-archive",
        pseudonym_key=BENCHMARK_KEY,
        accession_in_clear=ACCESSION_IN_CLEAR,
    )
    return Registry(settings=settings)


def child(name: str, url: str, repeat: int) -> dict[str, Any]:
    """Measure one call ``repeat`` times in this process; return times and memory."""
    registry = open_benchmark_registry(url)
    total = registry.count_studies()
    rss_open_kb = _rss_kb()
    times, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        _run_call(name, registry, max(total - 50, 0))
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    registry.close()
    return {
        "times_s": times,
        "cpu_s": cpu,
        "rss_after_open_mb": rss_open_kb / 1024,
        "peak_rss_mb": _vm_hwm_kb() / 1024,
    }


def _vm_hwm_kb() -> float:
    """Return this process's peak resident set size (kB): VmHWM of /proc/self/status.

    Not ``ru_maxrss``: on Linux a process forked from a large parent starts with the
    parent's high-water mark, which survives ``exec`` (benchmarks/peak_rss.py).
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    return float("nan")


def _rss_kb() -> float:
    """Return this process's resident set size (kB) from /proc."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


def _cli_commands(total: int) -> dict[str, list[str]]:
    """Return the whole-process CLI commands measured."""
    last_page = max((total + 49) // 50, 1)
    return {
        "kerma studies --limit 50": ["studies", "--limit", "50"],
        "kerma studies (filtered)": [
            "studies", "-m", "CT", "--from", FILTERED["date_from"], "--to", FILTERED["date_to"],
            "--device", FILTERED["device_name"], "--limit", "50",
        ],
        "kerma studies (last page)": ["studies", "--limit", "50", "--page", str(last_page)],
        "kerma drl": ["drl"],
        "kerma stats": ["stats"],
        "kerma drl --site (one site)": ["drl", "--site", ONE_SITE],
        "kerma drl --from --to (one year)": [
            "drl", "--from", ONE_YEAR["date_from"], "--to", ONE_YEAR["date_to"],
        ],
        "kerma summary": ["summary"],
        "kerma cumulative": ["cumulative"],
    }  # fmt: skip


def _wait(command: Sequence[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run ``python -m MODULE ARGS`` under benchmarks/peak_rss.py.

    Returns (wall s, CPU s, peak RSS MB, exit code); CPU is the child's user + system
    time (``wait4``), peak RSS its VmHWM (:mod:`peak_rss`).
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        wrapped = [sys.executable, str(Path(__file__).with_name("peak_rss.py")), out.name]
        started = time.perf_counter()
        process = subprocess.Popen(
            [*wrapped, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        process.returncode = code
        if code != 0 and process.stderr is not None:
            sys.stderr.write(process.stderr.read().decode(errors="replace"))
        if process.stderr is not None:
            process.stderr.close()
        text_ = Path(out.name).read_text() or "{}"
    rss = float(json.loads(text_).get("peak_rss_mb", float("nan")))
    return elapsed, usage.ru_utime + usage.ru_stime, rss, code


def _summary(times: Sequence[float]) -> tuple[float, float]:
    """Return (median, 95th percentile) of times in ms (linear interpolation)."""
    array = np.asarray(times, dtype=float) * 1000
    return float(np.median(array)), float(np.percentile(array, 95))


def measure(url: str, *, repeat: int, cli_repeat: int, log: Any = print) -> dict[str, Any]:
    """Measure every call in-process and as CLI processes; return the results."""
    from kerma.config import Settings
    from kerma.services.registry import Registry

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        pseudonym_key=BENCHMARK_KEY,
        accession_in_clear=ACCESSION_IN_CLEAR,
    )
    with Registry(settings=settings) as registry:
        total = registry.count_studies()
        with registry.session(write=False) as session:
            from sqlalchemy import func, select

            from kerma.db.models import IrradiationEvent

            n_events = session.scalar(select(func.count(IrradiationEvent.id)))
            sizes = _sizes_mb(session)
    results: dict[str, Any] = {"studies": total, "events": n_events, "in_process": {},
                               "cli": {}, "sizes_mb": sizes,
                               "load_before": os.getloadavg()}  # fmt: skip
    log(f"  {total:,} studies, {n_events:,} events; sizes (MB) {sizes}; "
        f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for name in CALLS:
        command = [sys.executable, __file__, "--child", name, "--reuse", url,
                   "--repeat", str(repeat)]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            log(out.stderr)
            raise RuntimeError(f"child {name!r} failed")
        data = json.loads(out.stdout.strip().splitlines()[-1])
        median, p95 = _summary(data["times_s"])
        cpu = float(np.median(data["cpu_s"])) * 1000
        results["in_process"][name] = data | {
            "median_ms": median,
            "p95_ms": p95,
            "cpu_median_ms": cpu,
            "load_1min": os.getloadavg()[0],
        }
        log(
            f"  {name:40s} median {median:8.1f} ms  p95 {p95:8.1f} ms  CPU {cpu:7.1f} ms  "
            f"peak RSS {data['peak_rss_mb']:6.0f} MB (after open {data['rss_after_open_mb']:.0f})"
            f"  load {os.getloadavg()[0]:.1f}"
        )
    env = os.environ | {
        "KERMA_DATABASE_URL": url,
        "KERMA_ARCHIVE_DIR": str(Path(tempfile.gettempdir()) / "kerma-bench-archive"),
        "KERMA_PSEUDONYM_KEY": BENCHMARK_KEY,
        "KERMA_ACCESSION_IN_CLEAR": str(ACCESSION_IN_CLEAR).lower(),
        "COLUMNS": "160",
    }
    kerma = ["kerma.cli.main"]
    own = [str(Path(__file__).with_name("own_commands.py"))]
    for key, launcher in (("cli", kerma), ("cli_own_module", own)):
        results[key] = {}
        for name, args in _cli_commands(total).items() if cli_repeat > 0 else ():
            _wait([*launcher, *args], env)  # warm the page cache once
            runs = [_wait([*launcher, *args], env) for _ in range(cli_repeat)]
            if any(code != 0 for *_, code in runs):
                raise RuntimeError(f"{name} failed")
            median, p95 = _summary([r[0] for r in runs])
            cpu = float(np.median([r[1] for r in runs])) * 1000
            rss = max(r[2] for r in runs)
            results[key][name] = {"times_s": [r[0] for r in runs], "median_ms": median,
                                  "p95_ms": p95, "cpu_median_ms": cpu,
                                  "peak_rss_mb": rss}  # fmt: skip
            log(f"  {key:15s} {name:28s} median {median:7.0f} ms  p95 {p95:7.0f} ms  "
                f"CPU {cpu:6.0f} ms  peak RSS {rss:5.0f} MB")  # fmt: skip
    started = time.perf_counter()
    _wait([*kerma, "--version"], env)
    results["cli_floor_version_ms"] = (time.perf_counter() - started) * 1000
    results["load_after"] = os.getloadavg()
    return results


def _sizes_mb(session: Any) -> dict[str, float]:
    """Return the database's and the event table's sizes in MB (PostgreSQL; else empty).

    ``pg_total_relation_size`` of a partitioned table is 0: the event table's size is
    the sum over the table and its partitions (``pg_partition_tree``).
    """
    from sqlalchemy import text

    if session.get_bind().dialect.name != "postgresql":
        return {}
    tables = (
        "(SELECT relid FROM pg_partition_tree('irradiation_event') "
        "UNION SELECT 'irradiation_event'::regclass) AS t"
    )
    row = session.execute(
        text(
            "SELECT pg_database_size(current_database()), "
            f"(SELECT sum(pg_total_relation_size(relid)) FROM {tables}), "
            f"(SELECT sum(pg_indexes_size(relid)) FROM {tables}), "
            "(SELECT count(*) FROM pg_partition_tree('irradiation_event') WHERE isleaf)"
        )
    ).one()
    mb = 1024 * 1024
    return {"database": row[0] / mb, "irradiation_event": float(row[1]) / mb,
            "irradiation_event_indexes": float(row[2]) / mb,
            "irradiation_event_partitions": float(row[3])}  # fmt: skip


@contextmanager
def database(backend: str, workdir: Path, admin_url: str, keep: bool) -> Iterator[str]:
    """Yield the URL of a new benchmark database of ``backend``; drop it unless ``keep``."""
    if backend == "sqlite":
        path = workdir / "kerma-bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"kerma_bench_{secrets.token_hex(4)}"
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _print_table(backend: str, results: dict[str, Any]) -> None:
    """Print a markdown table of the results of one backend."""
    print(f"\n### {backend}: {results['studies']:,} studies, {results['events']:,} events\n")
    print("| call (in-process) | median / p95 (ms) | CPU median (ms) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for name, data in results["in_process"].items():
        print(f"| {name} | {data['median_ms']:.0f} / {data['p95_ms']:.0f} | "
              f"{data['cpu_median_ms']:.0f} | {data['peak_rss_mb']:.0f} |")  # fmt: skip
    print(
        "\n| command (whole process) | `kerma`: median / p95 (ms), CPU (ms), RSS (MB) "
        "| own module only: median / p95 (ms), CPU (ms), RSS (MB) |"
    )
    print("|---|---|---|")
    for name, data in results["cli"].items():
        alone = results["cli_own_module"][name]
        print(f"| `{name}` | {data['median_ms']:.0f} / {data['p95_ms']:.0f}, "
              f"{data['cpu_median_ms']:.0f}, {data['peak_rss_mb']:.0f} | "
              f"{alone['median_ms']:.0f} / {alone['p95_ms']:.0f}, {alone['cpu_median_ms']:.0f}, "
              f"{alone['peak_rss_mb']:.0f} |")  # fmt: skip
    print(f"\n`kerma --version` (start-up floor): {results['cli_floor_version_ms']:.0f} ms")


def build(url: str, n_events: int, base: int | None, *, log: Any = print) -> dict[str, Any] | None:
    """Build a registry of ``n_events``: directly, or ``base`` events copied as further sites.

    With ``base``, the copies are ``round(n_events / base) - 1`` further sites
    (:func:`replicate_registry`); returns its timings and verification (else ``None``).
    """
    if not base:
        build_registry(url, n_events, log=log)
        return None
    copies = max(round(n_events / base) - 1, 1)
    started = time.perf_counter()
    build_registry(url, base, analyse=False, log=log)
    base_s = time.perf_counter() - started
    replicated = replicate_registry(url, copies, log=log)
    log(f"  verified: {json.dumps(replicated['verification'])}")
    return replicated | {"base_events": base, "copies": copies, "base_s": base_s}


def main(argv: Sequence[str] | None = None) -> int:
    """Build registries of N events and measure the calls; print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="irradiation events")
    parser.add_argument(
        "--replicate-from",
        type=int,
        default=None,
        metavar="BASE",
        help="build BASE events, then copy them in SQL as further sites up to --events "
        "(PostgreSQL)",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--workdir", type=Path, default=None, help="SQLite file folder")
    parser.add_argument("--repeat", type=int, default=7, help="in-process runs per call")
    parser.add_argument(
        "--cli-repeat", type=int, default=3, help="CLI runs per command (0: no CLI runs)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--reuse", default=None, help="measure this registry URL, no build")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.reuse, args.repeat)))
        return 0

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    all_results: dict[str, Any] = {}
    if args.reuse:
        backend = "postgresql" if args.reuse.startswith("postgresql") else "sqlite"
        all_results[backend] = measure(
            args.reuse, repeat=args.repeat, cli_repeat=args.cli_repeat, log=log
        )
    else:
        backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
        if args.replicate_from and backends != ["postgresql"]:
            parser.error("--replicate-from needs --backend postgresql")
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kerma-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        for backend in backends:
            with database(backend, workdir, args.postgres_url, args.keep) as url:
                log(f"{backend}: building {args.events:,} events at {url}")
                started = time.perf_counter()
                replicated = build(url, args.events, args.replicate_from, log=log)
                build_s = time.perf_counter() - started
                log(f"{backend}: measuring")
                results = measure(url, repeat=args.repeat, cli_repeat=args.cli_repeat, log=log)
                results["build_s"] = build_s
                results["replicated"] = replicated
                results["url"] = url if args.keep else None
                all_results[backend] = results
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    for backend, results in all_results.items():
        _print_table(backend, results)
        if "build_s" in results:
            print(f"\nregistry built in {results['build_s'] / 60:.1f} min")
        if results.get("replicated"):
            rep = results["replicated"]
            print(f"({rep['base_events']:,} events built in {rep['base_s'] / 60:.1f} min, "
                  f"copied {rep['copies']} times as further sites in {rep['copy_s'] / 60:.1f} "
                  f"min, VACUUM ANALYZE {rep['analyse_s'] / 60:.1f} min)")  # fmt: skip
        if results.get("sizes_mb"):
            print(f"sizes (MB): {results['sizes_mb']}")
        print(f"load average before / after: {results['load_before']} / {results['load_after']}")
    if args.json is not None:
        args.json.write_text(json.dumps(all_results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
