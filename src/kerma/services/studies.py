"""Studies: paged listing, count, streaming, detail with events, and the API frames.

The listing (:func:`list_studies`) is typed rows and a count, filtered, sorted and
paged by the database, without pandas (so ``kerma studies`` starts fast); the frames
of :meth:`kerma.Registry.studies` / :meth:`~kerma.Registry.events` are built from the
streaming iterators.

May import ``kerma.db``, ``kerma.records`` and ``kerma.errors`` (pandas only inside the
functions that return frames).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from kerma.db import studies as store
from kerma.db.filters import StudyFilter
from kerma.errors import NotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from kerma.services.tables import Units

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_CONTEXT_COLUMNS",
    "IGNORED_COLUMNS",
    "PATIENT_SIZE_COLUMNS",
    "REJECT_COLUMNS",
    "SITE_COLUMN",
    "STUDY_COLUMNS",
    "STUDY_COLUMNS_WITH_SITE",
    "STUDY_SIZE_COLUMNS",
    "StudyDetail",
    "StudyPage",
    "count_rejects",
    "count_studies",
    "events_frame",
    "get_study",
    "get_study_or_raise",
    "ignored_frame",
    "iter_events",
    "iter_studies",
    "list_studies",
    "patient_sizes_frame",
    "rejects_frame",
    "studies_frame",
    "study_patient_sizes_frame",
    "write_studies_csv",
]

#: Column lists of the listings and frames (the shared contract, ``docs/registry.md``).
STUDY_COLUMNS = store.STUDY_COLUMNS
#: The site name column (``None``: a study of no site); listed on request, issue #15.
SITE_COLUMN = store.SITE_COLUMN
#: :data:`STUDY_COLUMNS` and the study's site: the JSON API's study (listing and detail).
STUDY_COLUMNS_WITH_SITE: tuple[str, ...] = (*STUDY_COLUMNS, SITE_COLUMN)
EVENT_COLUMNS = store.EVENT_COLUMNS
EVENT_CONTEXT_COLUMNS = store.EVENT_CONTEXT_COLUMNS
IGNORED_COLUMNS = store.IGNORED_COLUMNS
PATIENT_SIZE_COLUMNS = store.PATIENT_SIZE_COLUMNS
REJECT_COLUMNS = store.REJECT_COLUMNS


@dataclass(frozen=True)
class StudyPage:
    """One page of a study listing.

    Attributes
    ----------
    rows : list of dict
        The studies of the page, in order, ``columns`` as keys.
    total : int
        Studies the filter selects (all pages), ``-1`` when not counted.
    offset, limit : int
        Where the page starts and its size (``limit`` ``None``: everything).
    columns : tuple of str
        Column names.
    """

    rows: list[dict[str, Any]]
    total: int
    offset: int
    limit: int | None
    columns: tuple[str, ...] = field(default=STUDY_COLUMNS)

    def to_frame(self) -> pd.DataFrame:
        """Return the page as a DataFrame (``columns`` in order)."""
        import pandas as pd

        return _typed(pd.DataFrame.from_records(self.rows, columns=list(self.columns)))


def count_studies(session: Session, *, flt: StudyFilter | None = None) -> int:
    """Return how many studies ``flt`` selects."""
    return store.count_studies(session, flt=flt)


def list_studies(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    sort: str | Sequence[tuple[str, str]] | None = None,
    limit: int | None = 50,
    offset: int = 0,
    columns: Sequence[str] = STUDY_COLUMNS,
    count: bool = True,
) -> StudyPage:
    """Return one page of studies with the total count.

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies (default: every patient study).
    sort : str or sequence of (column, direction), optional
        E.g. ``"study_date:desc,device_name"``; any :data:`STUDY_COLUMNS` name, ties
        broken by study id. Default newest first.
    limit : int or None, optional
        Rows per page (default 50; ``None``: all).
    offset : int, optional
        Rows skipped (page number × limit).
    columns : sequence of str, optional
        Columns of the rows.
    count : bool, optional
        Also count every study the filter selects (``total``; default ``True``).

    Returns
    -------
    StudyPage
        Rows and total.

    Raises
    ------
    ValueError
        When a sort or output column is not a listed column.
    """
    rows = store.list_studies(
        session, flt=flt, sort=sort, limit=limit, offset=offset, columns=columns
    )
    wanted = tuple(columns) if "study_id" in columns else ("study_id", *columns)
    records = [dict(zip(wanted, row, strict=True)) for row in rows]
    total = store.count_studies(session, flt=flt) if count else -1
    return StudyPage(records, total, offset, limit, wanted)


def iter_studies(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    sort: str | Sequence[tuple[str, str]] | None = (("study_date", "asc"),),
    columns: Sequence[str] = STUDY_COLUMNS,
    batch_size: int = 2000,
) -> Iterator[dict[str, Any]]:
    """Yield every study ``flt`` selects as a dict, streamed in batches (for exports)."""
    names = tuple(columns)
    for row in store.iter_studies(
        session, flt=flt, sort=sort, columns=columns, batch_size=batch_size
    ):
        yield dict(zip(names, row, strict=True))


def iter_events(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    event_modalities: Sequence[str] = (),
    study_ids: Sequence[int] | None = None,
    batch_size: int = 5000,
) -> Iterator[dict[str, Any]]:
    """Yield every current irradiation event of ``flt``'s studies (:data:`EVENT_COLUMNS`)."""
    for row in store.iter_events(
        session,
        flt=flt,
        event_modalities=event_modalities,
        study_ids=study_ids,
        batch_size=batch_size,
    ):
        yield dict(zip(EVENT_COLUMNS, row, strict=True))


