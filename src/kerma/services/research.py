"""The selected studies' original dose objects, for the de-identified research export (#14).

Streams the studies a :class:`~kerma.db.filters.StudyFilter` selects (in batches, never
a whole table) with each study's dose objects read back from the archive (decrypted
when the archive is encrypted, the default), and gives the research key.

May import ``kerma.db``, ``kerma.ingest``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from kerma.config import Settings
from kerma.db import dose_objects
from kerma.db import studies as store
from kerma.db.filters import StudyFilter
from kerma.errors import ConfigurationError

__all__ = ["ArchivedObjectData", "ResearchStudy", "iter_research_studies", "research_key"]

#: The label the research key is derived with from the pseudonym key (HMAC message).
RESEARCH_KEY_LABEL = b"kerma research export v1"


@dataclass(frozen=True)
class ArchivedObjectData:
    """One archived dose object: its ``dose_report`` row and its bytes (or why not).

    ``data`` is ``None`` when the archive file could not be read; ``error`` says why.
    """

    report: dict[str, Any]
    data: bytes | None
    error: str | None = None


@dataclass(frozen=True)
class ResearchStudy:
    """One selected study: its listing row and its dose objects, oldest first."""

    study: dict[str, Any]
    objects: list[ArchivedObjectData]


def research_key(settings: Settings, *, key_text: str | None = None) -> bytes:
    """Return the research key: ``key_text``, or one derived from the pseudonym key.

    Parameters
    ----------
    settings : Settings
        The registry's settings (its pseudonym key file).
    key_text : str, optional
        A key of its own for this research set (at least 32 characters): a recipient
        of several exports with the same key can link them; a new key cannot.

    Returns
    -------
    bytes
        32 bytes or more. Derived: HMAC-SHA-256 of :data:`RESEARCH_KEY_LABEL` with the
        registry's key chain (so it changes when the key is rotated).

    Raises
    ------
    kerma.errors.ConfigurationError
        When ``key_text`` is shorter than 32 characters, or the registry key is missing.
    """
    if key_text is not None:
        if len(key_text.strip()) < 32:
            raise ConfigurationError(
                "Unable to use the research key: it is shorter than 32 characters, and a "
                "guessable key would let anyone re-identify the UIDs. Use e.g. "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`."
            )
        return key_text.strip().encode("utf-8")
    from kerma.services.keys import check_registry_key

    chain = check_registry_key(settings)
    return bytes.fromhex(chain.digest(RESEARCH_KEY_LABEL))


def _read(settings: Settings, relative: str) -> tuple[bytes | None, str | None]:
    """Return the bytes of an archived object, or ``None`` and the reason."""
    from kerma.errors import KermaError
    from kerma.services.keys import read_archived_file

    path = Path(settings.archive_dir) / relative
    try:
        return read_archived_file(settings, path), None
    except (OSError, KermaError) as exc:
        return None, f"Unable to read archive file {relative}: {exc}"


def iter_research_studies(
    session: Session,
    *,
    settings: Settings,
    flt: StudyFilter | None = None,
    columns: Sequence[str] = store.STUDY_COLUMNS,
    batch_size: int = 200,
) -> Iterator[ResearchStudy]:
    """Yield each study ``flt`` selects with its archived dose objects, oldest first.

    Studies stream from the database in batches of ``batch_size``; only one batch's
    dose objects are in memory at a time. An unreadable archive file is yielded with its
    reason (``data`` ``None``), so one bad file never stops the export.
    """
    names = tuple(columns) if "study_id" in columns else ("study_id", *columns)
    batch: list[dict[str, Any]] = []

    def flush() -> Iterator[ResearchStudy]:
        ids = [row["study_id"] for row in batch]
        reports = dose_objects.study_dose_reports(session, study_ids=ids)
        by_study: dict[int, list[dict[str, Any]]] = {}
        for report in reports:
            by_study.setdefault(report["study_id"], []).append(report)
        for row in batch:
            objects = []
            for report in by_study.get(row["study_id"], []):
                data, error = _read(settings, report["archive_path"])
                objects.append(ArchivedObjectData(report, data, error))
            yield ResearchStudy(row, objects)

    rows = list(
        store.iter_studies(
            session,
            flt=flt,
            sort=(("study_date", "asc"), ("study_time", "asc")),
            columns=("study_id",),
        )
    )
    # ids first (one narrow column), then each batch's rows: no cursor stays open while
    # the batch's dose objects are read
    ids = [r[0] for r in rows]
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        batch = [
            {name: full.get(name) for name in names}
            for full in dose_objects.study_rows(session, study_ids=chunk)
        ]
        yield from flush()
