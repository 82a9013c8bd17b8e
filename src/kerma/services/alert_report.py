"""The significant-event report of an alert, for the authority (PDF with fpdf2, or HTML).

Issue 12 item 5. Directive 2013/59/Euratom Art. 63(e) asks the undertaking to notify
significant accidental or unintended exposures to the competent authority and to
report the results of the investigation and the corrective measures; in Germany
StrlSchV 2018 § 108 with Anlage 14 sets the criteria. This module writes what such a
notification needs about one alert closed as notified to the authority: the exposure
(device, exam, protocol, modality, date, every dose quantity with its unit), the
threshold and reference levels with their sources, the patient's age band, sex and
pseudonym (never a name, ID or birth date: Kerma stores none), the evaluation, the
outcome and the full review history.

One report model (:func:`build_report`) feeds both renderers: HTML through the
packaged Jinja2 template ``templates/significant_event_report.html`` (autoescaped) and
PDF through fpdf2. The PDF embeds DejaVu Sans (Debian's ``fonts-dejavu-core``) when
it is installed, so every character prints; without it, fpdf2's core Helvetica is
used and the few characters outside Latin-1 are transliterated (``≥`` → ``>=``);
``Gy·cm²`` is Latin-1 and prints either way.

May import ``kerma.services``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import unicodedata
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from kerma.errors import AlertMessageError, ReportNotAllowedError
from kerma.services.alert_notify import AlertMessage, format_value, template_environment

logger = logging.getLogger(__name__)

#: The outcome of an alert closed as a significant event notified to the authority.
OUTCOME_NOTIFIED = "notified_to_authority"

#: Readable labels of the closing outcomes (issue 12 item 3).
OUTCOME_LABELS: dict[str, str] = {
    "no_action": "No action needed",
    "no_action_needed": "No action needed",
    "optimisation_action": "Optimisation action",
    OUTCOME_NOTIFIED: "Significant event notified to the authority",
}

#: Folders searched for DejaVu Sans (Debian/Ubuntu ``fonts-dejavu-core``, Fedora,
#: Arch and macOS Homebrew locations).
DEJAVU_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu-sans-fonts"),
    Path("/usr/share/fonts/TTF"),
    Path("/usr/local/share/fonts"),
    Path("/opt/homebrew/share/fonts"),
)

#: Replacements for characters Helvetica (Latin-1) cannot print, when DejaVu is absent.
TRANSLITERATIONS: dict[str, str] = {
    "—": "-",
    "–": "-",
    "−": "-",
    "≥": ">=",
    "≤": "<=",
    "≠": "!=",
    "×": "x",
    "…": "...",
    "‘": "'",
    "’": "'",
    "“": '"',
    "”": '"',
    "•": "*",
    "→": "->",
    "‰": "per mille",
    "ₐ": "a",
    "ᵣ": "r",
}

Cell = str


@dataclasses.dataclass(frozen=True)
class ReportTable:
    """A table of the report: headers, rows of text, and which columns are numbers."""

    headers: tuple[str, ...]
    rows: Sequence[tuple[Cell, ...]]
    numeric: tuple[bool, ...]
    widths: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ReportSection:
    """One numbered section: label-value fields, an optional table, notes."""

    heading: str
    fields: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    table: ReportTable | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Report:
    """The report as text, before rendering."""

    title: str
    subtitle: str
    sections: list[ReportSection]
    footer: str


def _kerma_version() -> str:
    """Return the installed Kerma version (``unknown`` when run from an uninstalled tree)."""
    try:
        return version("kerma")
    except PackageNotFoundError:
        return "unknown"


def _time(value: dt.datetime) -> str:
    """Return a history time in UTC, to the second."""
    moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _or_dash(text: str | None) -> str:
    """Return ``text``, or an en dash for an empty value."""
    return text if text else "–"


def build_report(
    message: AlertMessage,
    extra_quantities: Sequence[tuple[str, float, str]] = (),
    *,
    reference_levels: Sequence[tuple[str, float, str, str]] = (),
    generated_at: dt.datetime | None = None,
) -> Report:
    """Return the significant-event report of an alert as text sections.

    Parameters
    ----------
    message : AlertMessage
        The alert; its ``outcome`` must be ``"notified_to_authority"``.
    extra_quantities : sequence of (label, value, unit)
        Every dose quantity of the exposure to list besides the one the rule compared
        (e.g. ``("DLP total", 2150.0, "mGy·cm")``).
    reference_levels : sequence of (label, value, unit, source), optional
        DRLs (or other reference levels) of the study's exam, with their sources.
    generated_at : datetime.datetime, optional
        Time printed as the report's date (default now).

    Returns
    -------
    Report
        Title, sections and footer.

    Raises
    ------
    ReportNotAllowedError
        When the alert was not closed as notified to the authority.
    AlertMessageError
        When a quantity's value is not a number.
    """
    if message.outcome != OUTCOME_NOTIFIED:
        shown = OUTCOME_LABELS.get(message.outcome or "", message.outcome)
        raise ReportNotAllowedError(
            f"Unable to write a significant-event report for alert #{message.alert_id}: "
            f"its outcome is {shown or 'not set'!r} (state {message.state!r}). The report "
            "is for an alert closed as a significant event notified to the authority "
            f"(outcome {OUTCOME_NOTIFIED!r}); close the alert with that outcome first."
        )
    now = generated_at or dt.datetime.now(dt.UTC)
    quantities = [(message.quantity_label, message.shown_value, message.shown_unit)]
    for entry in extra_quantities:
        try:
            label, value, unit = entry
            quantities.append((str(label), float(value), str(unit)))
        except (TypeError, ValueError) as exc:
            raise AlertMessageError(
                f"Unable to list the dose quantity {entry!r} in the report of alert "
                f"#{message.alert_id}: give (label, value, unit) with a numeric value."
            ) from exc
    exposure = ReportSection(
        "1. Exposure",
        fields=[
            ("Device", _or_dash(message.device_name)),
            ("Modality", _or_dash(message.modality)),
            ("Standard exam", _or_dash(message.exam)),
            ("Protocol", _or_dash(message.protocol)),
            ("Study date", message.study_date.isoformat() if message.study_date else "unknown"),
            ("Study Instance UID", _or_dash(message.study_instance_uid)),
        ],
        table=ReportTable(
            headers=("Dose quantity", "Value", "Unit"),
            rows=[(label, format_value(value), unit) for label, value, unit in quantities],
            numeric=(False, True, False),
            widths=(0.55, 0.25, 0.20),
        ),
    )
    levels_rows = [
        (
            f"Alert threshold: {message.rule_title}",
            format_value(message.shown_threshold),
            message.shown_unit,
            message.threshold_source,
        )
    ]
    levels_rows += [
        (str(label), format_value(float(value)), str(unit), str(source))
        for label, value, unit, source in reference_levels
    ]
    levels = ReportSection(
        "2. Threshold and reference levels",
        fields=[
            ("Rule", f"{message.rule_title} ({message.rule_id}, version {message.rule_version})"),
            ("Rule pack", _or_dash(message.pack)),
            ("Quantity compared", message.quantity_label),
        ],
        table=ReportTable(
            headers=("Level", "Value", "Unit", "Source"),
            rows=levels_rows,
            numeric=(False, True, False, False),
            widths=(0.34, 0.14, 0.12, 0.40),
        ),
    )
    patient = ReportSection(
        "3. Patient",
        fields=[
            ("Pseudonym", _or_dash(message.pseudonym_short)),
            ("Age band", _or_dash(message.age_band) if message.age_band else "unknown"),
            ("Sex", _or_dash(message.sex) if message.sex else "unknown"),
        ],
        notes=[
            "The registry holds no patient name, ID or birth date; the pseudonym is a keyed "
            "hash that the department can resolve in its own systems."
        ],
    )
    # the ratio of the two numbers the report prints (display units)
    ratio = message.shown_value / message.shown_threshold if message.shown_threshold else None
    unit = f" {message.shown_unit}" if message.shown_unit else ""
    evaluation_fields = [
        (
            "Value against threshold",
            f"{format_value(message.shown_value)}{unit} against "
            f"{format_value(message.shown_threshold)}{unit}",
        ),
    ]
    if ratio is not None:
        evaluation_fields.append(
            ("Ratio", f"{format_value(ratio, 3)} × threshold ({(ratio - 1) * 100:+.0f} %)")
        )
    evaluation = ReportSection("4. Evaluation", fields=evaluation_fields)
    closing = [h for h in message.history if "clos" in h.action.lower()]
    outcome_fields = [
        ("State", _or_dash(message.state)),
        ("Outcome", OUTCOME_LABELS.get(message.outcome or "", message.outcome or "")),
    ]
    if closing:
        last = closing[-1]
        outcome_fields += [
            ("Closed by", f"{last.user}, {_time(last.time)}"),
            ("Justification and actions", _or_dash(last.text)),
        ]
    outcome = ReportSection("5. Actions and outcome", fields=outcome_fields)
    history = ReportSection(
        "6. Review history",
        table=ReportTable(
            headers=("Time", "User", "Action", "Comment"),
            rows=[
                (_time(h.time), h.user, h.action.replace("_", " "), h.text) for h in message.history
            ],
            numeric=(False, False, False, False),
            widths=(0.27, 0.15, 0.15, 0.43),
        ),
        notes=[] if message.history else ["No review history was recorded."],
    )
    return Report(
        title=f"Significant-event report: high-dose alert #{message.alert_id}",
        subtitle=(
            f"{message.rule_title} - {message.device_name}, "
            f"{message.study_date.isoformat() if message.study_date else 'date unknown'}. "
            f"Generated {now.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}."
        ),
        sections=[exposure, levels, patient, evaluation, outcome, history],
        footer=(
            f"Kerma {_kerma_version()}. Directive 2013/59/Euratom Art. 63; "
            "review history as recorded in the registry (entries chained by hash)."
        ),
    )


def render_report(
    message: AlertMessage,
    extra_quantities: Sequence[tuple[str, float, str]] = (),
    fmt: Literal["pdf", "html"] | str = "pdf",
    *,
    reference_levels: Sequence[tuple[str, float, str, str]] = (),
    generated_at: dt.datetime | None = None,
) -> bytes:
    """Return the significant-event report of an alert as PDF or HTML bytes.

    Parameters
    ----------
    message : AlertMessage
        The alert, closed as notified to the authority.
    extra_quantities : sequence of (label, value, unit)
        The exposure's other dose quantities.
    fmt : {"pdf", "html"}, optional
        Output format (default ``"pdf"``); HTML is UTF-8.
    reference_levels : sequence of (label, value, unit, source), optional
        DRLs of the study's exam with their sources.
    generated_at : datetime.datetime, optional
        The report's date (default now).

    Returns
    -------
    bytes
        The PDF document or the HTML page.

    Raises
    ------
    ReportNotAllowedError
        When the alert's outcome is not ``"notified_to_authority"``.
    AlertMessageError
        When ``fmt`` is neither pdf nor html, or a quantity is not a number.
    """
    if fmt not in ("pdf", "html"):
        raise AlertMessageError(f"Unable to write a report as {fmt!r}: give 'pdf' or 'html'.")
    report = build_report(
        message, extra_quantities, reference_levels=reference_levels, generated_at=generated_at
    )
    if fmt == "html":
        template = template_environment(autoescape=True).get_template(
            "significant_event_report.html"
        )
        return template.render(r=report).encode("utf-8")
    return _render_pdf(report)


def find_unicode_font() -> tuple[Path, Path | None] | None:
    """Return (regular, bold or ``None``) DejaVu Sans files, or ``None`` when absent."""
    for folder in DEJAVU_DIRS:
        regular = folder / "DejaVuSans.ttf"
        if regular.is_file():
            bold = folder / "DejaVuSans-Bold.ttf"
            return regular, bold if bold.is_file() else None
    return None


def transliterate(text: str) -> str:
    """Return ``text`` in Latin-1 for the core PDF fonts (``≥`` → ``>=``, others decomposed)."""
    out = []
    for char in text:
        if ord(char) < 256:
            out.append(char)
            continue
        if char in TRANSLITERATIONS:
            out.append(TRANSLITERATIONS[char])
            continue
        plain = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode("latin-1")
        out.append(plain or "?")
    return "".join(out)


def _render_pdf(report: Report) -> bytes:
    """Return the report as an A4 PDF (fpdf2)."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_margins(18, 15, 18)
    pdf.set_title(report.title)
    pdf.set_creator(f"Kerma {_kerma_version()}")
    font = find_unicode_font()
    if font is not None:
        regular, bold = font
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold or regular))
        family = "DejaVu"
        text: Callable[[str], str] = str  # the embedded font prints every character
    else:
        logger.info("DejaVu Sans not found; the PDF uses Helvetica with transliteration")
        family = "helvetica"
        text = transliterate
    pdf.add_page()
    width = pdf.epw
    pdf.set_font(family, "B", 15)
    pdf.multi_cell(width, 8, text(report.title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(family, "", 10)
    pdf.multi_cell(width, 5, text(report.subtitle), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for section in report.sections:
        pdf.ln(4)
        pdf.set_font(family, "B", 12)
        pdf.cell(width, 7, text(section.heading), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(family, "", 9.5)
        if section.fields:
            with pdf.table(
                col_widths=(0.3, 0.7),
                first_row_as_headings=False,
                line_height=5,
                text_align="LEFT",
            ) as table:
                for label, value in section.fields:
                    row = table.row()
                    row.cell(text(label))
                    row.cell(text(value))
        if section.table is not None and section.table.rows:
            pdf.ln(2)
            aligns = tuple("RIGHT" if n else "LEFT" for n in section.table.numeric)
            with pdf.table(
                col_widths=section.table.widths,
                line_height=5,
                text_align=aligns,
            ) as table:
                header = table.row()
                for heading in section.table.headers:
                    header.cell(text(heading))
                for cells in section.table.rows:
                    row = table.row()
                    for cell in cells:
                        row.cell(text(cell))
        for note in section.notes:
            pdf.ln(1)
            pdf.set_font(family, "", 8.5)
            pdf.multi_cell(width, 4.5, text(note), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.set_font(family, "", 9.5)
    pdf.ln(5)
    pdf.set_font(family, "", 8)
    pdf.multi_cell(width, 4, text(report.footer), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
