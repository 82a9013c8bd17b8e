"""Text decoded as the bytes are: UTF-8 under a single-byte label, in any script.

Objects are built in code: a DX image whose Study Description and Station Name, and an
RDSR whose protocol (TEXT) and a Code Meaning, hold the bytes a device wrote under a
given (0008,0005) Specific Character Set (or none).
"""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag

from kerma.dicom.extract import inspect_bytes
from kerma.dicom.text import DecodedText, decode_text
from kerma.records import DoseReport
from tests.conftest import DICOM_DIR

#: Texts in several scripts, as a radiographer would type them.
SCRIPTS = {
    "latin": "Thorax pädiatrisch",
    "cyrillic": "Рентгенография грудной клетки",
    "greek": "Ακτινογραφία θώρακος",
    "cjk": "胸部正面撮影",
    "arabic": "أشعة الصدر",
}


def store(ds: Dataset, keyword: str, vr: str, data: bytes) -> None:
    """Store ``data`` as the raw bytes of ``keyword`` (padded to even length)."""
    data += b" " * (len(data) % 2)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(data), data, 0, False, True)


def to_bytes(ds: Dataset) -> bytes:
    """Return ``ds`` written as a Part 10 file (Explicit VR Little Endian)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def label(data: bytes, charset: str) -> bytes:
    """Return a file written under ISO_IR 100 relabelled ``charset``, bytes untouched.

    pydicom re-encodes text when it writes, which would change bytes that are invalid
    in the label; Latin-1 keeps every byte, and the label is patched afterwards.
    """
    if charset == "ISO_IR 100":
        return data
    old = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
    new_value = charset.encode("ascii")
    new_value += b" " * (len(new_value) % 2)
    new = b"\x08\x00\x05\x00CS" + len(new_value).to_bytes(2, "little") + new_value
    assert old in data
    patched = data.replace(old, new, 1)
    # the file meta group length is unchanged: (0008,0005) is in the data set
    return patched


def dx_image(charset: str | None, description: bytes, station: bytes) -> bytes:
    """Return a DX image whose Study Description and Station Name hold these bytes."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.Modality = "DX"
    ds.StudyDate, ds.StudyTime = "20240301", "101500"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240301", "101733"
    ds.Manufacturer = "Test Medical"
    ds.ImageAndFluoroscopyAreaDoseProduct = "1.5"
    ds.KVP = "80"
    store(ds, "StudyDescription", "LO", description)
    store(ds, "StationName", "SH", station[:16])
    data = to_bytes(ds)
    return label(data, charset) if charset is not None else data


def inspect(data: bytes) -> DoseReport:
    """Return the report of an object's bytes, failing the test when it is rejected."""
    result = inspect_bytes(data, name="test.dcm")
    assert isinstance(result, DoseReport), getattr(result, "reason", result)
    return result


class TestMislabelledUtf8:
    """UTF-8 bytes under a single-byte label are decoded as UTF-8, with a warning."""

    @pytest.mark.parametrize("script", sorted(SCRIPTS))
    @pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 101", "ISO_IR 148"])
    def test_image_header_text_in_any_script(self, script: str, charset: str) -> None:
        """Study Description in UTF-8 labelled with a Latin set reads as written."""
        text = SCRIPTS[script]
        report = inspect(dx_image(charset, text.encode("utf-8"), b"ROOM 1"))
        assert report.study.study_description == text
        assert any("stored as UTF-8" in w and "decoded as UTF-8" in w for w in report.warnings), (
            report.warnings
        )

    @pytest.mark.parametrize(
        ("charset", "script"),
        [("ISO_IR 144", "cyrillic"), ("ISO_IR 126", "greek"), ("ISO_IR 127", "arabic")],
    )
    def test_utf8_under_its_own_script_set(self, charset: str, script: str) -> None:
        """UTF-8 Cyrillic labelled ISO_IR 144 (Cyrillic) is UTF-8 too: C1 controls give it away."""
        text = SCRIPTS[script]
        report = inspect(dx_image(charset, text.encode("utf-8"), b"ROOM 1"))
        assert report.study.study_description == text
        assert any("decoded as UTF-8" in w for w in report.warnings)

    @pytest.mark.parametrize("script", sorted(SCRIPTS))
    def test_no_character_set_utf8(self, script: str) -> None:
        """No Specific Character Set: non-ASCII bytes read as UTF-8, with a warning."""
        text = SCRIPTS[script]
        report = inspect(dx_image(None, text.encode("utf-8"), "Рентген".encode()))
        assert report.study.study_description == text
        assert report.device.station_name == "Рентген"
        assert any("no Specific Character Set" in w for w in report.warnings)

    def test_no_character_set_latin1_bytes(self) -> None:
        """No Specific Character Set and not UTF-8: read as Latin-1, with a warning."""
        report = inspect(dx_image(None, "Thorax pädiatrisch".encode("latin-1"), b"ROOM"))
        assert report.study.study_description == "Thorax pädiatrisch"
        assert any("decoded as Latin-1" in w for w in report.warnings)


