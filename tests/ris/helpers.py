"""Helpers of the RIS tests: HL7 v2 messages, an MLLP client, dose objects with an order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from tests.conftest import DICOM_DIR

#: A real CT RDSR (Siemens Definition Flash), given a child's identity below.
SOURCE_RDSR = DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm"

#: Planted identity: distinctive, so a scan finds them wherever they leak.
PATIENT_ID = "ZQXPID4711"
ACCESSION_BEFORE = "ZQXACC0001"
ACCESSION_AFTER = "ZQXACC0002"
PATIENT_NAME = "Zqxplant^Ottilie"


def hl7_message(*segments: str) -> bytes:
    """Return an HL7 v2 message: segments joined by CR (HL7 v2.5.1 2.5.3)."""
    return ("\r".join(segments) + "\r").encode("utf-8")


def msh(message_type: str, control_id: str, *, application: str = "RIS") -> str:
    """Return an MSH segment from ``application`` to KERMA."""
    return (
        f"MSH|^~\\&|{application}|HOSP|KERMA|HOSP|20241101120000||{message_type}|"
        f"{control_id}|P|2.5.1"
    )


def pid(patient_id: str = PATIENT_ID) -> str:
    """Return a PID segment with a planted name and birth date."""
    return f"PID|1||{patient_id}^^^HOSP^MR||{PATIENT_NAME}||20160304|F"


def orm(
    control_id: str,
    accession: str,
    *,
    weight: str = "23.5",
    unit: str = "kg",
    height: str | None = "1.22",
    height_unit: str = "m",
    date: str = "20241101",
) -> bytes:
    """Return an ORM^O01 new order (IHE RAD-2/RAD-4 layout) with weight and height OBX."""
    segments = [
        msh("ORM^O01", control_id),
        pid(),
        "PV1|1|O|RAD^^^HOSP",
        f"ORC|NW|P{accession}|F{accession}||SC||||{date}||||||||PAEDS^Paediatric ward",
        f"OBR|1|P{accession}|F{accession}|CTCH^CT Chest paediatric^L|||{date}0900|||||||||"
        f"||{accession}||||||CT",
        f"OBX|1|NM|29463-7^Body weight^LN||{weight}|{unit}|||||F",
    ]
    if height is not None:
        segments.append(f"OBX|2|NM|8302-2^Body height^LN||{height}|{height_unit}|||||F")
    return hl7_message(*segments)


def send(port: int, messages: list[bytes], *, host: str = "127.0.0.1", ssl=None) -> list[bytes]:
    """Send messages over one MLLP connection (python-hl7's asyncio client); return the ACKs."""
    from hl7.mllp import open_hl7_connection

    async def run() -> list[bytes]:
        reader, writer = await open_hl7_connection(host, port, ssl=ssl)
        acks = []
        try:
            for message in messages:
                writer.writeblock(message)
                await writer.drain()
                acks.append(bytes(await asyncio.wait_for(reader.readblock(), 60)))
        finally:
            writer.close()
            await writer.wait_closed()
        return acks

    return asyncio.run(run())


def ack_fields(ack: bytes) -> dict[str, list[str]]:
    """Return the fields of each segment of an ACK by segment name (MSA, ERR)."""
    out = {}
    for segment in ack.decode("utf-8").strip("\r").split("\r"):
        fields = segment.split("|")
        out[fields[0]] = fields
    return out


def write_rdsr(
    folder: Path,
    name: str,
    *,
    accession: str,
    study_date: str = "20241101",
    patient_id: str = PATIENT_ID,
    description: str = "CT Chest",
) -> Path:
    """Write the real CT RDSR as a child's study: planted identity, no weight, new UIDs."""
    ds = pydicom.dcmread(SOURCE_RDSR)
    ds.PatientID = patient_id
    ds.PatientName = PATIENT_NAME
    ds.AccessionNumber = accession
    ds.StudyDate = study_date
    ds.PatientAge = "008Y"
    ds.PatientBirthDate = "20160304"
    ds.StudyDescription = description
    for keyword in ("PatientWeight", "PatientSize"):
        if keyword in ds:
            del ds[keyword]
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path
