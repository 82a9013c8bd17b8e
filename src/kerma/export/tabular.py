"""CSV and XLSX exports in constant memory (issue #14, item 1).

The layout physicists know from OpenREM's exports, per modality family (CT, DX, MG,
RF/XA, NM):

- **studies** — one row per study: the study's context and totals, then its events in
  columns to the right (``E1 Protocol``, ``E1 CTDIvol (mGy)``, ``E1 DLP (mGy·cm)``,
  ``E2 …``), as many event blocks as the largest selected study has (XLSX: as many
  as fit in its 16,384 columns; the event sheet always has them all);
- **events** — one row per current irradiation event with its study's context;
- **Summary** — studies and events per modality family, standard exam, protocol and
  device.

Every header carries its unit (from :data:`kerma.units.QUANTITIES`); values are in the
display units (KAP in Gy·cm², Ka,r in mGy) by default, or canonical (Gy·m², Gy) with
``units="canonical"``. Rows stream from the database a batch of studies at a time
(:func:`kerma.services.exports.iter_study_batches`); XLSX is written by XlsxWriter with
``constant_memory=True`` (each row is flushed to a temporary file as soon as the next
one starts), so memory does not grow with the number of studies.

:func:`write_xlsx` and :func:`write_csv` write to a path or a binary stream (the web
download calls them with the response stream).

May import ``kerma.services`` and the plain layers.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

from kerma.records import EVENT_SCALAR_FIELDS
from kerma.units import QUANTITIES

if TYPE_CHECKING:
    from kerma.services.exports import StudyWithEvents
    from kerma.services.filters import StudyFilter
    from kerma.services.registry import Registry

Units = Literal["display", "canonical"]
Progress = Callable[[int, int], None]

#: XlsxWriter options: rows are flushed as they are written (constant memory), strings
#: inline (no shared-string table growing with the data), no URL detection.
XLSX_OPTIONS: Final[dict[str, Any]] = {
    "constant_memory": True,
    "strings_to_urls": False,
    "strings_to_formulas": False,
    "default_date_format": "yyyy-mm-dd",
}

#: Columns of a spreadsheet row (XLSX limit, ECMA-376: 16,384 = XFD).
XLSX_MAX_COLUMNS: Final = 16_384
#: Rows of a worksheet (XLSX limit: 1,048,576, the header included).
XLSX_MAX_ROWS: Final = 1_048_576

#: Modality families in sheet order; ``""`` collects studies without a family.
FAMILIES: Final[tuple[str, ...]] = ("CT", "DX", "MG", "RF/XA", "NM", "")

#: Study context columns of every sheet, in order.
STUDY_CONTEXT: Final[tuple[str, ...]] = (
    "study_date",
    "study_time",
    "study_instance_uid",
    "accession_pseudonym",
    "patient_pseudonym",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "is_non_patient",
    "study_description",
    "requested_procedure_description",
    "standard_exam",
    "modalities",
    "device_name",
    "manufacturer",
    "manufacturer_model_name",
    "station_name",
    "number_of_events",
)

#: Study totals per family (study summary columns, canonical names).
STUDY_TOTALS: Final[dict[str, tuple[str, ...]]] = {
    "CT": (
        "ct_dlp_total_mgycm",
        "ctdivol_mean_mgy",
        "ctdivol_max_mgy",
        "ssde_mgy",
        "effective_dose_msv",
    ),
    "DX": ("dap_total_gym2", "dose_rp_total_gy"),
    "MG": ("agd_total_left_mgy", "agd_total_right_mgy"),
    "RF/XA": (
        "dap_total_gym2",
        "dap_total_plane_a_gym2",
        "dap_total_plane_b_gym2",
        "dose_rp_total_gy",
        "dose_rp_total_plane_a_gy",
        "dose_rp_total_plane_b_gy",
        "fluoro_time_total_s",
    ),
    "NM": ("administered_activity_total_mbq",),
    "": ("dap_total_gym2", "dose_rp_total_gy", "ct_dlp_total_mgycm"),
}

#: Event columns of the study-per-row sheet per family (each event's block).
WIDE_EVENT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "CT": (
        "acquisition_protocol",
        "ct_acquisition_type",
        "ctdiw_phantom_type",
        "ctdivol_mgy",
        "dlp_mgycm",
    ),
    "DX": ("acquisition_protocol", "image_view", "kvp_kv", "exposure_mas", "dap_gym2"),
    "MG": (
        "acquisition_protocol",
        "laterality",
        "image_view",
        "kvp_kv",
        "compression_thickness_mm",
        "agd_mgy",
    ),
    "RF/XA": (
        "acquisition_protocol",
        "irradiation_event_type",
        "acquisition_plane",
        "dap_gym2",
        "dose_rp_gy",
        "irradiation_duration_s",
    ),
    "NM": ("radiopharmaceutical_agent", "radionuclide", "administered_activity_mbq"),
    "": ("modality", "acquisition_protocol", "dap_gym2", "dose_rp_gy", "dlp_mgycm"),
}

#: Event columns of the event-per-row sheet: every scalar event field.
EVENT_FIELDS: Final[tuple[str, ...]] = ("event_index", *EVENT_SCALAR_FIELDS)

#: Headers of columns that are not quantities (quantities take theirs from QUANTITIES).
LABELS: Final[dict[str, str]] = {
    "study_date": "Study date",
    "study_time": "Study time",
    "study_instance_uid": "Study Instance UID",
    "accession_pseudonym": "Accession pseudonym",
    "patient_pseudonym": "Patient pseudonym",
    "patient_sex": "Sex",
    "is_non_patient": "QA/phantom",
    "study_description": "Study description",
    "requested_procedure_description": "Requested procedure",
    "standard_exam": "Standard exam",
    "modalities": "Modalities",
    "device_name": "Device",
    "manufacturer": "Manufacturer",
    "manufacturer_model_name": "Model",
    "station_name": "Station",
    "number_of_events": "Events",
    "acquisition_protocol": "Protocol",
    "ct_acquisition_type": "Acquisition type",
    "ctdiw_phantom_type": "Phantom",
    "image_view": "View",
    "laterality": "Laterality",
    "irradiation_event_type": "Event type",
    "acquisition_plane": "Plane",
    "irradiation_duration_s": "Irradiation duration (s)",
    "radiopharmaceutical_agent": "Radiopharmaceutical",
    "radionuclide": "Radionuclide",
    "modality": "Modality",
    "modality_family": "Modality family",
    "number_of_studies": "Studies",
    "event_index": "Event",
}


def header(name: str, units: Units = "display") -> str:
    """Return the column header of ``name`` with its unit, e.g. ``"KAP (Gy·cm²)"``.

    Quantities take label and unit from :data:`kerma.units.QUANTITIES` (display or
    canonical unit); other columns from :data:`LABELS`, else the name itself.
    """
    quantity = QUANTITIES.get(name)
    if quantity is not None:
        return quantity.display_label if units == "display" else quantity.canonical_label
    return LABELS.get(name, name)


def cell(name: str, value: Any, units: Units = "display") -> Any:
    """Return a stored value as written to a cell: display-unit number, date, text or None.

    Quantities are converted by the factor of :data:`kerma.units.QUANTITIES` when
    ``units="display"``; JSON values and date-times become text.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    quantity = QUANTITIES.get(name)
    if quantity is not None and isinstance(value, int | float):
        return float(value) * quantity.factor if units == "display" else float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return str(value)
    return value


