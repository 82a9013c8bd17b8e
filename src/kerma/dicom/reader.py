"""Read a DICOM object from its bytes in one pass: decode and truncation check together.

An archive must not store a half-received object as if it were whole: pydicom reads a
file cut short inside an undefined-length sequence without an error (the sequence
simply ends at the end of the data), so an RDSR cut in the middle would read as a
smaller, valid-looking report. Reading every object twice, once with pydicom and once
to walk its element structure (:mod:`kerma.dicom.integrity`), cost more than the whole
extraction of a large report. :func:`read_bytes` does both in one walk over the bytes:

- every element's tag and length is checked against the end of the data (and every
  undefined-length sequence and item against its delimiter), exactly as
  :func:`kerma.dicom.integrity.find_truncation` does;
- the top-level elements become the raw elements of a :class:`pydicom.dataset.FileDataset`
  (values are decoded by pydicom only when an extractor reads them; sequences other than
  the SR content tree are parsed by pydicom on first access);
- the SR content tree ((0040,A730) Content Sequence) is kept as raw items (tag ->
  bytes) and turned into light :class:`kerma.dicom.tree.ContentItem` objects, which
  the template readers use instead of one pydicom dataset per content item.

Pixel data is walked (for the truncation check) but only kept when asked for
(``with_pixels``, e.g. the patient-size measurement of a CT image), so an image is read
once whatever is done with it.

What the walk does not handle is handed to pydicom as before (:func:`read_dataset` and
a separate :func:`~kerma.dicom.integrity.find_truncation`): a file without the
``DICM`` preamble, Explicit VR Big Endian, and structures the walk does not expect
(e.g. an explicit VR element whose VR is not two capital letters).

A deflated data set is inflated in bounded steps (:mod:`kerma.dicom.inflate`) and
refused (:class:`~kerma.errors.ObjectTooLargeError`) when it inflates beyond
``max_inflated_bytes``; it never reaches pydicom's unbounded ``zlib.decompress``.

May import nothing of Kerma's but ``kerma.errors`` and ``kerma.dicom``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import zlib
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import VR

from kerma.dicom.decode_errors import DECODE_ERRORS
from kerma.dicom.inflate import DEFAULT_MAX_INFLATED_BYTES, inflate, inflated_size
from kerma.dicom.tree import (
    CONCEPT_NAME_CODE_SEQUENCE,
    CONTENT_SEQUENCE,
    SPECIFIC_CHARACTER_SET,
    TREE_ATTRIBUTE,
    VALUE_TYPE,
    ContentItem,
    RawItem,
    from_raw,
)
from kerma.errors import ObjectTooLargeError, TruncatedError

UNDEFINED: Final = 0xFFFFFFFF
ITEM: Final = 0xFFFEE000
ITEM_DELIMITER: Final = 0xFFFEE00D
SEQUENCE_DELIMITER: Final = 0xFFFEE0DD
#: Pixel data elements: reading stops before them unless pixels are asked for (as
#: pydicom's ``stop_before_pixels``); (7FE0,0010) Pixel Data, (7FE0,0008) Float and
#: (7FE0,0009) Double Float Pixel Data.
PIXEL_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
MAX_DEPTH: Final = 64
#: Top-level sequences kept as raw items for the SR content tree (the root item).
ROOT_SEQUENCES: Final = frozenset({CONTENT_SEQUENCE, CONCEPT_NAME_CODE_SEQUENCE})
#: The Value Representations of PS3.5 Table 6.2-1 (pydicom's ``VR`` members); an
#: explicit VR outside them cannot be decoded (pydicom raises ``NotImplementedError``
#: when the value is first read, long after the read itself succeeded).
KNOWN_VRS: Final = frozenset(str(v) for v in VR)
#: Attribute of a dataset read here that holds what reading dropped, one text each.
READ_WARNINGS_ATTRIBUTE: Final = "_kerma_read_warnings"
_HEADER = struct.Struct("<HHL")  # tag group, element, 4-byte length (implicit VR / items)
_EXPLICIT = struct.Struct("<HH2sH")  # tag group, element, VR, 2-byte length
_LONG = struct.Struct("<L")


#: The raw elements of a data set, by tag.
Elements = MutableMapping[BaseTag, DataElement | RawDataElement]


class _Unsupported(Exception):
    """A structure the one-pass walk does not read; pydicom reads the object instead."""


@dataclass
class DicomObject:
    """A DICOM object read from its bytes.

    Attributes
    ----------
    dataset : pydicom.dataset.Dataset
        The data set (with ``file_meta`` when the object had one); pixel data only when
        read with ``with_pixels``.
    truncation : str or None
        Where and how the bytes are cut short (e.g. ``"the data ends at byte 5120
        inside a sequence item (no item delimiter)"``), or ``None`` when complete.
    """

    dataset: Dataset
    truncation: str | None = None
    data: bytes = b""
    rest: list[tuple[int, str | None, int, int, int]] | None = None
    implicit: bool = False

    def with_pixels(self) -> Dataset:
        """Return the dataset with the pixel data (and what follows it) added.

        Uses the positions the walk recorded, so the object is not parsed again; a
        dataset read by the pydicom fallback already has them.
        """
        ds = self.dataset
        for tag, vr, length, start, end in self.rest or []:
            ds[BaseTag(tag)] = RawDataElement(
                BaseTag(tag), vr, length, self.data[start:end], start, self.implicit, True
            )
        self.rest = None
        return ds


@functools.lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str | None:
    """Return the dictionary VR of a tag, ``None`` when unknown (private tags)."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def read_bytes(
    data: bytes,
    *,
    name: str = "<bytes>",
    with_pixels: bool = False,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> DicomObject:
    """Read a DICOM Part 10 object from its bytes, checking it for truncation on the way.

    Parameters
    ----------
    data : bytes
        The object as received or stored (Part 10 file with preamble and file meta).
    name : str, optional
        How messages name it (its path or source).
    with_pixels : bool, optional
        Keep (7FE0,0010) Pixel Data and what follows it. Default ``False``.
    max_inflated_bytes : int, optional
        Largest inflated data set of a deflated object (``settings.max_inflated_bytes``).

    Returns
    -------
    DicomObject
        The dataset and where the data is cut short (``None`` when complete).

    Raises
    ------
    kerma.errors.ObjectTooLargeError
        When a deflated data set inflates to more than ``max_inflated_bytes``.
    kerma.errors.UnreadableObjectError
        When the bytes are not DICOM or cannot be decoded (from the pydicom fallback).
    """
    try:
        result = _read_fast(
            data, name=name, with_pixels=with_pixels, max_inflated_bytes=max_inflated_bytes
        )
    except ObjectTooLargeError:
        raise
    except (_Unsupported, struct.error, IndexError, KeyError, UnicodeError, ValueError):
        # TruncatedError is handled inside; anything else is a structure the walk does
        # not expect: pydicom reads the object as before
        result = None
    if result is None:
        from kerma.dicom.extract import read_with_pydicom
        from kerma.dicom.integrity import find_truncation

        _check_deflated_size(data, name=name, max_inflated_bytes=max_inflated_bytes)
        stream = io.BytesIO(data)
        stream.name = name
        ds = read_with_pydicom(stream, stop_before_pixels=not with_pixels)
        drop_undecodable(ds)
        return DicomObject(ds, find_truncation(data), data)
    if result.truncation is None and "SOPClassUID" not in result.dataset:
        from kerma.errors import UnreadableObjectError

        raise UnreadableObjectError(
            f"Unable to read {name}: it has no (0008,0016) 'SOP Class UID'; it may be "
            "truncated or not a DICOM object."
        )
    drop_undecodable(result.dataset)
    return result


def _check_deflated_size(data: bytes, *, name: str, max_inflated_bytes: int) -> None:
    """Refuse a deflated object pydicom would inflate beyond ``max_inflated_bytes``.

    pydicom inflates a Deflated Explicit VR Little Endian data set in one call; before
    the fallback hands it an object, the file meta is read (pydicom) and, when the
    transfer syntax is deflated, the inflated size is counted in bounded steps.

    Raises
    ------
    ObjectTooLargeError
        When it inflates beyond ``max_inflated_bytes``.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(data)
    try:
        read_preamble(stream, False)
        meta = _read_file_meta_info(stream)
        syntax = meta.get("TransferSyntaxUID")
    except DECODE_ERRORS:  # not a Part 10 file, or a file meta that does not decode:
        return  # pydicom reads (or rejects) it without inflating anything
    if syntax == DeflatedExplicitVRLittleEndian:
        with contextlib.suppress(zlib.error):
            inflated_size(
                (memoryview(data)[stream.tell() :],), max_bytes=max_inflated_bytes, name=name
            )


def drop_undecodable(ds: Dataset, *, deep: bool = False) -> list[str]:
    """Remove elements whose value cannot be decoded; return why, one text per element.

    An element whose explicit VR is not a DICOM VR (e.g. a flipped byte in the VR of
    (0010,0030) 'Patient's Birth Date') reads without an error but raises
    ``NotImplementedError`` when an extractor first touches its value. It is removed
    here, so that an element Kerma may not even need never costs the report, and the
    reason is kept on the dataset (:data:`READ_WARNINGS_ATTRIBUTE`) for the record's
    warnings.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A dataset as read (raw elements not yet decoded); changed in place.
    deep : bool, optional
        Also decode every element inside sequences (which pydicom parses only when they
        are first read) and remove those that fail, or a whole sequence that does not
        parse. Costly on large objects: used only after an extraction met such a value.
        Default ``False``: the top level, by VR only.

    Returns
    -------
    list of str
        One warning per element removed (also added to those stored on ``ds``).
    """
    warnings: list[str] = []
    _drop(ds, warnings, deep=deep, depth=0)
    if warnings:
        kept = ds.__dict__.get(READ_WARNINGS_ATTRIBUTE, [])
        object.__setattr__(ds, READ_WARNINGS_ATTRIBUTE, kept + warnings)
    return warnings


def _drop(ds: Dataset, warnings: list[str], *, deep: bool, depth: int) -> None:
    """Remove the undecodable elements of one data set (and, ``deep``, of its items)."""
    from pydicom.errors import BytesLengthException

    elements = ds._dict
    for tag in list(elements):
        elem = elements[tag]
        vr = getattr(elem, "VR", None)
        if vr is not None and vr not in KNOWN_VRS:
            del elements[tag]
            shown = vr if isinstance(vr, str) and vr.isprintable() else repr(vr)
            warnings.append(
                f"element {BaseTag(tag)} has Value Representation {shown!s}, which is not "
                "a DICOM VR (PS3.5 6.2); its value cannot be decoded and was left out"
            )
            continue
        if not deep or tag in PIXEL_TAGS:
            continue
        try:
            value = ds[tag].value
        except (NotImplementedError, BytesLengthException, ValueError, TypeError) as exc:
            del elements[tag]
            warnings.append(
                f"element {BaseTag(tag)} cannot be decoded ({type(exc).__name__}: {exc}); left out"
            )
            continue
        if depth < MAX_DEPTH and isinstance(value, PydicomSequence) and value:
            for item in value:
                if isinstance(item, Dataset):
                    _drop(item, warnings, deep=True, depth=depth + 1)


def _read_fast(
    data: bytes, *, name: str, with_pixels: bool, max_inflated_bytes: int
) -> DicomObject:
    """Read with the one-pass walk; raise :class:`_Unsupported` for what it does not read."""
    if data[128:132] != b"DICM":
        raise _Unsupported("no DICM preamble")
    walker = _Walker(data, implicit=False)
    walker.pos = 132
    meta: Elements = {}
    syntax = ""
    try:
        while walker.pos + 8 <= len(data):
            (group,) = struct.unpack_from("<H", data, walker.pos)
            if group != 0x0002:
                break
            tag, vr, length, start = walker.header()
            if length == UNDEFINED or vr is None:
                raise _Unsupported("undefined length in the file meta information")
            end = walker.skip(start, length, len(data))
            value = data[start:end]
            if tag == 0x00020010:
                syntax = value.rstrip(b"\x00 ").decode("ascii", "replace")
            meta[BaseTag(tag)] = RawDataElement(
                BaseTag(tag), vr.decode("ascii"), length, value, start, False, True
            )
    except TruncatedError:
        return _truncated_meta(data, name)
    if not meta:
        raise _Unsupported("no file meta information")
    body, offset = data, walker.pos
    if syntax == ExplicitVRBigEndian:
        raise _Unsupported("big endian")
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            body, complete = inflate(
                memoryview(data)[walker.pos :], max_bytes=max_inflated_bytes, name=name
            )
        except zlib.error as exc:
            raise _Unsupported(f"deflated data: {exc}") from exc
        offset = 0
        if not complete:
            return DicomObject(
                _file_dataset({}, meta, data, name, implicit=False),
                "the deflated data set ends before its end of stream",
                data,
            )
    implicit = syntax == ImplicitVRLittleEndian
    walker = _Walker(body, implicit=implicit)
    elements: Elements = {}
    truncation: str | None = None
    try:
        walker.top_level(offset, elements, with_pixels=with_pixels)
    except TruncatedError as exc:
        truncation = str(exc)
    ds = _file_dataset(elements, meta, data, name, implicit=implicit)
    if walker.root:
        # the SR document's root content item is the data set itself (PS3.3 C.17.3)
        tree: ContentItem = from_raw(walker.root, ds._character_set)
        object.__setattr__(ds, TREE_ATTRIBUTE, tree)
    return DicomObject(ds, truncation, body, walker.rest, implicit)


def _truncated_meta(data: bytes, name: str) -> DicomObject:
    """Return an empty object cut inside its file meta information."""
    ds = FileDataset(name, Dataset(), preamble=data[:128], file_meta=FileMetaDataset())
    return DicomObject(ds, "the data ends inside the file meta information", data)


def _file_dataset(
    elements: Elements,
    meta: Elements,
    data: bytes,
    name: str,
    *,
    implicit: bool,
) -> FileDataset:
    """Return the FileDataset of the raw top-level elements, as pydicom's reader builds it."""
    dataset = Dataset(elements)
    encoding: Any = "iso8859"
    if SPECIFIC_CHARACTER_SET in elements:
        raw = elements[BaseTag(SPECIFIC_CHARACTER_SET)].value or b""
        declared = raw.decode("ascii", "replace").strip(" \x00")
        encoding = convert_encodings(declared.split("\\") if declared else [])
    dataset.set_original_encoding(implicit, True, encoding)
    file_meta = FileMetaDataset(Dataset(meta))
    ds = FileDataset(
        name,
        dataset,
        preamble=data[:128],
        file_meta=file_meta,
        is_implicit_VR=implicit,
        is_little_endian=True,
    )
    ds.set_original_encoding(implicit, True, dataset._character_set)
    return ds


class _Walker:
    """Walk tags and lengths of an encoded data set, keeping what the reader needs."""

    def __init__(self, data: bytes, *, implicit: bool) -> None:
        self.data = data
        self.size = len(data)
        self.implicit = implicit
        self.pos = 0
        #: SR root attributes: Value Type, Concept Name and Content Sequence (raw).
        self.root: RawItem = {}
        #: Elements left out before pixels: (tag, VR, length, value start, value end).
        self.rest: list[tuple[int, str | None, int, int, int]] = []

    # -- element headers ------------------------------------------------------------------

    def header(self, implicit: bool | None = None) -> tuple[int, bytes | None, int, int]:
        """Read the element header at ``pos``: (tag, VR or None, length, value start)."""
        data, pos = self.data, self.pos
        if pos + 8 > self.size:
            raise TruncatedError(f"the data ends at byte {self.size} inside an element header")
        implicit = self.implicit if implicit is None else implicit
        group, elem, length = _HEADER.unpack_from(data, pos)
        tag = (group << 16) | elem
        if implicit or group == 0xFFFE:
            self.pos = pos + 8
            return tag, None, length, pos + 8
        vr = data[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            if pos + 12 > self.size:
                raise TruncatedError(f"the data ends at byte {self.size} inside an element header")
            (length,) = _LONG.unpack_from(data, pos + 8)
            self.pos = pos + 12
            return tag, vr, length, pos + 12
        if not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B):
            raise _Unsupported(f"explicit VR {vr!r} is not a VR")
        self.pos = pos + 8
        return tag, vr, length >> 16, pos + 8

    def skip(self, start: int, length: int, end: int) -> int:
        """Return the end of a value of defined ``length``; raise when it runs past ``end``."""
        stop = start + length
        if stop > end:
            raise TruncatedError(
                f"an element at byte {start} declares {length} bytes but the data ends "
                f"after {end - start}"
            )
        self.pos = stop
        return stop

    def _is_sequence(self, tag: int, vr: bytes | None, length: int) -> bool:
        """Return whether an element is a sequence (SQ, or undefined-length UN/unknown)."""
        if vr is not None:
            return vr == b"SQ" or (length == UNDEFINED and vr == b"UN")
        dictionary = _dictionary_vr(tag)
        if dictionary is not None and dictionary.startswith("SQ"):
            return True
        return length == UNDEFINED and dictionary in (None, "UN")

    # -- the top-level data set -------------------------------------------------------------

    def top_level(self, start: int, elements: Elements, *, with_pixels: bool) -> None:
        """Walk the top-level data set, filling ``elements`` with raw elements.

        Raises :class:`TruncatedError` at a cut; the elements read until then are kept.
        """
        data, size, implicit = self.data, self.size, self.implicit
        self.pos = start
        keep = True
        while self.pos < size:
            tag, vr, length, value_start = self.header()
            if tag in (ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER):
                raise TruncatedError(f"unexpected delimiter at byte {value_start - 8}")
            if tag in PIXEL_TAGS and not with_pixels:
                keep = False  # stop_before_pixels: this and every later element
            value_end: int
            if self._is_sequence(tag, vr, length):
                build = keep and tag in ROOT_SEQUENCES
                items = self.sequence(value_start, length, depth=1, end=size, build=build)
                if build:
                    self.root[tag] = items
                value_end = self.pos
                vr_name: str | None = "SQ"
                stored_end = value_end
            elif length == UNDEFINED:
                value_end = self.fragments(size)
                vr_name = vr.decode("ascii") if vr is not None else None
                stored_end = value_end - 8  # the value stops before its delimiter
            else:
                value_end = self.skip(value_start, length, size)
                vr_name = vr.decode("ascii") if vr is not None else None
                stored_end = value_end
                if keep and tag == VALUE_TYPE:
                    self.root[tag] = data[value_start:value_end]
            if keep:
                elements[BaseTag(tag)] = RawDataElement(
                    BaseTag(tag),
                    vr_name,
                    length,
                    data[value_start:stored_end],
                    value_start,
                    implicit,
                    True,
                )
            else:
                self.rest.append((tag, vr_name, length, value_start, stored_end))

    # -- sequences and items ------------------------------------------------------------------

    def sequence(
        self, start: int, length: int, *, depth: int, end: int, build: bool
    ) -> list[RawItem] | None:
        """Walk the items of a sequence; return them as raw items when ``build``."""
        if depth > MAX_DEPTH:
            raise _Unsupported("sequences nested too deeply")
        seq_end = end if length == UNDEFINED else start + length
        if seq_end > end:
            raise TruncatedError(
                f"a sequence at byte {start} declares {length} bytes but the data ends "
                f"after {end - start}"
            )
        self.pos = start
        items: list[RawItem] | None = [] if build else None
        data = self.data
        while self.pos < seq_end:
            pos = self.pos
            if pos + 8 > self.size:
                raise TruncatedError(f"the data ends at byte {self.size} inside an element header")
            group, elem, item_length = _HEADER.unpack_from(data, pos)
            tag = (group << 16) | elem
            self.pos = pos + 8
            if tag == SEQUENCE_DELIMITER:
                return items
            if tag != ITEM:
                raise TruncatedError(f"expected a sequence item at byte {pos}")
            item: RawItem | None = {} if build else None
            if item_length == UNDEFINED:
                self.elements(self.pos, seq_end, depth=depth, until_delimiter=True, item=item)
            else:
                item_end = self.pos + item_length
                if item_end > seq_end:
                    raise TruncatedError(
                        f"a sequence item at byte {self.pos} declares {item_length} bytes but "
                        f"the data ends after {seq_end - self.pos}"
                    )
                self.elements(self.pos, item_end, depth=depth, until_delimiter=False, item=item)
            if items is not None and item is not None:
                items.append(item)
        if length == UNDEFINED:
            raise TruncatedError(
                f"the data ends at byte {self.size} inside a sequence (no sequence delimiter)"
            )
        return items

    def elements(
        self,
        start: int,
        end: int,
        *,
        depth: int,
        until_delimiter: bool,
        item: RawItem | None,
    ) -> None:
        """Walk the elements of an item from ``start`` to ``end`` (or its delimiter).

        With ``item``, each element's value bytes (or, for a sequence, its raw items) are
        stored under its tag. An item of an explicit VR data set may be encoded in
        implicit VR (pydicom reads those too): decided on its first element.
        """
        data = self.data
        self.pos = start
        implicit = self.implicit
        if not implicit and start + 6 <= self.size and start < end:
            peek = data[start + 4 : start + 6]
            group = data[start + 2 : start + 4] + data[start : start + 2]
            if group != b"\xff\xfe" and not (0x40 < peek[0] < 0x5B and 0x40 < peek[1] < 0x5B):
                implicit = True
        saved = self.implicit
        self.implicit = implicit
        try:
            while self.pos < end:
                tag, vr, length, value_start = self.header()
                if tag == ITEM_DELIMITER and until_delimiter:
                    return
                if tag in (ITEM_DELIMITER, SEQUENCE_DELIMITER, ITEM):
                    raise TruncatedError(f"unexpected delimiter at byte {value_start - 8}")
                if self._is_sequence(tag, vr, length):
                    items = self.sequence(
                        value_start, length, depth=depth + 1, end=end, build=item is not None
                    )
                    if item is not None:
                        item[tag] = items
                elif length == UNDEFINED:
                    self.fragments(end)
                else:
                    stop = self.skip(value_start, length, end)
                    if item is not None:
                        item[tag] = data[value_start:stop]
            if until_delimiter:
                raise TruncatedError(
                    f"the data ends at byte {self.size} inside a sequence item (no item delimiter)"
                )
        finally:
            self.implicit = saved

    def fragments(self, end: int) -> int:
        """Skip the items of encapsulated pixel data; return the end of its delimiter."""
        data = self.data
        while self.pos < end:
            pos = self.pos
            if pos + 8 > self.size:
                raise TruncatedError(
                    f"the data ends at byte {self.size} inside encapsulated pixel data"
                )
            group, elem, length = _HEADER.unpack_from(data, pos)
            tag = (group << 16) | elem
            self.pos = pos + 8
            if tag == SEQUENCE_DELIMITER:
                return self.pos
            if tag != ITEM:
                raise TruncatedError(f"expected a pixel data fragment at byte {pos}")
            self.skip(self.pos, length, end)
        raise TruncatedError(f"the data ends at byte {self.size} inside encapsulated pixel data")
