"""Tests of kerma.dicom.reader: one pass over the bytes gives the dataset and the truncation.

The one-pass reader must agree with pydicom (the same values, the same SR content tree)
and with the structural walk of :mod:`kerma.dicom.integrity` (the same truncation
verdict) on every shared object, and on each of them cut short at many places.
"""

from __future__ import annotations

import random
import zlib
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from kerma.dicom.extract import extract_dataset, inspect_bytes, read_with_pydicom
from kerma.dicom.integrity import find_truncation
from kerma.dicom.reader import read_bytes
from kerma.dicom.tree import TREE_ATTRIBUTE, from_dataset
from kerma.errors import UnreadableObjectError
from kerma.records import DoseReport, Rejection
from tests.conftest import CASES_DIR, DICOM_DIR

pytestmark = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom is absent")

SHARED_FILES = sorted([*DICOM_DIR.glob("*.dcm"), *CASES_DIR.glob("*.dcm")])


def _ids(path: Path) -> str:
    """Return a short test id."""
    return path.stem[:40]


class TestAgreesWithPydicom:
    """Values, content tree and dose record equal those of a pydicom read."""

    @pytest.mark.parametrize("path", SHARED_FILES, ids=_ids)
    def test_same_tree_and_record(self, path: Path) -> None:
        """The tree built from the bytes equals the one built from pydicom's dataset."""
        data = path.read_bytes()
        obj = read_bytes(data, name=path.name)
        assert obj.truncation is None
        reference = read_with_pydicom(BytesIO(data))
        tree = obj.dataset.__dict__.get(TREE_ATTRIBUTE)
        if tree is not None:  # None: read by the pydicom fallback (e.g. big endian)
            assert tree.values() == from_dataset(reference).values()
        try:
            ours = extract_dataset(obj.dataset, file=path.name).to_dict()
        except Exception as exc:  # both must fail alike
            ours = repr(exc)
        try:
            theirs = extract_dataset(reference, file=path.name).to_dict()
        except Exception as exc:
            theirs = repr(exc)
        assert ours == theirs


class TestTruncation:
    """The one-pass check gives the structural walk's verdict."""

    @pytest.mark.parametrize("path", SHARED_FILES, ids=_ids)
    def test_cuts_agree_with_structural_walk(self, path: Path) -> None:
        """Ten cuts of each object: truncated exactly when the walk says so."""
        data = path.read_bytes()
        rng = random.Random(path.name)
        for cut in sorted({rng.randrange(140, len(data)) for _ in range(10)}):
            part = data[:cut]
            expected = find_truncation(part)
            try:
                found = read_bytes(part, name=path.name).truncation
            except UnreadableObjectError:
                # cut at an element boundary before (0008,0016): nothing to read either way
                assert expected is None
                continue
            assert (found is None) == (expected is None), (cut, found, expected)

    def test_truncated_rdsr_is_rejected_with_where(self) -> None:
        """An RDSR cut inside its content tree is rejected, saying it is incomplete."""
        data = (DICOM_DIR / "RF-RDSR-Philips_Azurion.dcm").read_bytes()[:20000]
        result = inspect_bytes(data, name="cut.dcm")
        assert isinstance(result, Rejection)
        assert "the file is incomplete" in result.reason


def _resave(path: Path, syntax: str) -> bytes:
    """Return ``path`` written again in another transfer syntax."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = BytesIO()
    ds.save_as(buffer, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    return buffer.getvalue()


class TestEncodings:
    """Transfer syntaxes and layouts read like the original."""

    RDSR = DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm"

    def _record(self, data: bytes) -> dict:
        result = inspect_bytes(data, name="x.dcm")
        assert isinstance(result, DoseReport), getattr(result, "reason", result)
        record = result.to_dict()
        record.pop("warnings")
        return record

    def test_implicit_vr_same_record(self) -> None:
        """Implicit VR Little Endian gives the same record as Explicit VR."""
        original = self._record(self.RDSR.read_bytes())
        assert self._record(_resave(self.RDSR, ImplicitVRLittleEndian)) == original

    def test_deflated_same_record_and_cut_detected(self) -> None:
        """Deflated Explicit VR gives the same record; a cut deflate stream is truncated."""
        ds = pydicom.dcmread(self.RDSR)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        assert self._record(data) == self._record(self.RDSR.read_bytes())
        assert read_bytes(data[: len(data) - 200]).truncation is not None
        assert zlib  # the stream is raw deflate (PS3.5 A.5)

    def test_bare_dataset_without_preamble_read_by_pydicom(self) -> None:
        """A bare Implicit VR dataset (no DICM preamble) is read through pydicom."""
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        ds = pydicom.dcmread(self.RDSR)
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, True
        write_dataset(buffer, ds)
        bare = buffer.getvalue()
        assert bare[128:132] != b"DICM"
        assert self._record(bare) == self._record(self.RDSR.read_bytes())

    def test_not_dicom_is_unreadable(self) -> None:
        """Text is not DICOM."""
        with pytest.raises(UnreadableObjectError, match="not a DICOM file"):
            read_bytes(b"hello, this is not DICOM\n" * 10)

    def test_pixels_added_without_second_parse(self) -> None:
        """Pixel data is left out, then added from the recorded positions."""
        path = DICOM_DIR / "NM-PetIm-Siemens.dcm"
        obj = read_bytes(path.read_bytes())
        assert "PixelData" not in obj.dataset
        ds = obj.with_pixels()
        reference = pydicom.dcmread(path)
        assert ds.PixelData == reference.PixelData