def sheet_name(family: str, kind: str) -> str:
    """Return the worksheet (or CSV file part) name, e.g. ``"CT studies"``, ``"RF-XA events"``."""
    return f"{(family or 'Other').replace('/', '-')} {kind}"


class Layout:
    """The columns of the two sheets of one modality family.

    Parameters
    ----------
    family : str
        Modality family (``""``: studies without one).
    wide_events : int
        Event blocks of the study-per-row sheet.
    units : {"display", "canonical"}
        Units of the values and headers.
    """

    def __init__(self, family: str, wide_events: int, units: Units) -> None:
        self.family = family
        self.units = units
        self.study_columns = (*STUDY_CONTEXT, *STUDY_TOTALS[family])
        self.event_block = WIDE_EVENT_FIELDS[family]
        self.wide_events = wide_events

    def study_header(self) -> list[str]:
        """Return the header row of the study-per-row sheet."""
        names = [header(c, self.units) for c in self.study_columns]
        for index in range(1, self.wide_events + 1):
            names += [f"E{index} {header(f, self.units)}" for f in self.event_block]
        return names

    def study_row(self, item: StudyWithEvents) -> list[Any]:
        """Return one study's row: context, totals, then its first events' blocks."""
        row = [cell(c, item.study.get(c), self.units) for c in self.study_columns]
        for event in item.events[: self.wide_events]:
            row += [cell(f, event.get(f), self.units) for f in self.event_block]
        return row

    def event_header(self) -> list[str]:
        """Return the header row of the event-per-row sheet."""
        return [header(c, self.units) for c in (*STUDY_CONTEXT, *EVENT_FIELDS)]

    def event_rows(self, item: StudyWithEvents) -> list[list[Any]]:
        """Return one row per event of the study (the study's context repeated)."""
        context = [cell(c, item.study.get(c), self.units) for c in STUDY_CONTEXT]
        return [
            context + [cell(f, event.get(f), self.units) for f in EVENT_FIELDS]
            for event in item.events
        ]