def write_studies_csv(
    session: Session,
    *,
    path: Path | str,
    flt: StudyFilter | None = None,
    units: Units = "canonical",
) -> int:
    """Write every study ``flt`` selects to a CSV file, streamed, oldest first.

    Parameters
    ----------
    path : pathlib.Path or str
        The CSV file (overwritten).
    flt : StudyFilter, optional
        Which studies (default: every patient study).
    units : {"canonical", "display"}, optional
        Canonical names and units (default), or display units with labelled headers
        (:func:`kerma.services.tables.write_rows_csv`).

    Returns
    -------
    int
        Studies written.
    """
    from kerma.services.tables import write_rows_csv

    return write_rows_csv(iter_studies(session, flt=flt), STUDY_COLUMNS, path, units=units)


@dataclass(frozen=True)
class StudyDetail:
    """One study with its current irradiation events.

    Attributes
    ----------
    study : dict
        :data:`STUDY_COLUMNS_WITH_SITE` values: the listing columns and ``site``, the
        study's site name (``None`` for a study of no site).
    events : list of dict
        :data:`EVENT_COLUMNS` values of each current event, in report order.
    """

    study: dict[str, Any]
    events: list[dict[str, Any]]


def get_study(session: Session, *, study_id: int) -> StudyDetail | None:
    """Return one study and its current events, or ``None``."""
    row = store.get_study(session, study_id=study_id, columns=STUDY_COLUMNS_WITH_SITE)
    if row is None:
        return None
    events = [
        dict(zip(EVENT_COLUMNS, r, strict=True))
        for r in store.study_event_rows(session, study_id=study_id)
    ]
    return StudyDetail(dict(zip(STUDY_COLUMNS_WITH_SITE, row, strict=True)), events)


def get_study_or_raise(session: Session, *, study_id: int) -> StudyDetail:
    """Return one study and its events.

    Raises
    ------
    kerma.errors.NotFoundError
        When no study has that id.
    """
    detail = get_study(session, study_id=study_id)
    if detail is None:
        raise NotFoundError(f"No study with id {study_id}.")
    return detail


# -- frames of the Python API -------------------------------------------------------------------


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Give the shared columns their dtypes (dates as datetime64, flags as bool)."""
    import pandas as pd

    if "study_date" in frame.columns:
        frame["study_date"] = pd.to_datetime(frame["study_date"])
    if "is_non_patient" in frame.columns:
        frame["is_non_patient"] = frame["is_non_patient"].astype(bool)
    for name in ("number_of_events", "number_of_reports"):
        if name in frame.columns:
            frame[name] = frame[name].fillna(0).astype("int64")
    return frame


def studies_frame(session: Session, *, flt: StudyFilter | None = None) -> pd.DataFrame:
    """Return every study ``flt`` selects, oldest first (date, time, id), as a DataFrame."""
    import pandas as pd

    rows = store.iter_studies(
        session,
        flt=flt,
        sort=(("study_date", "asc"), ("study_time", "asc")),
        columns=STUDY_COLUMNS,
    )
    frame = pd.DataFrame.from_records(list(rows), columns=list(STUDY_COLUMNS))
    for name in frame.columns:
        if name.endswith(("_mgy", "_gy", "_gym2", "_mgycm", "_mbq", "_msv", "_mm", "_s", "_kv")):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return _typed(frame)


def events_frame(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    event_modalities: Sequence[str] = (),
) -> pd.DataFrame:
    """Return every current event of ``flt``'s studies (:data:`EVENT_COLUMNS`) as a DataFrame."""
    import pandas as pd

    rows = store.iter_events(session, flt=flt, event_modalities=event_modalities)
    frame = pd.DataFrame.from_records(list(rows), columns=list(EVENT_COLUMNS))
    return _typed(frame)


