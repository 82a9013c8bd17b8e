"""The skin dose workflow over the registry: estimate what is missing, store, read back.

For each current fluoroscopy/interventional patient study (modality RF or XA) Kerma runs
:func:`kerma.analysis.skin_dose.estimate_skin_dose` on the archived original of its
projection RDSR and stores one ``skin_dose_estimate`` row (one transaction per study:
a PySkinDose run may take minutes and never holds a transaction open); studies are
flagged at an NCRP Report 168 substantial radiation dose level
(:func:`kerma.analysis.skin_dose.add_srdl_flags`).

May import ``kerma.db``, ``kerma.analysis``, ``kerma.records``, ``kerma.units`` and
``kerma.errors``.
"""

from __future__ import annotations

import logging
import math
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from kerma.analysis.skin_dose import (
    DEFAULT_TIMEOUT_S,
    FAILED_REASON_START,
    MAPS_DIR,
    METHOD_KAR,
    METHOD_PYSKINDOSE,
    SKIN_DOSE_COLUMNS,
    add_srdl_flags,
    default_map_format,
    estimate_skin_dose,
    is_pyskindose_available,
    is_transient_fallback,
    write_skin_dose_map,
)
from kerma.db import skin as store
from kerma.db import studies as study_store
from kerma.db.filters import DateLike, StudyFilter
from kerma.db.session import session_scope
from kerma.errors import KermaError, NotFoundError
from kerma.files import write_private_bytes

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FLUORO_MODALITIES",
    "MAPS_DIR",
    "METHOD_KAR",
    "METHOD_PYSKINDOSE",
    "estimate_study_skin_doses",
    "fluoro_studies",
    "stored_skin_doses",
]

logger = logging.getLogger(__name__)

#: Modalities of fluoroscopy / interventional studies.
FLUORO_MODALITIES = ("RF", "XA")

_STUDY_COLUMNS = (
    "study_id",
    "study_instance_uid",
    "study_date",
    "device_name",
    "standard_exam",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "fluoro_time_total_s",
)


def fluoro_studies(
    session: Session,
    *,
    study_instance_uids: Sequence[str] | None = None,
    since: DateLike = None,
    until: DateLike = None,
) -> pd.DataFrame:
    """Return the RF/XA patient studies (in the date range), oldest first.

    Raises
    ------
    kerma.errors.NotFoundError
        When a UID of ``study_instance_uids`` is not such a study.
    """
    flt = StudyFilter(modalities=FLUORO_MODALITIES, date_from=since, date_to=until)
    rows = study_store.iter_studies(
        session,
        flt=flt,
        sort=(("study_date", "asc"), ("study_time", "asc")),
        columns=_STUDY_COLUMNS,
    )
    studies = pd.DataFrame.from_records(list(rows), columns=list(_STUDY_COLUMNS))
    if study_instance_uids is not None:
        wanted = list(dict.fromkeys(study_instance_uids))
        studies = studies[studies["study_instance_uid"].isin(wanted)]
        missing = [uid for uid in wanted if uid not in set(studies["study_instance_uid"])]
        if missing:
            raise NotFoundError(
                f"Unable to estimate skin dose: no fluoroscopy/interventional (RF/XA) "
                f"patient study with Study Instance UID {', '.join(missing)} is stored"
                + (" in the date range" if since or until else "")
                + ". Check the UID (kerma studies) and that the study is not a QA study."
            )
    studies = studies.reset_index(drop=True)
    studies["study_date"] = pd.to_datetime(studies["study_date"])
    for name in ("dap_total_gym2", "dose_rp_total_gy", "fluoro_time_total_s"):
        studies[name] = pd.to_numeric(studies[name], errors="coerce").astype(float)
    return studies