SUMMARY_HEADER: Final[tuple[str, ...]] = (
    "modality_family",
    "standard_exam",
    "acquisition_protocol",
    "device_name",
    "number_of_studies",
    "number_of_events",
)


class _Sink:
    """Where the rows of one sheet go (CSV writer or XLSX worksheet)."""

    def write(self, row: Sequence[Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _CsvSink(_Sink):
    """Rows to a CSV text stream (numbers with 10 significant digits)."""

    def __init__(self, stream: IO[str]) -> None:
        self.writer = csv.writer(stream, lineterminator="\n")

    def write(self, row: Sequence[Any]) -> None:
        self.writer.writerow(
            "" if v is None else (f"{v:.10g}" if isinstance(v, float) else v) for v in row
        )


class _XlsxSink(_Sink):
    """Rows to an XlsxWriter worksheet in constant-memory mode (rows in order only)."""

    def __init__(self, worksheet: Any, date_format: Any) -> None:
        self.worksheet = worksheet
        self.date_format = date_format
        self.row = 0

    def write(self, row: Sequence[Any]) -> None:
        if self.row >= XLSX_MAX_ROWS:
            raise ValueError(
                f"Unable to write worksheet {self.worksheet.name!r}: more than "
                f"{XLSX_MAX_ROWS - 1} rows (the XLSX limit); narrow the filter or use CSV "
                "or Parquet."
            )
        for col, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, dt.date):
                self.worksheet.write_datetime(self.row, col, value, self.date_format)
            else:
                self.worksheet.write(self.row, col, value)
        self.row += 1


def check_folder(path: str | Path) -> None:
    """Raise before any work when the folder a file is to be written in does not exist.

    Raises
    ------
    FileNotFoundError
        Naming the missing folder.
    """
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"Unable to write {path}: the folder {folder} does not exist")


