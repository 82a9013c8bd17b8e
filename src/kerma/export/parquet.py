"""Incremental Parquet export of studies and events, partitioned by month (issue #14, item 5).

Layout of ``DIR`` (hive-style partitions, read by DuckDB, pandas/pyarrow and Spark)::

    DIR/studies/study_month=2026-01/data.parquet   one row per study (QA studies too)
    DIR/events/study_month=2026-01/data.parquet    one row per current irradiation event
    DIR/_kerma_manifest.json                       what was exported (ignored by readers)

``study_month`` is the study date's ``YYYY-MM`` (``unknown`` without a date); it is in
the path only, as hive partitioning wants. Columns carry the canonical names and units
of the registry (``dap_total_gym2`` in Gy·m²); JSON columns (``xray_sources``) are text.

Incremental: the manifest keeps, per month, the fingerprint of its studies (count, sum
of ids, latest ``study.updated_at``: the change marker of migration
``0011_export_marker``) and the high-water mark (the latest ``updated_at`` exported).
A run reads the fingerprints (one GROUP BY) and rewrites only the months whose
fingerprint changed: a new, updated or superseded study rewrites its month's two files
whole (no duplicates, no stale rows); a study moved to another month (a corrected study
date) rewrites both months; a month that no longer has studies is removed. Each file is
written to a temporary name and renamed into place, and the manifest is written last,
so an interrupted run is repeated by the next one. ``full=True`` rewrites everything
(e.g. after renaming devices: a device's name is not a change of its studies).

Rows stream from the database a batch of studies at a time and are written as one row
group per batch (pyarrow ``ParquetWriter``): memory does not grow with the registry.

May import ``kerma.services`` and the plain layers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pyarrow as pa

    from kerma.services.exports import StudyWithEvents
    from kerma.services.registry import Registry

#: File name of the manifest in the export folder (readers skip names starting with _).
MANIFEST_NAME: Final = "_kerma_manifest.json"
#: Version of the manifest's format.
MANIFEST_FORMAT: Final = 1
#: Name of the partition column (in the folder names only).
PARTITION: Final = "study_month"
#: Parquet compression.
COMPRESSION: Final = "zstd"

Progress = Callable[[int, int], None]


@dataclass
class ParquetResult:
    """What :func:`write_parquet` did.

    Attributes
    ----------
    months_written : list of str
        Months rewritten (``YYYY-MM``).
    months_removed : list of str
        Month partitions deleted (no study left in them).
    months_unchanged : int
        Months left as they were.
    studies, events : int
        Rows written.
    high_water_mark : str or None
        Latest ``study.updated_at`` exported (ISO 8601).
    """

    months_written: list[str] = field(default_factory=list)
    months_removed: list[str] = field(default_factory=list)
    months_unchanged: int = 0
    studies: int = 0
    events: int = 0
    high_water_mark: str | None = None


def _arrow_type(kind: str) -> pa.DataType:
    """Return the Arrow type of a column kind (int, float, bool, date, datetime, json, text)."""
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }.get(kind, pa.string())


def schema_of(kinds: dict[str, str]) -> pa.Schema:
    """Return the Arrow schema of columns ``{name: kind}`` (fixed, whatever the data)."""
    import pyarrow as pa

    return pa.schema([pa.field(name, _arrow_type(kind)) for name, kind in kinds.items()])


def _value(kind: str, value: Any) -> Any:
    """Return a database value as Arrow takes it for its kind."""
    if value is None:
        return None
    if kind == "json" or (kind == "text" and not isinstance(value, str)):
        return json.dumps(value, default=str) if kind == "json" else str(value)
    if kind == "datetime" and isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC
    if kind == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    return value


def _table(rows: Sequence[dict[str, Any]], kinds: dict[str, str], schema: pa.Schema) -> pa.Table:
    """Return an Arrow table of ``rows`` with ``schema``."""
    import pyarrow as pa

    columns = {
        name: pa.array([_value(kind, row.get(name)) for row in rows], type=schema.field(name).type)
        for name, kind in kinds.items()
    }
    return pa.Table.from_pydict(columns, schema=schema)


def read_manifest(folder: Path) -> dict[str, Any]:
    """Return the manifest of an export folder (empty when there is none).

    Raises
    ------
    ValueError
        When the manifest is not Kerma's (another format or unreadable JSON).
    """
    path = folder / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"Unable to read the export manifest {path}: {exc}. Delete it (the next export "
            "then writes every month) or choose another folder."
        ) from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"Unable to use the export manifest {path}: format {manifest.get('format')!r}, "
            f"this Kerma writes format {MANIFEST_FORMAT}; export to an empty folder."
        )
    return dict(manifest)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    from kerma.files import open_private

    tmp = path.with_name(f".{path.name}.tmp")
    with open_private(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _write_month(
    registry: Registry,
    folder: Path,
    month: str,
    *,
    study_kinds: dict[str, str],
    event_kinds: dict[str, str],
    batch_size: int,
) -> tuple[int, int]:
    """Rewrite one month's study and event files; return (studies, events) written."""
    import pyarrow.parquet as pq

    from kerma.files import make_private_dirs, open_private
    from kerma.services.exports import iter_study_batches

    study_schema, event_schema = schema_of(study_kinds), schema_of(event_kinds)
    targets = {}
    for table in ("studies", "events"):
        part = make_private_dirs(folder / table / f"{PARTITION}={month}")
        targets[table] = part / "data.parquet"
    tmp = {name: path.with_name(".data.parquet.tmp") for name, path in targets.items()}
    n_studies = n_events = 0
    # the files are opened 0600 here (they hold pseudonyms): pyarrow would make them 0644
    with (
        open_private(tmp["studies"], "wb") as studies_file,
        open_private(tmp["events"], "wb") as events_file,
        pq.ParquetWriter(studies_file, study_schema, compression=COMPRESSION) as studies,
        pq.ParquetWriter(events_file, event_schema, compression=COMPRESSION) as events,
        registry.session(write=False) as session,
    ):
        batch: list[StudyWithEvents]
        for batch in iter_study_batches(session, month=month, batch_size=batch_size):
            studies.write_table(_table([b.study for b in batch], study_kinds, study_schema))
            rows = [e for b in batch for e in b.events]
            if rows:
                events.write_table(_table(rows, event_kinds, event_schema))
            n_studies += len(batch)
            n_events += len(rows)
    for name, path in targets.items():
        os.replace(tmp[name], path)
    return n_studies, n_events