def stored_skin_doses(
    session: Session,
    *,
    study_instance_uids: Sequence[str] | None = None,
    since: DateLike = None,
    until: DateLike = None,
    alert_levels: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return the stored skin dose estimates with SRDL flags, by study date.

    Returns
    -------
    pandas.DataFrame
        One row per stored estimate of a current RF/XA patient study, columns
        :data:`kerma.analysis.skin_dose.SKIN_DOSE_COLUMNS`: ``study_id``,
        ``study_instance_uid``, ``study_date``, ``device_name``, ``standard_exam``,
        ``method``, ``peak_skin_dose_mgy`` (mGy; NaN with the Ka,r fallback),
        ``dose_rp_total_gy`` (Gy, the study's reference point air kerma total),
        ``dap_total_gym2`` (Gy·m²), ``fluoro_time_total_s`` (s), ``reason``,
        ``map_path`` (relative to the archive folder), ``dose_report_sop_instance_uid``,
        ``computed_at`` (UTC), ``srdl_exceeded``, ``srdl_reasons``.

    Raises
    ------
    kerma.errors.NotFoundError
        When a UID of ``study_instance_uids`` is not a stored RF/XA patient study.
    kerma.errors.ConfigurationError
        From :func:`~kerma.analysis.skin_dose.add_srdl_flags`.
    """
    studies = fluoro_studies(
        session, study_instance_uids=study_instance_uids, since=since, until=until
    )
    stored = pd.DataFrame.from_records(
        store.estimate_rows(session, study_ids=studies["study_id"].tolist()),
        columns=list(store.ESTIMATE_COLUMNS),
    )
    estimates = stored.rename(columns={"dose_rp_total_gy": "_estimate_dose_rp_total_gy"})
    frame = studies.merge(estimates, on="study_id", how="inner")
    # the estimate's Ka,r: the device's accumulated value as stored with the estimate
    frame["dose_rp_total_gy"] = pd.to_numeric(
        frame.pop("_estimate_dose_rp_total_gy"), errors="coerce"
    ).astype(float)
    frame["peak_skin_dose_mgy"] = pd.to_numeric(frame["peak_skin_dose_mgy"]).astype(float)
    frame["reason"] = frame["reason"].fillna("")
    frame["computed_at"] = pd.to_datetime(frame["computed_at"], utc=True)
    frame = add_srdl_flags(frame, alert_levels=alert_levels)
    return frame[list(SKIN_DOSE_COLUMNS)].reset_index(drop=True)


def estimate_study_skin_doses(
    session_factory: sessionmaker[Session],
    *,
    archive_dir: Path | str,
    study_instance_uids: Sequence[str] | None = None,
    since: DateLike = None,
    until: DateLike = None,
    recompute: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    alert_levels: pd.DataFrame | None = None,
    progress: Callable[[int, int], None] | None = None,
    read_archived: Callable[[str], bytes] | None = None,
) -> pd.DataFrame:
    """Estimate and store the skin dose of every stored fluoroscopy study that lacks one.

    When a study has several current projection RDSRs, the one with the most
    irradiation events is used (ties: the latest received) and ``reason`` says that
    the others' events are not in the peak skin dose. A study without a projection
    RDSR gets the Ka,r fallback (PySkinDose needs the RDSR's event geometry). Skin dose
    maps go to ``<archive_dir>/skin_dose_maps/<study_instance_uid>.png`` (or ``.html``
    without Plotly's static export). A stored study is skipped unless ``recompute`` is
    given, its estimate came from an RDSR that is no longer the chosen one, or it is a
    Ka,r fallback whose cause may have gone
    (:func:`~kerma.analysis.skin_dose.is_transient_fallback`). One study's failure never
    stops the batch: it gets the Ka,r fallback with the reason.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Writing sessions: one short transaction per study stored.
    archive_dir : path
        The archive folder (``Settings.archive_dir``).
    study_instance_uids : sequence of str, optional
        Only these studies.
    since, until : date or ISO string, optional
        Study date range, both ends included.
    recompute : bool, optional
        Replace existing estimates.
    timeout_s : float, optional
        Time limit of one PySkinDose run (s).
    alert_levels : pandas.DataFrame, optional
        Thresholds for :func:`~kerma.analysis.skin_dose.add_srdl_flags`.
    progress : callable, optional
        Called as ``progress(done, total)`` after each study computed now.
    read_archived : callable, optional
        Returns the original bytes of an archived object from its archive path
        (``kerma.ingest.archive.Archive.read``, which decrypts an encrypted archive);
        default: PySkinDose reads the archive file itself (an ``original`` archive).

    Returns
    -------
    pandas.DataFrame
        :func:`stored_skin_doses` columns plus ``is_computed_now`` (bool).

    Raises
    ------
    kerma.errors.NotFoundError
        When a UID of ``study_instance_uids`` is not a stored RF/XA patient study.
    kerma.errors.ConfigurationError
        From :func:`~kerma.analysis.skin_dose.add_srdl_flags`.
    """
    with session_scope(session_factory) as session:
        studies = fluoro_studies(
            session, study_instance_uids=study_instance_uids, since=since, until=until
        )
        ids = studies["study_id"].tolist()
        reports = store.current_projection_rdsrs(session, study_ids=ids)
        stored = store.estimate_sources(session, study_ids=ids)
    is_installed = is_pyskindose_available()
    todo = []
    for study in studies.to_dict("records"):
        sid = int(study["study_id"])
        chosen = reports.get(sid)
        source_uid = chosen[0]["sop_instance_uid"] if chosen else None
        if (
            not recompute
            and sid in stored
            and stored[sid][0] == source_uid
            and not is_transient_fallback(stored[sid][1], is_installed=is_installed)
        ):
            continue
        todo.append((study, chosen or []))
    archive = Path(archive_dir)
    map_format = default_map_format() if todo else "html"
    computed: set[int] = set()
    for done, (study, candidates) in enumerate(todo, start=1):
        sid = int(study["study_id"])
        try:
            row = _estimate_one(study, candidates, archive, timeout_s, map_format, read_archived)
        except (
            KermaError,
            OSError,
            ValueError,
            TypeError,
            KeyError,
            subprocess.SubprocessError,
        ) as exc:  # one study's failure never stops the batch (PySkinDose runs in a child)
            logger.exception("skin dose: study id %s failed", sid)
            row = {
                "method": METHOD_KAR,
                "peak_skin_dose_mgy": None,
                "dose_rp_total_gy": _dose_rp_gy(study),
                "reason": f"{FAILED_REASON_START} ({type(exc).__name__}: {exc}); "
                "Ka,r total given instead",
                "map_path": None,
                "dose_report_sop_instance_uid": None,
            }
        with session_scope(session_factory) as session:
            store.replace_estimate(session, study_id=sid, values=row)
        computed.add(sid)
        if progress is not None:
            progress(done, len(todo))
    with session_scope(session_factory) as session:
        frame = stored_skin_doses(
            session,
            study_instance_uids=study_instance_uids,
            since=since,
            until=until,
            alert_levels=alert_levels,
        )
    frame["is_computed_now"] = frame["study_id"].isin(computed)
    return frame


def _dose_rp_gy(study: dict[str, Any]) -> float | None:
    """Return the study's Ka,r total in Gy (``None`` when absent)."""
    value = study.get("dose_rp_total_gy")
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _text(value: object) -> str:
    """Return ``value`` as text, ``""`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    return str(value)


def _estimate_one(
    study: dict[str, Any],
    candidates: list[dict[str, Any]],
    archive_dir: Path,
    timeout_s: float,
    map_format: str,
    read_archived: Callable[[str], bytes] | None = None,
) -> dict[str, Any]:
    """Estimate one study's skin dose and write its map; return the row to store."""
    dose_rp_gy = _dose_rp_gy(study)
    if not candidates:
        return {
            "method": METHOD_KAR,
            "peak_skin_dose_mgy": None,
            "dose_rp_total_gy": dose_rp_gy,
            "reason": "no projection X-Ray Radiation Dose SR stored for this study (image "
            "headers only): PySkinDose needs the RDSR's irradiation-event geometry",
            "map_path": None,
            "dose_report_sop_instance_uid": None,
        }
    chosen = candidates[0]
    if read_archived is None:
        result = estimate_skin_dose(
            archive_dir / chosen["archive_path"], dose_rp_total_gy=dose_rp_gy, timeout_s=timeout_s
        )
    else:  # an encrypted archive: PySkinDose reads a decrypted copy, deleted afterwards
        with tempfile.TemporaryDirectory(prefix="kerma-rdsr-") as work:
            plain = Path(work) / "rdsr.dcm"
            write_private_bytes(plain, read_archived(chosen["archive_path"]))
            result = estimate_skin_dose(plain, dose_rp_total_gy=dose_rp_gy, timeout_s=timeout_s)
    notes = [result.reason] if result.reason else []
    if len(candidates) > 1:
        notes.append(
            f"computed from 1 of {len(candidates)} current RDSRs of the study (the one "
            f"with most events, {chosen['number_of_events']}); events of the others are "
            "not in it"
        )
    map_path: str | None = None
    if result.method == METHOD_PYSKINDOSE and not result.dose_map.empty:
        title = (
            f"Skin dose map - {_text(study.get('study_date'))[:10]} "
            f"{_text(study.get('device_name'))}"
        )
        try:
            written = write_skin_dose_map(
                result,
                archive_dir / MAPS_DIR,
                str(study["study_instance_uid"]),
                title=title,
                map_format=map_format,
            )
            map_path = written.relative_to(archive_dir).as_posix()
        except OSError as exc:
            notes.append(f"skin dose map not written ({exc})")
    return {
        "method": result.method,
        "peak_skin_dose_mgy": result.peak_skin_dose_mgy,
        # the device's accumulated Ka,r, as stored; PySkinDose's event sum when absent
        "dose_rp_total_gy": dose_rp_gy if dose_rp_gy is not None else result.dose_rp_total_gy,
        "reason": "; ".join(notes),
        "map_path": map_path,
        "dose_report_sop_instance_uid": chosen["sop_instance_uid"],
    }