def rejects_frame(session: Session, *, limit: int | None = None) -> pd.DataFrame:
    """Return the rejected objects newest first (:data:`kerma.db.studies.REJECT_COLUMNS`)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(
        store.list_rejects(session, limit=limit), columns=list(store.REJECT_COLUMNS)
    )
    frame["rejected_at"] = pd.to_datetime(frame["rejected_at"], utc=True)
    return frame


#: Columns of :func:`plausibility_flags_frame`, one row per flagged value.
FLAG_COLUMNS: tuple[str, ...] = (
    "study_id",
    "dose_report_id",
    "location",
    "quantity",
    "value",
    "value_text",
    "range_min",
    "range_max",
    "source",
    "message",
    "flagged_at",
)


def plausibility_flags_frame(
    session: Session, *, study_ids: Sequence[int] | None = None
) -> pd.DataFrame:
    """Return the values that flagged studies for review (issue #11), by study.

    Parameters
    ----------
    session : Session
        A reading session.
    study_ids : sequence of int, optional
        Only these studies. Default: every flagged study.

    Returns
    -------
    pandas.DataFrame
        One row per flagged value, columns :data:`FLAG_COLUMNS`: ``location``
        (``study``, ``accumulated``, ``plane N``, ``event N``), ``quantity`` (the field
        name, canonical unit in it), ``value`` as read (missing for a value that was not
        a finite number; ``value_text`` keeps it: ``'nan'``, ``'inf'``), the table
        row's ``range_min`` / ``range_max`` and ``source`` keys
        (``kerma/reference/plausibility.md``) and the ``message`` shown as the warning.
    """
    import pandas as pd

    from kerma.db import queries

    rows = queries.list_plausibility_flags(
        session, study_ids=list(study_ids) if study_ids is not None else None
    )
    return pd.DataFrame.from_records(
        [{c: getattr(r, c) for c in FLAG_COLUMNS} for r in rows], columns=list(FLAG_COLUMNS)
    )


def count_rejects(session: Session) -> int:
    """Return how many rejected objects the registry lists."""
    return store.count_rejects(session)


def ignored_frame(session: Session, *, limit: int | None = None) -> pd.DataFrame:
    """Return the ignored objects newest first (:data:`kerma.db.studies.IGNORED_COLUMNS`)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(
        store.list_ignored(session, limit=limit), columns=list(store.IGNORED_COLUMNS)
    )
    frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True)
    return frame


def patient_sizes_frame(session: Session, *, study_instance_uid: str | None = None) -> pd.DataFrame:
    """Return the patient sizes measured on CT images, one row per image."""
    import pandas as pd

    frame = pd.DataFrame.from_records(
        store.list_patient_sizes(session, study_instance_uid=study_instance_uid),
        columns=list(store.PATIENT_SIZE_COLUMNS),
    )
    for name in ("water_equivalent_diameter_mm", "patient_width_mm", "table_position_mm"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    frame["measured_at"] = pd.to_datetime(frame["measured_at"], utc=True)
    return frame


#: Columns of :func:`study_patient_sizes_frame`.
STUDY_SIZE_COLUMNS: tuple[str, ...] = (
    "study_instance_uid",
    "image_size_mm",
    "image_size_source",
    "number_of_axial_images",
    "water_equivalent_diameter_mean_mm",
    "localizer_ap_mm",
    "localizer_lat_mm",
    "effective_diameter_mm",
)


def study_patient_sizes_frame(
    session: Session, *, study_instance_uid: str | None = None
) -> pd.DataFrame:
    """Return one patient size per Study Instance UID from its CT images (for the SSDE).

    ``image_size_mm`` is the mean axial Dw (``image``, AAPM Report 220), else the
    localizer effective diameter √(AP × LAT) (``localizer``, AAPM Report 204), else NaN.
    """
    import numpy as np
    import pandas as pd

    uids = None if study_instance_uid is None else [study_instance_uid]
    frame = pd.DataFrame.from_records(
        store.study_sizes(session, study_instance_uids=uids),
        columns=[
            "study_instance_uid",
            "number_of_axial_images",
            "water_equivalent_diameter_mean_mm",
            "localizer_ap_mm",
            "localizer_lat_mm",
        ],
    )
    frame["number_of_axial_images"] = frame["number_of_axial_images"].astype("int64")
    dw = pd.to_numeric(frame["water_equivalent_diameter_mean_mm"], errors="coerce").astype(float)
    ap = pd.to_numeric(frame["localizer_ap_mm"], errors="coerce").astype(float)
    lat = pd.to_numeric(frame["localizer_lat_mm"], errors="coerce").astype(float)
    effective = np.sqrt(ap * lat)
    frame["water_equivalent_diameter_mean_mm"] = dw
    frame["localizer_ap_mm"] = ap
    frame["localizer_lat_mm"] = lat
    frame["effective_diameter_mm"] = effective
    frame["image_size_mm"] = dw.where(dw.notna(), effective).astype(float)
    source = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    source[effective.notna()] = "localizer"
    source[dw.notna()] = "image"
    frame["image_size_source"] = source
    return frame[list(STUDY_SIZE_COLUMNS)]