def write_parquet(
    registry: Registry,
    out: str | Path,
    *,
    full: bool = False,
    progress: Progress | None = None,
    batch_size: int | None = None,
) -> ParquetResult:
    """Export the registry's studies and events to ``out`` as month-partitioned Parquet.

    Parameters
    ----------
    registry : kerma.services.registry.Registry
        The registry to read (every study, QA studies included: ``is_non_patient``
        says which).
    out : path
        The export folder (created when missing); a folder exported before is brought
        up to date (only the changed months are rewritten).
    full : bool, optional
        Rewrite every month.
    progress : callable, optional
        Called ``progress(months_done, months_to_write)``.
    batch_size : int, optional
        Studies per batch and row group (default
        :data:`kerma.services.exports.STUDY_BATCH_SIZE`).

    Returns
    -------
    ParquetResult
        Months written, removed and unchanged, rows written, high-water mark.

    Raises
    ------
    ValueError
        When ``out`` holds a manifest Kerma cannot read.
    """
    from kerma.files import make_private_dirs
    from kerma.services import exports

    folder = make_private_dirs(out)
    manifest = {} if full else read_manifest(folder)
    before: dict[str, list[Any]] = manifest.get("months", {})
    on_disk = {
        path.name.removeprefix(f"{PARTITION}=")
        for table in ("studies", "events")
        if (folder / table).is_dir()
        for path in (folder / table).iterdir()
        if path.is_dir() and path.name.startswith(f"{PARTITION}=")
    }
    with registry.session(write=False) as session:
        fingerprints = exports.month_fingerprints(session)
        latest = exports.latest_update(session)
    now = {month: list(fp) for month, fp in fingerprints.items()}
    changed = sorted(m for m, fp in now.items() if full or before.get(m) != fp)
    removed = sorted(m for m in {*before, *on_disk} if m not in now)
    result = ParquetResult(months_unchanged=len(now) - len(changed))
    study_kinds, event_kinds = exports.study_column_kinds(), exports.event_column_kinds()
    for index, month in enumerate(changed):
        n_studies, n_events = _write_month(
            registry,
            folder,
            month,
            study_kinds=study_kinds,
            event_kinds=event_kinds,
            batch_size=batch_size or exports.STUDY_BATCH_SIZE,
        )
        result.months_written.append(month)
        result.studies += n_studies
        result.events += n_events
        if progress is not None:
            progress(index + 1, len(changed))
    for month in removed:
        for table in ("studies", "events"):
            shutil.rmtree(folder / table / f"{PARTITION}={month}", ignore_errors=True)
        result.months_removed.append(month)
    result.high_water_mark = None if latest is None else _iso(latest)
    _write_atomically(
        folder / MANIFEST_NAME,
        json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "high_water_mark": result.high_water_mark,
                "exported_at": dt.datetime.now(dt.UTC).isoformat(),
                "months": now,
            },
            indent=1,
            sort_keys=True,
        ),
    )
    return result


def _iso(value: dt.datetime) -> str:
    """Return a date-time in ISO 8601, naive values taken as UTC."""
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