def _plan(
    registry: Registry, flt: StudyFilter | None, *, units: Units, max_columns: int | None
) -> tuple[dict[str, Layout], list[dict[str, Any]], int]:
    """Return the layouts of the families present, the summary rows and the study count."""
    from kerma.services import exports

    with registry.session(write=False) as session:
        most = exports.max_events_per_family(session, flt=flt)
        summary = exports.count_summary(session, flt=flt)
        total = exports.count_studies(session, flt=flt)
    layouts = {}
    for family in FAMILIES:
        if family not in most:
            continue
        wide = most[family]
        if max_columns is not None:
            free = max_columns - len(STUDY_CONTEXT) - len(STUDY_TOTALS[family])
            wide = min(wide, max(free, 0) // len(WIDE_EVENT_FIELDS[family]))
        layouts[family] = Layout(family, wide, units)
    for family in most:  # a family Kerma adds later goes with the others
        if family not in layouts:
            layouts[family] = Layout("", most[family], units)
    return layouts, summary, total


def _export(
    registry: Registry,
    flt: StudyFilter | None,
    layouts: dict[str, Layout],
    sinks: dict[tuple[str, str], _Sink],
    *,
    total: int,
    progress: Progress | None,
    batch_size: int,
) -> int:
    """Stream the studies into the sinks (``(family, "studies"|"events")``); return studies."""
    from kerma.services import exports

    for (family, kind), sink in sinks.items():
        if family in layouts:
            layout = layouts[family]
            sink.write(layout.study_header() if kind == "studies" else layout.event_header())
    done = 0
    with registry.session(write=False) as session:
        for batch in exports.iter_study_batches(session, flt=flt, batch_size=batch_size):
            for item in batch:
                family = str(item.study.get("modality_family") or "")
                layout = layouts.get(family) or layouts[""]
                key = layout.family if family in layouts else ""
                sinks[(key, "studies")].write(layout.study_row(item))
                events = sinks[(key, "events")]
                for row in layout.event_rows(item):
                    events.write(row)
            done += len(batch)
            if progress is not None:
                progress(done, total)
    return done


def write_xlsx(
    registry: Registry,
    out: str | Path | IO[bytes],
    *,
    flt: StudyFilter | None = None,
    units: Units = "display",
    progress: Progress | None = None,
    batch_size: int | None = None,
) -> int:
    """Write the XLSX workbook of the selected studies (Summary, then two sheets per family).

    Parameters
    ----------
    registry : kerma.services.registry.Registry
        The registry to read.
    out : path or binary stream
        Where the workbook goes (a path, or a seekable binary stream such as a
        temporary file for a web download).
    flt : StudyFilter, optional
        Which studies (the study browser's filter; default every patient study).
    units : {"display", "canonical"}, optional
        Display units (default: KAP in Gy·cm², Ka,r in mGy) or canonical (Gy·m², Gy).
    progress : callable, optional
        Called ``progress(studies_done, studies_total)`` after each batch.
    batch_size : int, optional
        Studies read per batch (default :data:`kerma.services.exports.STUDY_BATCH_SIZE`).

    Returns
    -------
    int
        Studies written.

    Raises
    ------
    ValueError
        When a sheet would exceed the XLSX limit of 1,048,575 rows.
    FileNotFoundError
        When the folder of ``out`` does not exist.
    """
    import xlsxwriter

    from kerma.services.exports import STUDY_BATCH_SIZE

    if isinstance(out, str | Path):
        check_folder(out)
    layouts, summary, total = _plan(registry, flt, units=units, max_columns=XLSX_MAX_COLUMNS)
    from kerma.files import open_private

    # a path is opened 0600 here (the workbook holds pseudonyms): xlsxwriter would make
    # the file with the umask's mode, often 0644
    handle = open_private(out, "wb") if isinstance(out, str | Path) else None
    workbook = xlsxwriter.Workbook(out if handle is None else handle, XLSX_OPTIONS)
    try:
        date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
        sheet = _XlsxSink(workbook.add_worksheet("Summary"), date_format)
        sheet.write([header(c, units) for c in SUMMARY_HEADER])
        for row in summary:
            sheet.write([row[c] for c in SUMMARY_HEADER])
        sinks: dict[tuple[str, str], _Sink] = {}
        for family in layouts:
            for kind in ("studies", "events"):
                sinks[(family, kind)] = _XlsxSink(
                    workbook.add_worksheet(sheet_name(family, kind)), date_format
                )
        done = _export(
            registry,
            flt,
            layouts,
            sinks,
            total=total,
            progress=progress,
            batch_size=batch_size or STUDY_BATCH_SIZE,
        )
    finally:
        workbook.close()
        if handle is not None:
            handle.close()
    return done


def csv_paths(out: Path, families: Sequence[str]) -> dict[tuple[str, str], Path]:
    """Return the CSV file of each (family, sheet) beside ``out``: ``<stem>_CT_studies.csv``.

    The summary is ``<stem>_summary.csv`` (key ``("", "summary")``).
    """
    paths = {("", "summary"): out.with_name(f"{out.stem}_summary.csv")}
    for family in families:
        for kind in ("studies", "events"):
            part = sheet_name(family, kind).replace(" ", "_")
            paths[(family, kind)] = out.with_name(f"{out.stem}_{part}.csv")
    return paths


def write_csv(
    registry: Registry,
    out: Path,
    *,
    flt: StudyFilter | None = None,
    units: Units = "display",
    progress: Progress | None = None,
    batch_size: int | None = None,
) -> dict[tuple[str, str], Path]:
    """Write the CSV files of the selected studies: summary, and per family studies and events.

    ``out`` names the set: ``export.csv`` gives ``export_summary.csv``,
    ``export_CT_studies.csv``, ``export_CT_events.csv`` ... (:func:`csv_paths`). UTF-8
    with a byte-order mark (so spreadsheet programs read ``Gy·cm²`` right).

    Returns
    -------
    dict
        The files written, by (family, sheet).
    """
    from kerma.files import open_private
    from kerma.services.exports import STUDY_BATCH_SIZE

    check_folder(out)
    layouts, summary, total = _plan(registry, flt, units=units, max_columns=None)
    paths = csv_paths(Path(out), list(layouts))
    streams: list[IO[str]] = []
    try:
        for path in paths.values():
            streams.append(open_private(path, "w", encoding="utf-8-sig", newline=""))
        sinks: dict[tuple[str, str], _Sink] = {
            key: _CsvSink(stream) for key, stream in zip(paths, streams, strict=True)
        }
        summary_sink = sinks.pop(("", "summary"))
        summary_sink.write([header(c, units) for c in SUMMARY_HEADER])
        for row in summary:
            summary_sink.write([row[c] for c in SUMMARY_HEADER])
        _export(
            registry,
            flt,
            layouts,
            sinks,
            total=total,
            progress=progress,
            batch_size=batch_size or STUDY_BATCH_SIZE,
        )
    finally:
        for stream in streams:
            stream.close()
    return paths


def write_csv_sheet(
    registry: Registry,
    stream: IO[str],
    *,
    family: str,
    sheet: Literal["studies", "events"],
    flt: StudyFilter | None = None,
    units: Units = "display",
) -> int:
    """Write one sheet (one family's studies or events) as CSV to a text stream.

    For a web download of one CSV file. Returns the studies read.
    """
    from kerma.services.exports import STUDY_BATCH_SIZE

    layouts, _, total = _plan(registry, flt, units=units, max_columns=None)
    sinks: dict[tuple[str, str], _Sink] = {}
    null = _CsvSink(io.StringIO())
    null.write = lambda row: None  # type: ignore[method-assign]
    for key in layouts:
        for kind in ("studies", "events"):
            wanted = key == family and kind == sheet
            sinks[(key, kind)] = _CsvSink(stream) if wanted else null
    return _export(
        registry, flt, layouts, sinks, total=total, progress=None, batch_size=STUDY_BATCH_SIZE
    )
