"""Alert messages and a loopback SMTP server (aiosmtpd) for the alert e-mail and report tests.

The patient of the message is a real file of ``../shared/dicom``: its Study Instance
UID goes into the message (the study link), its Patient's Name, Patient ID and Birth
Date are what the e-mails and reports must never contain.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pydicom

#: The fluoroscopy RDSR whose study the alerts are about.
SOURCE_FILE = "RF-RDSR-Philips_Allura.dcm"


@dataclass(frozen=True)
class PlantedPatient:
    """The identifying values of the source file (must never appear in output)."""

    study_instance_uid: str
    names: tuple[str, ...]
    patient_id: str
    birth_dates: tuple[str, ...]

    def forbidden(self) -> list[str]:
        """Return every text that would identify the patient."""
        return [*self.names, self.patient_id, *self.birth_dates]


def planted_patient(dicom_dir: Path) -> PlantedPatient:
    """Read the patient's identifying values from :data:`SOURCE_FILE` with pydicom."""
    ds = pydicom.dcmread(dicom_dir / SOURCE_FILE, stop_before_pixels=True)
    name = ds.PatientName
    names = tuple(p for p in (str(name), name.family_name, name.given_name) if p)
    birth = str(ds.PatientBirthDate)
    assert name and ds.PatientID and birth, "the source file must carry a name, ID, birth date"
    iso = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    return PlantedPatient(str(ds.StudyInstanceUID), names, str(ds.PatientID), (birth, iso))


def alert_dict(study_instance_uid: str, *, alert_id: int = 1, **changes: Any) -> dict[str, Any]:
    """Return an alert dict as the alert service gives it (KAP over the NCRP 168 level),
    in the canonical unit it stores (612.5 Gy·cm² = 0.06125 Gy·m²; e-mails and reports
    show Gy·cm²)."""
    d: dict[str, Any] = {
        "alert_id": alert_id,
        "rule_id": "fluoro-kap-500",
        "rule_version": "1",
        "rule_title": "Fluoroscopy KAP at or above 500 Gy·cm²",
        "pack": "default",
        "quantity": "dap_total_gym2",
        "value": 0.06125,
        "unit": "Gy·m²",
        "threshold": 0.05,
        "threshold_source": "NCRP Report No. 168 (2010), Table 4.5: substantial radiation "
        "dose level",
        "device_name": "Allura Xper FD20 (Cath lab 2)",
        "study_date": "2026-11-30",
        "study_instance_uid": study_instance_uid,
        "modality": "XA",
        "exam": "Coronary angiography",
        "protocol": "Cardiac 15 fps <Low>",
        "pseudonym_short": "9f3ac2e1",
        "age_band": "60-69",
        "sex": "M",
        "state": "open",
        "outcome": None,
        "history": [],
    }
    d.update(changes)
    return d


def free_port() -> int:
    """Return a TCP port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps every message it receives."""

    received: list[tuple[list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message (aiosmtpd handler hook)."""
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        """Return the received messages, parsed."""
        return [
            message_from_bytes(raw, policy=policy.default)  # type: ignore[misc]
            for _, raw in self.received
        ]


class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that can be stopped and started again."""

    def __init__(self, port: int | None = None, **options: Any) -> None:
        self.port = port or free_port()
        self.mailbox = Mailbox()
        self.options = options  # aiosmtpd Controller / SMTP options (TLS, authentication)
        self._controller: Any = None

    def start(self) -> None:
        """Start listening."""
        from aiosmtpd.controller import Controller

        self._controller = Controller(
            self.mailbox, hostname="127.0.0.1", port=self.port, **self.options
        )
        self._controller.start()

    def stop(self) -> None:
        """Stop listening (connections are refused afterwards)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def body_text(message: EmailMessage) -> str:
    """Return the decoded text body of a received message."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


UTC_NOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
