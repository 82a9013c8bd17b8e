"""Synthetic hostile objects of the limit tests: a deflate bomb and an oversized object.

Both are built by hand (pydicom cannot hold a 2 GB element in memory): a CT RDSR's
elements up to and including its UIDs, encoded explicit VR little endian, then one
huge private OB element of zeros. The bomb deflates that data set (raw deflate, PS3.5
A.5) in streamed pieces, so building it never holds the inflated bytes; the oversized
object is written to disk piece by piece.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    XRayRadiationDoseSRStorage,
    generate_uid,
)

from tests.conftest import DICOM_DIR

#: Zeros written or deflated at a time.
PIECE_BYTES = 16 * 1024 * 1024


def _head(transfer_syntax: str) -> tuple[bytes, bytes, str]:
    """Return (file meta incl. preamble, data set head, SOP Instance UID) of a new object."""
    base = pydicom.dcmread(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", stop_before_pixels=True)
    head = Dataset()
    for elem in base:
        if elem.tag <= 0x0020000E:  # up to (0020,000E) Series Instance UID
            head.add(elem)
    head.SOPClassUID = XRayRadiationDoseSRStorage
    head.SOPInstanceUID = generate_uid()
    head.StudyInstanceUID = generate_uid()
    head.SeriesInstanceUID = generate_uid()
    head.PatientID = "KERMA-LIMIT-TEST"
    head.PatientName = "Limit^Test"
    meta = base.file_meta
    meta.MediaStorageSOPClassUID = XRayRadiationDoseSRStorage
    meta.MediaStorageSOPInstanceUID = head.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta_buf = DicomBytesIO()
    meta_buf.is_little_endian, meta_buf.is_implicit_VR = True, False
    write_file_meta_info(meta_buf, meta)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, head)
    return b"\0" * 128 + b"DICM" + meta_buf.getvalue(), buf.getvalue(), str(head.SOPInstanceUID)


def _ob_header(length: int) -> bytes:
    """Return the header of a private (0009,1010) OB element of ``length`` bytes."""
    creator = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 6) + b"KERMA "
    return creator + struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, length)


def deflate_bomb(path: Path, inflated_bytes: int = 2200 * 1024 * 1024) -> str:
    """Write a Deflated Explicit VR Little Endian RDSR inflating to ``inflated_bytes``.

    Returns its SOP Instance UID. The file is about a thousandth of the inflated size
    (deflate's largest ratio is about 1:1032).
    """
    meta, head, sop_instance_uid = _head(DeflatedExplicitVRLittleEndian)
    padding = inflated_bytes - len(head) - 24
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(PIECE_BYTES)
    with path.open("wb") as fh:
        fh.write(meta)
        fh.write(deflater.compress(head + _ob_header(padding)))
        left = padding
        while left > 0:
            piece = zeros if left >= PIECE_BYTES else zeros[:left]
            fh.write(deflater.compress(piece))
            left -= len(piece)
        fh.write(deflater.flush())
    return sop_instance_uid


def oversized_object(path: Path, size_bytes: int) -> str:
    """Write an Explicit VR Little Endian RDSR of about ``size_bytes``; return its UID."""
    meta, head, sop_instance_uid = _head(ExplicitVRLittleEndian)
    padding = size_bytes - len(meta) - len(head) - 24
    padding -= padding % 2
    zeros = bytes(PIECE_BYTES)
    with path.open("wb") as fh:
        fh.write(meta + head + _ob_header(padding))
        left = padding
        while left > 0:
            piece = zeros if left >= PIECE_BYTES else zeros[:left]
            fh.write(piece)
            left -= len(piece)
    return sop_instance_uid


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size (VmHWM) of a running process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")
