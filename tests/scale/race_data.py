"""Test data for the multi-node tests: real objects plus demo reports split into parts.

:func:`build_objects` writes the objects of ``../shared/dicom`` and synthetic demo
reports (:mod:`kerma.demo`) into one folder; some demo reports are also written as
the earlier cumulative reports a modality sends before the final one (the first
events only, each with its own SOP Instance UID), others only as the parts of a
continued study (disjoint events, no complete report). :func:`spread` copies them
into overlapping folders, each in its own order, and :func:`fingerprint` reads every
stored value of a registry by natural keys (no row ids, no arrival times), so two
registries made in different orders can be compared.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text

from kerma.demo.generator import build_demo_dataset

SHARED_DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "dicom"

#: Shared objects whose stored result depends on arrival order by design, not by a race
#: (a serial import in another order differs too), left out of the comparison:
#: - copies of one SOP Instance UID with other content: the first copy received stays
#:   current until a user decides (``docs/registry.md``, "Conflicts");
#: - devices that share manufacturer and serial number but have different Device
#:   Observer UIDs: the first keeps the serial-number identity, the next is keyed by its
#:   observer UID (:func:`kerma.db.queries.get_or_create_device`);
#: - two objects holding the same events (an image sent For Presentation and For
#:   Processing): the later one received supersedes the other;
#: - radiopharmaceutical administrations described by a dose SR and by images: matched
#:   in arrival order (:func:`kerma.ingest.reconcile.match_administrations`), so which
#:   description counts (and the study's modality, NM or PT) follows the order.
ORDER_DEPENDENT = frozenset(
    {
        "OR1-RF-RDSR-Siemens-Zee_adjusted.dcm",
        "RF-RDSR-Siemens-Zee_adjusted.dcm",
        "Dual-RDSR-DX.dcm",
        "Dual-RDSR-RF.dcm",
        "MG-Im-GE_Seno_1_ForProcessing.dcm",
    }
)
ORDER_DEPENDENT_PREFIXES = ("NM-PetIm-", "NM-NmIm-", "NM-RRDSR-")

_EVENT_CONCEPTS = {codes.DCM.CTAcquisition.value, codes.DCM.IrradiationEventXRayData.value}


def _events(ds: Any) -> list[int]:
    """Return the positions of the irradiation event containers in a report's content."""
    return [
        i
        for i, item in enumerate(ds.ContentSequence)
        if item.ConceptNameCodeSequence[0].CodeValue in _EVENT_CONCEPTS
    ]


def _part(ds: Any, keep: list[int], tag: str) -> Any:
    """Return a copy of a report holding only the events at ``keep``, with a new SOP UID."""
    part = copy.deepcopy(ds)
    drop = set(_events(ds)) - set(keep)
    part.ContentSequence = [item for i, item in enumerate(ds.ContentSequence) if i not in drop]
    part.SOPInstanceUID = generate_uid(entropy_srcs=[ds.SOPInstanceUID, tag])
    part.file_meta = ds.file_meta.copy()
    part.file_meta.MediaStorageSOPInstanceUID = part.SOPInstanceUID
    return part