class TestDeclaredTextKept:
    """Text valid in its declared set is read as declared, without a warning."""

    @pytest.mark.parametrize(
        ("charset", "codec", "text"),
        [
            ("ISO_IR 100", "latin-1", "Müller Straße Röntgen"),
            ("ISO_IR 144", "iso8859_5", "РЕНТГЕН ГРУДНОЙ"),
            ("ISO_IR 144", "iso8859_5", "ПА"),  # two capitals that happen to be valid UTF-8
            ("ISO_IR 126", "iso8859_7", "Ακτινογραφία"),
            ("ISO_IR 192", "utf-8", "胸部正面撮影 Рентген"),
            ("GB18030", "gb18030", "胸部正位片"),
        ],
        ids=["latin1", "cyrillic", "cyrillic-short", "greek", "utf8", "gb18030"],
    )
    def test_declared_set(self, charset: str, codec: str, text: str) -> None:
        """The bytes of ``text`` in ``codec``, labelled ``charset``, give ``text``."""
        report = inspect(dx_image(charset, text.encode(codec), b"ROOM 1"))
        assert report.study.study_description == text
        assert not any("decoded as" in w for w in report.warnings), report.warnings


class TestDecodeText:
    """decode_text on bytes directly."""

    def test_ascii_fast_path(self) -> None:
        """ASCII is ASCII whatever the label; padding is stripped."""
        assert decode_text(b"CHEST PA ", ["latin_1"]) == "CHEST PA"

    def test_decoded_otherwise_carries_warning(self) -> None:
        """A text not read as declared is a DecodedText with its warning."""
        text = decode_text("Рентген".encode(), ["latin_1"])
        assert isinstance(text, DecodedText)
        assert text == "Рентген"
        assert "Latin-1 (ISO_IR 100)" in text.warning

    def test_invalid_utf8_under_iso_ir_192(self) -> None:
        """Bytes declared UTF-8 that are not: Latin-1, with a warning."""
        text = decode_text("Müller".encode("latin-1"), ["UTF8"])
        assert text == "Müller"
        assert isinstance(text, DecodedText)


@pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom is absent")
class TestSRText:
    """Text inside an SR content tree follows the same rule."""

    @pytest.mark.parametrize("script", sorted(SCRIPTS))
    def test_protocol_and_code_meaning(self, script: str) -> None:
        """Acquisition Protocol (TEXT) and a Code Meaning in UTF-8 under ISO_IR 100."""
        import pydicom
        from pydicom.sr.codedict import codes

        from kerma.dicom.content import concept_of

        ds = pydicom.dcmread(DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm")
        ds.SpecificCharacterSet = "ISO_IR 100"  # what the device claims
        text = SCRIPTS[script]
        stack = list(ds.ContentSequence)
        done = 0
        while stack:
            item = stack.pop()
            stack.extend(item.get("ContentSequence", []))
            concept = concept_of(item)
            if concept == codes.DCM.AcquisitionProtocol:
                store(item, "TextValue", "UT", text.encode("utf-8"))
                done += 1
            elif concept == codes.DCM.TargetRegion:
                store(item.ConceptCodeSequence[0], "CodeMeaning", "LO", text.encode("utf-8"))
        assert done
        report = inspect(to_bytes(ds))
        assert {e.acquisition_protocol for e in report.events} == {text}
        assert {e.target_region for e in report.events} == {text}
        assert any("decoded as UTF-8" in w for w in report.warnings)
