"""``kerma export fhir`` and ``kerma export deid``: HL7 FHIR and the research export (#14).

``fhir`` writes (or POSTs to a FHIR server) the Radiation Dose Summary Bundle of studies
(:mod:`kerma.export.fhir`); ``deid`` writes the selected studies' dose objects
de-identified by the DICOM PS3.15 Basic Profile plus a CSV keyed by pseudonym
(:mod:`kerma.export.deid`). Added to the ``kerma export`` group by
:func:`register_export` (``kerma.cli.export.EXPORT_MODULES``).

May import ``kerma.cli``, ``kerma.services``, ``kerma.export`` and the plain layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kerma.cli.console import make_console
from kerma.cli.export import writing_to
from kerma.cli.registry import (
    AgeOpt,
    DescriptionOpt,
    DeviceOpt,
    DoseOpt,
    FromOpt,
    ModalityOpt,
    NonPatientOpt,
    ProtocolOpt,
    SexOpt,
    StudyExamOpt,
    ToOpt,
    WeightOpt,
    build_filter,
    open_registry,
)
from kerma.files import open_private

#: Seconds to wait for the FHIR server's answer.
POST_TIMEOUT_S = 60.0


def fhir(
    study_uids: Annotated[
        list[str], typer.Argument(metavar="STUDY_UID...", help="Study Instance UIDs.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the Bundle (JSON) here; default: stdout."),
    ] = None,
    post: Annotated[
        str | None,
        typer.Option(
            "--post",
            help="POST a transaction Bundle to this FHIR server base URL (e.g. "
            "https://fhir.example.org/fhir) instead of writing a collection.",
        ),
    ] = None,
) -> None:
    """HL7 FHIR R4 Radiation Dose Summary (IG 1.0.0) of studies, as a Bundle.

    One RadiationDoseSummary Observation per study (and device) with its ImagingStudy,
    ModalityDevice and a Patient that carries only the pseudonym (docs/fhir.md).
    """
    from kerma.errors import NotFoundError
    from kerma.export.fhir import build_bundle
    from kerma.services.dose_summary import dose_summaries

    console = make_console(stderr=True)
    summaries = []
    with open_registry() as registry, registry.session(write=False) as session:
        for uid in study_uids:
            try:
                summaries.extend(dose_summaries(session, study_instance_uid=uid))
            except NotFoundError as exc:
                console.print(f"[red]{escape(str(exc))}[/red]")
                raise typer.Exit(1) from None
    bundle = build_bundle(summaries, bundle_type="transaction" if post else "collection")
    text = json.dumps(bundle, indent=2, ensure_ascii=False)
    if post:
        from kerma.export.fhir import post_bundle

        status, body = post_bundle(post, text, timeout_s=POST_TIMEOUT_S)
        if not 200 <= status < 300:
            console.print(
                f"[red]The FHIR server at {escape(post)} refused the Bundle: HTTP {status}"
                f"[/red]\n{escape(body[:2000])}"
            )
            raise typer.Exit(1)
        console.print(
            f"sent {len(summaries)} Radiation Dose Summar{'y' if len(summaries) == 1 else 'ies'}"
            f" ({len(bundle['entry'])} resources) to {escape(post)}: HTTP {status}"
        )
        if out is not None:
            with writing_to(out), open_private(out, "w", encoding="utf-8") as handle:
                handle.write(body)
        return
    if out is None:
        typer.echo(text)
    else:
        with writing_to(out), open_private(out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        console.print(f"wrote {len(bundle['entry'])} resources to {escape(str(out))}")


def deid(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the research set.")],
    modality: ModalityOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    device: DeviceOpt = None,
    exam: StudyExamOpt = None,
    protocol: ProtocolOpt = None,
    description: DescriptionOpt = None,
    age: AgeOpt = None,
    weight: WeightOpt = None,
    sex: SexOpt = None,
    dose: DoseOpt = None,
    include_non_patient: NonPatientOpt = False,
    retain_dates_modified: Annotated[
        bool,
        typer.Option(
            "--retain-dates-modified",
            help="Retain Longitudinal Temporal Information with Modified Dates: shift "
            "dates per patient instead of removing them.",
        ),
    ] = False,
    retain_device_identity: Annotated[
        bool,
        typer.Option(
            "--retain-device-identity",
            help="Retain Device Identity: keep station name, serial number, device UID.",
        ),
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="KERMA_RESEARCH_KEY",
            help="Research key (32+ characters); default: derived from the pseudonym key. "
            "The same key gives the same UIDs and pseudonyms in every run.",
        ),
    ] = None,
) -> None:
    """De-identified research set: dose objects by the DICOM PS3.15 Basic Profile + CSV.

    Writes each selected study's original dose objects (read from the archive)
    de-identified, header and SR content tree, with dose values, units and codes
    untouched, into OUT/<study UID>/, and OUT/studies.csv keyed by pseudonym
    (docs/research-export.md).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from kerma.export.deid import Deidentifier, DeidOptions, write_research_export
    from kerma.services.research import iter_research_studies, research_key
    from kerma.services.studies import count_studies

    console = make_console(stderr=True)
    flt = build_filter(
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        device=device,
        exam=exam,
        protocol=protocol,
        description=description,
        age=age,
        weight=weight,
        sex=sex,
        dose=dose,
        include_non_patient=include_non_patient,
    )
    with writing_to(out, folder=True), open_registry() as registry:
        deidentifier = Deidentifier(
            research_key(registry.settings, key_text=key),
            DeidOptions(
                retain_dates_modified=retain_dates_modified,
                retain_device_identity=retain_device_identity,
            ),
        )
        with registry.session(write=False) as session:
            total = count_studies(session, flt=flt)
            with Progress(
                TextColumn("de-identifying"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task("studies", total=total)
                result = write_research_export(
                    iter_research_studies(session, settings=registry.settings, flt=flt),
                    out_dir=out,
                    deidentifier=deidentifier,
                    progress=lambda n: bar.advance(task, n),
                )
    console.print(
        f"wrote {result.objects} de-identified objects of {result.studies} studies and "
        f"{escape(str(out / 'studies.csv'))}"
    )
    for failure in result.failures:
        console.print(f"[yellow]left out: {escape(failure)}[/yellow]")


def register_export(group: typer.Typer) -> None:
    """Add ``fhir`` and ``deid`` to the ``kerma export`` group."""
    group.command("fhir")(fhir)
    group.command("deid")(deid)