def build_objects(folder: Path, *, demo_studies: int = 48, seed: int = 5) -> list[Path]:
    """Write the shared DICOM files and the demo reports (and parts) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for path in sorted(SHARED_DICOM.glob("*.dcm")):
        if path.name in ORDER_DEPENDENT or path.name.startswith(ORDER_DEPENDENT_PREFIXES):
            continue
        target = folder / path.name
        shutil.copyfile(path, target)
        out.append(target)
    for index in range(demo_studies):
        ds, _study = build_demo_dataset(index, seed=seed, studies=demo_studies)
        events = _events(ds)
        reports = [ds]
        if len(events) >= 2 and index % 3 == 0:  # cumulative: earlier reports, then all
            reports = [_part(ds, events[:n], f"cumulative-{n}") for n in range(1, len(events))] + [
                ds
            ]
        elif len(events) >= 2 and index % 3 == 1:  # continued: disjoint parts only
            reports = [_part(ds, [e], f"continued-{e}") for e in events]
        for n, report in enumerate(reports):
            target = folder / f"demo-{index:03d}-{n}.dcm"
            report.save_as(target, enforce_file_format=True)
            out.append(target)
    return out


def spread(objects: list[Path], root: Path, *, folders: int = 4, seed: int = 11) -> list[Path]:
    """Copy each object into 1 to ``folders`` of ``folders`` folders, each in its own order.

    Files are renamed ``<position>-<name>`` so that each folder is read in another order
    (folders are read sorted). Every object lands in at least one folder.
    """
    rng = random.Random(seed)
    members: list[list[Path]] = [[] for _ in range(folders)]
    for path in objects:
        chosen = rng.sample(range(folders), rng.randint(1, folders))
        for k in chosen:
            members[k].append(path)
    out = []
    for k, paths in enumerate(members):
        target = root / f"node-{k}"
        target.mkdir(parents=True)
        rng.shuffle(paths)
        for position, path in enumerate(paths):
            (target / f"{position:04d}-{path.name}").hardlink_to(path)
        out.append(target)
    return out


_QUERIES: dict[str, str] = {
    "device": (
        "SELECT d.*, st.name AS k_site FROM device d LEFT JOIN site st ON st.id = d.site_id"
    ),
    "patient": "SELECT pseudonym FROM patient",
    "study": (
        "SELECT s.*, d.device_key AS k_device, p.pseudonym AS k_patient, st.name AS k_site "
        "FROM study s JOIN device d ON d.id = s.device_id "
        "LEFT JOIN patient p ON p.id = s.patient_id LEFT JOIN site st ON st.id = s.site_id"
    ),
    "dose_report": (
        "SELECT r.*, s.study_instance_uid AS k_study, sup.sop_instance_uid AS k_superseded_by "
        "FROM dose_report r JOIN study s ON s.id = r.study_id "
        "LEFT JOIN dose_report sup ON sup.id = r.superseded_by_id"
    ),
    # every event of every report; which of two copies of one event (an image sent For
    # Presentation and For Processing) counts follows arrival order, so whether an
    # event counts is compared below by the values of the counted events of each study
    "irradiation_event": (
        "SELECT e.*, r.sop_instance_uid AS k_report FROM irradiation_event e "
        "JOIN dose_report r ON r.id = e.dose_report_id"
    ),
    "current_event": (
        "SELECT e.*, s.study_instance_uid AS k_study, g.modality AS k_group_modality, "
        "g.acquisition_protocol AS k_group_protocol FROM irradiation_event e "
        "JOIN study s ON s.id = e.study_id "
        "LEFT JOIN event_group g ON g.id = e.event_group_id WHERE e.is_current"
    ),
    "event_group": (
        "SELECT g.modality, g.acquisition_protocol, g.is_non_patient, d.device_key "
        "FROM event_group g JOIN device d ON d.id = g.device_id"
    ),
    "rejected_object": (
        "SELECT archive_sha256, sop_instance_uid, sop_class_uid FROM rejected_object"
    ),
    "patient_size_measurement": "SELECT * FROM patient_size_measurement",
    "plausibility_flag": (
        "SELECT f.quantity, f.location, f.value, f.range_min, f.range_max, "
        "r.sop_instance_uid FROM plausibility_flag f JOIN dose_report r ON r.id = f.dose_report_id"
    ),
    # subject keys hold row ids (study:<id>, patient:<id>:<study id>)
    "alert": (
        "SELECT a.*, s.study_instance_uid AS k_study, p.pseudonym AS k_patient FROM alert a "
        "LEFT JOIN study s ON s.id = a.study_id LEFT JOIN patient p ON p.id = a.patient_id"
    ),
}

#: Columns that differ between two equal registries: row ids and keys to them, arrival
#: times, and where a copy was read from (the file's name in its folder).
_VOLATILE = {
    "id",
    "device_id",
    "patient_id",
    "study_id",
    "dose_report_id",
    "superseded_by_id",
    "event_group_id",
    "created_at",
    "updated_at",
    "derived_at",
    "received_at",
    "measured_at",
    "source",
    "detail",
    "is_current",
    "subject_key",
    "site_id",
}


def _clean(row: dict[str, Any], table: str) -> dict[str, Any]:
    """Return a row without its volatile columns; ``content`` without the file name."""
    out = {k: v for k, v in row.items() if k not in _VOLATILE}
    if table == "current_event":
        out.pop("event_key", None)  # the key of the copy that counts
    if isinstance(out.get("content"), dict):
        out["content"] = {k: v for k, v in out["content"].items() if k != "file"}
    return out


def fingerprint(url: str) -> dict[str, list[str]]:
    """Return every stored row of the registry tables, by natural keys, sorted."""
    engine = create_engine(url)
    out: dict[str, list[str]] = {}
    try:
        with engine.connect() as conn:
            for table, query in _QUERIES.items():
                rows = [_clean(dict(r._mapping), table) for r in conn.execute(text(query))]
                out[table] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    finally:
        engine.dispose()
    return out


def study_digests(url: str) -> dict[str, str]:
    """Return a SHA-256 per study (Study Instance UID and device) of its dose values."""
    engine = create_engine(url)
    query = text(
        "SELECT s.study_instance_uid, d.device_key, e.modality, e.ctdivol_mgy, "
        "e.dlp_mgycm, e.dap_gym2, e.dose_rp_gy, e.agd_mgy, e.administered_activity_mbq, "
        "s.ct_dlp_total_mgycm, s.dap_total_gym2, s.dose_rp_total_gy, s.agd_total_left_mgy, "
        "s.agd_total_right_mgy, s.effective_dose_msv, s.number_of_events "
        "FROM study s JOIN device d ON d.id = s.device_id "
        "LEFT JOIN irradiation_event e ON e.study_id = s.id AND e.is_current"
    )
    per: dict[str, list[str]] = {}
    try:
        with engine.connect() as conn:
            for row in conn.execute(query):
                key = f"{row[0]}|{row[1]}"
                per.setdefault(key, []).append(json.dumps(list(row[2:]), default=str))
    finally:
        engine.dispose()
    return {k: hashlib.sha256("\n".join(sorted(v)).encode()).hexdigest() for k, v in per.items()}
