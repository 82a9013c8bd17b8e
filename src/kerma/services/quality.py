"""Image quality beside dose: the use cases of ``kerma quality``, its API and page (#17).

- exposure index / deviation index summaries per room, detector, protocol, body part
  and month (:func:`exposure_index_summary`), vendor indices under their own names
  (:func:`vendor_indices`), the calculated DI kept up to date at ingest
  (:func:`fill_calculated_deviation_index`, called by :mod:`kerma.services.derive`);
- reject rates from rejection notes received (KOS 'Rejected for Quality Reasons') and
  from reject-log exports (:func:`reject_rates`, :func:`import_reject_log` with a TOML
  column mapping, :func:`load_reject_log_mapping`);
- the global noise level of measured CT series (:func:`noise_by_series`);
- the per-protocol scatter data of the dashboard (:func:`dose_di_points`).

Everything is aggregated in the database (:mod:`kerma.db.quality`); only the noise
histograms of the series on a page are read as rows. May import ``kerma.db``,
``kerma.analysis``, ``kerma.records``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import itertools
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pandas as pd
from sqlalchemy.orm import Session

from kerma.analysis.quality import (
    DI_BIN_EDGES,
    deviation_index,
    global_noise_level_hu,
    sum_histograms,
    vendor_index_name,
)
from kerma.db import quality as store
from kerma.db.filters import StudyFilter
from kerma.dicom.noise import HISTOGRAM_BIN_HU
from kerma.errors import ConfigurationError
from kerma.units import UCUM_GYM2, conversion_factor

#: Labels of the DI distribution bins of :func:`exposure_index_summary`.
DI_BIN_LABELS: Final = tuple(
    [f"<{DI_BIN_EDGES[0]:g}"]
    + [f"[{a:g},{b:g})" for a, b in itertools.pairwise(DI_BIN_EDGES)]
    + [f">={DI_BIN_EDGES[-1]:g}"]
)

#: Fields a reject-log mapping may name (``[columns]`` of the TOML file).
REJECT_LOG_FIELDS: Final = (
    "station_name",
    "acquisition_datetime",
    "acquisition_date",
    "acquisition_time",
    "body_part",
    "image_view",
    "reason",
    "status",
    "sop_instance_uid",
    "study_instance_uid",
    "dap",
    "exposure_index",
    "deviation_index",
)


def fill_calculated_deviation_index(session: Session, study_ids: Sequence[int]) -> int:
    """Set DI = 10·log10(EI/EI_T) on the studies' events that have EI and target but no DI.

    Runs in the caller's transaction (the ingest derive step). Returns the events set.
    """
    rows = store.events_missing_deviation_index(session, study_ids=list(study_ids))
    store.set_calculated_deviation_index(
        session, values={event_id: deviation_index(ei, eit) for event_id, ei, eit in rows}
    )
    return len(rows)


def exposure_index_summary(
    session: Session,
    *,
    group_by: Sequence[str] = ("room", "detector", "protocol", "body_part"),
    flt: StudyFilter | None = None,
) -> pd.DataFrame:
    """Return the DI distribution per group.

    Parameters
    ----------
    group_by : sequence of str, optional
        Any of ``room``, ``detector``, ``protocol``, ``body_part``, ``month``.
    flt : StudyFilter, optional
        Which studies (dates, rooms, modalities ...).

    Returns
    -------
    pandas.DataFrame
        One row per group: the group keys, ``n_events`` (events with an IEC EI or DI),
        ``n_di`` (with a DI), ``n_di_calculated`` (DI calculated from EI and target),
        ``mean_di``, ``min_di``, ``max_di``, ``share_outside_1`` and ``share_outside_3``
        (fractions of ``n_di`` with |DI| > 1 and > 3, AAPM Report 116 ranges),
        ``mean_ei``, ``n_vendor_index`` (events with only a vendor index), and one
        column per DI bin (:data:`DI_BIN_LABELS`).

    Raises
    ------
    ValueError
        When a group key is unknown.
    """
    rows = store.exposure_index_summary(session, group_by=group_by, di_edges=DI_BIN_EDGES, flt=flt)
    frame = pd.DataFrame(rows)
    columns = [*group_by, "n_events", "n_di", "n_di_calculated", "mean_di", "min_di", "max_di"]
    columns += ["share_outside_1", "share_outside_3", "mean_ei", "n_vendor_index"]
    columns += list(DI_BIN_LABELS)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    n_di = frame["n_di"].where(frame["n_di"] > 0)
    frame["share_outside_1"] = frame["n_outside_1"] / n_di
    frame["share_outside_3"] = frame["n_outside_3"] / n_di
    bins = pd.DataFrame(frame.pop("di_bins").tolist(), columns=list(DI_BIN_LABELS))
    frame = pd.concat([frame, bins], axis=1)
    return frame[columns]


def vendor_indices(session: Session, *, flt: StudyFilter | None = None) -> pd.DataFrame:
    """Return per room the vendor exposure indices under their vendor names.

    Returns
    -------
    pandas.DataFrame
        One row per (room, manufacturer, index): ``room``, ``manufacturer``,
        ``index_name`` (e.g. ``S value (Fujifilm)``), ``attribute`` (``sensitivity`` or
        ``relative_xray_exposure``), ``n_events``, ``mean_value`` (vendor units).
    """
    out: list[dict[str, Any]] = []
    for row in store.vendor_index_summary(session, flt=flt):
        for column in ("sensitivity", "relative_xray_exposure"):
            if row[f"n_{column}"]:
                out.append(
                    {
                        "room": row["room"],
                        "manufacturer": row["manufacturer"],
                        "index_name": vendor_index_name(column, row["manufacturer"]),
                        "attribute": column,
                        "n_events": int(row[f"n_{column}"]),
                        "mean_value": row[f"mean_{column}"],
                    }
                )
    return pd.DataFrame(
        out,
        columns=["room", "manufacturer", "index_name", "attribute", "n_events", "mean_value"],
    )


def reject_rates(
    session: Session,
    *,
    group_by: Sequence[str] = ("room",),
    flt: StudyFilter | None = None,
) -> pd.DataFrame:
    """Return reject rates per group, from the registry and from imported reject logs.

    Registry: images are the image-header reports (DX, CR, MG); an image is rejected
    when a KOS 'Rejected for Quality Reasons' (or a reject-log row naming its SOP
    Instance UID) marks it. Reject log: the log's rows, rejected ones by its status
    column (every row when the log lists rejects only; then no rate is given).

    Parameters
    ----------
    group_by : sequence of str, optional
        ``room``, ``body_part``, ``reason`` (the rejection's reason), ``month``;
        ``protocol`` and ``detector`` for the registry rows. With ``reason`` a row's
        ``n_images`` is every image of its group without the reason (the rate of that
        reason among all images of the room, body part ...).
    flt : StudyFilter, optional
        Which studies (the reject log is filtered by its dates only). A filter
        restricted to sites (``site_ids``, issue #15) leaves the reject log out: its
        rows name rooms as the log writes them, not sites.

    Returns
    -------
    pandas.DataFrame
        One row per (source, group): ``source`` (``registry`` or ``reject-log``), the
        group keys, ``n_images``, ``n_rejected``, ``reject_rate`` (fraction),
        ``dap_rejected_gym2`` (KAP of the rejected exposures, Gy·m²), ``agd_rejected_mgy``.
    """
    group_by = list(group_by)
    frames = []
    if "reason" in group_by:
        registry = pd.DataFrame(
            store.registry_rejects_by_reason(session, group_by=group_by, flt=flt)
        )
        registry = _with_group_totals(
            registry,
            pd.DataFrame(
                store.registry_reject_rates(
                    session, group_by=[g for g in group_by if g != "reason"], flt=flt
                )
            ),
            [g for g in group_by if g != "reason"],
        )
    else:
        registry = pd.DataFrame(store.registry_reject_rates(session, group_by=group_by, flt=flt))
    if not registry.empty:
        registry.insert(0, "source", "registry")
        frames.append(registry)
    log_groups = [g for g in group_by if g in ("room", "body_part", "reason", "month")]
    of_sites = flt is not None and flt.site_ids is not None
    log = pd.DataFrame(
        store.reject_log_rates(
            session,
            group_by=log_groups,
            date_from=flt.date_from if flt else None,
            date_to=flt.date_to if flt else None,
        )
        if not of_sites
        else []
    )
    if "reason" in log_groups and not log.empty:
        others = [g for g in log_groups if g != "reason"]
        log = _with_group_totals(log[log["reason"] != ""].drop(columns=["n_images"]), log, others)
    if not log.empty and int(log["n_images"].sum()) > 0:
        log.insert(0, "source", "reject-log")
        frames.append(log)
    columns = ["source", *group_by, "n_images", "n_rejected", "reject_rate"]
    columns += ["dap_rejected_gym2", "agd_rejected_mgy"]
    if not frames:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(frames, ignore_index=True)
    for column in columns:
        if column not in frame:
            frame[column] = None
    n_images = pd.to_numeric(frame["n_images"], errors="coerce")
    frame["reject_rate"] = frame["n_rejected"] / n_images.where(n_images > 0)
    return frame[columns]


def _with_group_totals(
    by_reason: pd.DataFrame, totals: pd.DataFrame, keys: list[str]
) -> pd.DataFrame:
    """Return ``by_reason`` with ``n_images`` of its group (without reason) from ``totals``.

    A reason has no accepted images of its own: its rate is over all images of the group.
    """
    if by_reason.empty or totals.empty:
        return by_reason
    if keys:
        sums = totals.groupby(keys, as_index=False)["n_images"].sum()
        return by_reason.drop(columns=["n_images"], errors="ignore").merge(
            sums, on=keys, how="left"
        )
    return by_reason.assign(n_images=int(totals["n_images"].sum()))


def pending_rejections(session: Session) -> int:
    """Return how many rejected SOP Instance UIDs have no image in the registry yet."""
    return store.pending_rejections(session)


def rejected_dose_by_study(
    session: Session, *, study_ids: Sequence[int]
) -> dict[int, dict[str, float | int | None]]:
    """Return per study the rejected images' count, KAP (Gy·m²) and AGD (mGy)."""
    return store.rejected_dose_by_study(session, study_ids=study_ids)


def noise_by_series(
    session: Session,
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    protocol: str | None = None,
    station: str | None = None,
    limit: int = 500,
    offset: int = 0,
    site_ids: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """Return the global noise level of each measured CT series, newest first.

    The images' local-noise histograms (:mod:`kerma.dicom.noise`) of each series are
    summed and their mode taken (Christianson et al., AJR 2015;205:W93-W99).
    ``site_ids``: only the series of studies of these sites (issue #15; ``None``:
    every series).

    Returns
    -------
    pandas.DataFrame
        One row per series: ``series_instance_uid``, ``study_instance_uid``,
        ``protocol_name``, ``series_description``, ``station_name``,
        ``manufacturer_model_name``, ``study_date``, ``n_images``, ``ctdivol_mgy``
        (mean of the images' (0018,9345)), ``convolution_kernel``,
        ``slice_thickness_mm``, ``kernel_mm``, ``water_equivalent_diameter_mm``,
        ``global_noise_hu``.
    """
    rows = store.noise_series(
        session,
        date_from=date_from,
        date_to=date_to,
        protocol=protocol,
        station=station,
        limit=limit,
        offset=offset,
        site_ids=site_ids,
    )
    histograms = store.noise_histograms(
        session, series_instance_uids=[r["series_instance_uid"] for r in rows]
    )
    for row in rows:
        total = sum_histograms(histograms.get(row["series_instance_uid"], []))
        row["global_noise_hu"] = global_noise_level_hu(total, HISTOGRAM_BIN_HU)
    columns = [
        "series_instance_uid",
        "study_instance_uid",
        "protocol_name",
        "series_description",
        "station_name",
        "manufacturer_model_name",
        "study_date",
        "n_images",
        "ctdivol_mgy",
        "convolution_kernel",
        "slice_thickness_mm",
        "kernel_mm",
        "water_equivalent_diameter_mm",
        "global_noise_hu",
    ]
    return pd.DataFrame(rows, columns=columns)


def dose_di_points(
    session: Session, *, flt: StudyFilter | None = None, limit: int = store.MAX_POINTS
) -> pd.DataFrame:
    """Return the newest events with a DI (at most ``limit``) for the dose-DI scatter.

    Columns: ``protocol``, ``room``, ``deviation_index``, ``dap_gym2``, ``agd_mgy``,
    ``study_date``.
    """
    rows = store.dose_di_points(session, flt=flt, limit=limit)
    return pd.DataFrame(
        rows, columns=["protocol", "room", "deviation_index", "dap_gym2", "agd_mgy", "study_date"]
    )


# -- reject-log import ---------------------------------------------------------------------


@dataclass(frozen=True)
class RejectLogMapping:
    """How the columns of one DR system's reject-log CSV map to Kerma's fields.

    Read from TOML (:func:`load_reject_log_mapping`; docs/quality.md has examples).
    """

    name: str
    columns: dict[str, str]
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    datetime_format: str | None = None
    date_format: str | None = None
    time_format: str | None = None
    dap_unit: str = "dGy.cm2"
    #: values of the ``status`` column that mean rejected (case-insensitive); empty: the
    #: log lists rejected exposures only, every row is a reject
    rejected_values: tuple[str, ...] = ()


def load_reject_log_mapping(path: Path) -> RejectLogMapping:
    """Read a reject-log column mapping from a TOML file.

    Raises
    ------
    ConfigurationError
        When the file cannot be read or names unknown fields, or a DAP unit Kerma cannot
        convert to Gy·m².
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"Unable to read the reject-log mapping {path}: {exc}") from exc
    section = data.get("reject_log", data)
    columns = dict(section.get("columns") or {})
    unknown = sorted(set(columns) - set(REJECT_LOG_FIELDS))
    if unknown:
        raise ConfigurationError(
            f"Unable to use the reject-log mapping {path}: unknown field(s) "
            f"{', '.join(unknown)} in [columns]; known: {', '.join(REJECT_LOG_FIELDS)}."
        )
    if not columns:
        raise ConfigurationError(f"Unable to use the reject-log mapping {path}: no [columns].")
    mapping = RejectLogMapping(
        name=str(section.get("name", Path(path).stem)),
        columns={k: str(v) for k, v in columns.items()},
        delimiter=str(section.get("delimiter", ",")),
        encoding=str(section.get("encoding", "utf-8-sig")),
        datetime_format=section.get("datetime_format"),
        date_format=section.get("date_format"),
        time_format=section.get("time_format"),
        dap_unit=str(section.get("dap_unit", "dGy.cm2")),
        rejected_values=tuple(str(v).strip().upper() for v in section.get("rejected_values", ())),
    )
    if "dap" in mapping.columns and conversion_factor(mapping.dap_unit, UCUM_GYM2) is None:
        raise ConfigurationError(
            f"Unable to use the reject-log mapping {path}: dap_unit {mapping.dap_unit!r} is "
            "not a KAP unit Kerma converts (e.g. dGy.cm2, Gy.cm2, uGy.m2, mGy.cm2, Gy.m2)."
        )
    return mapping


@dataclass
class RejectLogResult:
    """What :func:`import_reject_log` did."""

    file_sha256: str
    n_rows: int = 0
    n_rejected: int = 0
    n_marked: int = 0
    already_imported: bool = False
    problems: list[str] = field(default_factory=list)


def _parse_number(text: str | None) -> float | None:
    """Return a number of a CSV cell (decimal comma accepted), ``None`` when empty/bad."""
    if text is None or not text.strip():
        return None
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        return None


def _parse_when(cells: dict[str, str | None], mapping: RejectLogMapping) -> dt.datetime | None:
    """Return the acquisition date-time of a row, ``None`` when not given or unreadable."""
    text = cells.get("acquisition_datetime")
    if text:
        if mapping.datetime_format:
            return dt.datetime.strptime(text.strip(), mapping.datetime_format)
        return dt.datetime.fromisoformat(text.strip())
    date_text = cells.get("acquisition_date")
    if not date_text:
        return None
    day = (
        dt.datetime.strptime(date_text.strip(), mapping.date_format)
        if mapping.date_format
        else dt.datetime.fromisoformat(date_text.strip())
    )
    time_text = cells.get("acquisition_time")
    if time_text:
        clock = (
            dt.datetime.strptime(time_text.strip(), mapping.time_format).time()
            if mapping.time_format
            else dt.time.fromisoformat(time_text.strip())
        )
        return dt.datetime.combine(day.date(), clock)
    return day


def parse_reject_log(
    data: bytes, mapping: RejectLogMapping
) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the ``reject_log_entry`` rows of a reject-log CSV and the problems found.

    A row that cannot be read (bad date) is skipped with a problem naming its line; the
    rest are kept.

    Raises
    ------
    ConfigurationError
        When a mapped column is not in the file's header.
    """
    text = data.decode(mapping.encoding, errors="replace")
    reader = csv.DictReader(io.StringIO(text), delimiter=mapping.delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in mapping.columns.values() if c not in header]
    if missing:
        raise ConfigurationError(
            f"Unable to import the reject log with mapping {mapping.name!r}: column(s) "
            f"{', '.join(repr(c) for c in missing)} not in its header ({', '.join(header)})."
        )
    factor = conversion_factor(mapping.dap_unit, UCUM_GYM2) or 1.0
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, raw in enumerate(reader, start=2):
        record = {(k or "").strip(): v for k, v in raw.items()}
        cells = {
            name: (record.get(column) or "").strip() or None
            for name, column in mapping.columns.items()
        }
        try:
            when = _parse_when(cells, mapping)
        except ValueError as exc:
            problems.append(f"line {number}: date/time not read ({exc}); row skipped")
            continue
        status = (cells.get("status") or "").upper()
        is_rejected = status in mapping.rejected_values if mapping.rejected_values else True
        dap = _parse_number(cells.get("dap"))
        rows.append(
            {
                "row_number": number,
                "station_name": cells.get("station_name"),
                "acquisition_datetime": when,
                "body_part": cells.get("body_part"),
                "image_view": cells.get("image_view"),
                "is_rejected": is_rejected,
                "reason": cells.get("reason") if is_rejected else None,
                "sop_instance_uid": cells.get("sop_instance_uid"),
                "study_instance_uid": cells.get("study_instance_uid"),
                "dap_gym2": dap * factor if dap is not None else None,
                "exposure_index": _parse_number(cells.get("exposure_index")),
                "deviation_index": _parse_number(cells.get("deviation_index")),
            }
        )
    return rows, problems


def import_reject_log(
    session: Session, *, data: bytes, mapping: RejectLogMapping
) -> RejectLogResult:
    """Import a reject-log export once (by its SHA-256) in the caller's transaction.

    Rejected rows that name a SOP Instance UID also mark that image rejected
    (``rejected_instance``, source ``reject-log``), so its dose counts as a repeat in
    the registry's reject rate whether the image arrives before or after.

    Raises
    ------
    ConfigurationError
        When the mapping does not fit the file (:func:`parse_reject_log`).
    """
    sha256 = hashlib.sha256(data).hexdigest()
    result = RejectLogResult(file_sha256=sha256)
    if store.has_reject_log(session, file_sha256=sha256):
        result.already_imported = True
        return result
    rows, result.problems = parse_reject_log(data, mapping)
    result.n_rows = store.add_reject_log_entries(session, file_sha256=sha256, rows=rows)
    rejected = [r for r in rows if r["is_rejected"]]
    result.n_rejected = len(rejected)
    by_reason: dict[str | None, list[dict[str, Any]]] = {}
    for row in rejected:
        if row["sop_instance_uid"]:
            by_reason.setdefault(row["reason"], []).append(row)
    for reason, marked in by_reason.items():
        result.n_marked += store.add_rejected_instances(
            session,
            marked_by_uid=f"reject-log:{sha256}",
            source="reject-log",
            reason=reason,
            instances=[(r["sop_instance_uid"], r["study_instance_uid"], None) for r in marked],
        )
    return result
