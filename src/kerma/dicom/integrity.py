"""Check that a DICOM byte stream is complete before its record is trusted.

pydicom reads a file cut short inside an undefined-length sequence without an error:
the sequence simply ends at the end of the file, and an RDSR cut in the middle reads
as a smaller, valid-looking report (fewer irradiation events). A registry must not
store that: an object is rejected when a length runs past the end of the data or an
undefined-length sequence or item is never closed.

:mod:`kerma.dicom.reader` makes this check in the same walk that reads the object. This
separate walk (tags and lengths only, no values decoded) serves the objects that reader
hands to pydicom: files without the ``DICM`` preamble and Explicit VR Big Endian.
pydicom offers no such check. Deflated transfer syntaxes are not walked here (their data
is compressed; the reader checks the end of the deflate stream).

May import nothing of Kerma's but ``kerma.dicom`` and ``kerma.errors``.
"""

from __future__ import annotations

import functools
import struct

from pydicom.datadict import dictionary_VR
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import VR

from kerma.errors import TruncatedError

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
MAX_DEPTH = 64
#: The truncation text of an object nested deeper than :data:`MAX_DEPTH` (not cut short:
#: malformed; readers tell the two apart by it).
TOO_DEEP = "sequences are nested too deeply"
#: The VRs of PS3.5 Table 6.2-1, as bytes (to tell Explicit from Implicit VR data).
KNOWN_VRS = frozenset(str(v).encode("ascii") for v in VR)


@functools.lru_cache(maxsize=4096)
def _implicit_vr(tag: int) -> bytes:
    """Return the dictionary VR of a tag (``UN`` when unknown), for Implicit VR data."""
    try:
        return dictionary_VR(tag).encode()
    except KeyError:
        return b"UN"


def find_truncation(data: bytes) -> str | None:
    """Return where and how ``data`` is cut short, or ``None`` when it is complete.

    Parameters
    ----------
    data : bytes
        A DICOM Part 10 file, or a bare dataset (no preamble and file meta) in Implicit
        or Explicit VR Little Endian: explicit when the first element's bytes 4-5 are a
        VR, as pydicom decides for such data (PS3.5 7.1).

    Returns
    -------
    str or None
        E.g. ``"the data ends at byte 5120 inside a sequence item"``.
    """
    start, implicit, little = 0, data[4:6] not in KNOWN_VRS, True
    if data[128:132] == b"DICM":
        meta = _Walker(data, implicit=False, little=True)
        meta.pos = 132
        syntax = ""
        try:
            while meta.pos + 4 <= len(data):
                (group,) = struct.unpack_from("<H", data, meta.pos)
                if group != 0x0002:
                    break
                group, elem = meta._unpack("HH", 4)
                _vr, length = meta._header((group << 16) | elem)
                if elem == 0x0010:
                    syntax = data[meta.pos : meta.pos + length].rstrip(b"\x00 ").decode("ascii")
                meta.skip(length, len(data))
        except (TruncatedError, struct.error, UnicodeDecodeError):
            return "the data ends inside the file meta information"
        if syntax == DeflatedExplicitVRLittleEndian:
            return None
        start = meta.pos
        implicit = syntax == ImplicitVRLittleEndian
        little = syntax != ExplicitVRBigEndian
    walker = _Walker(data, implicit=implicit, little=little)
    try:
        walker.elements(start, len(data), depth=0, until_delimiter=False)
    except TruncatedError as exc:
        return str(exc)
    except (struct.error, IndexError):
        return f"the data ends inside an element header near byte {walker.pos}"
    return None


class _Walker:
    """Walk tags and lengths of an encoded dataset, raising TruncatedError at a cut."""

    def __init__(self, data: bytes, *, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        endian = "<" if little else ">"
        self._formats = {fmt: struct.Struct(endian + fmt) for fmt in ("HH", "L", "HL", "H")}
        self.pos = 0

    def _unpack(self, fmt: str, size: int) -> tuple[int, ...]:
        """Read ``size`` bytes at the position; raise when the data ends first."""
        if self.pos + size > len(self.data):
            raise TruncatedError(f"the data ends at byte {len(self.data)} inside an element header")
        values = self._formats[fmt].unpack_from(self.data, self.pos)
        self.pos += size
        return values

    def elements(self, start: int, end: int, *, depth: int, until_delimiter: bool) -> None:
        """Walk elements from ``start`` to ``end`` (or to an item delimiter)."""
        if depth > MAX_DEPTH:
            raise TruncatedError(TOO_DEEP)
        self.pos = start
        while self.pos < end:
            group, elem = self._unpack("HH", 4)
            tag = (group << 16) | elem
            if tag in (ITEM_DELIMITER, SEQUENCE_DELIMITER, ITEM):
                (length,) = self._unpack("L", 4)
                if tag == ITEM_DELIMITER and until_delimiter:
                    return
                raise TruncatedError(f"unexpected delimiter at byte {self.pos - 8}")
            vr, length = self._header(tag)
            if vr == b"SQ" or (length == UNDEFINED and vr == b"UN"):
                self.sequence(length, depth=depth + 1, end=end)
            elif length == UNDEFINED:
                self.fragments(end)  # encapsulated pixel data
            else:
                self.skip(length, end)
        if until_delimiter:
            raise TruncatedError(
                f"the data ends at byte {len(self.data)} inside a sequence item (no item delimiter)"
            )

    def _header(self, tag: int) -> tuple[bytes, int]:
        """Return (VR, value length) of the element whose tag was just read."""
        if self.implicit:
            (length,) = self._unpack("L", 4)
            return _implicit_vr(tag), length
        if self.pos + 2 > len(self.data):
            raise TruncatedError(f"the data ends at byte {len(self.data)} inside an element header")
        vr = self.data[self.pos : self.pos + 2]
        self.pos += 2
        if vr in LONG_VRS:
            _reserved, length = self._unpack("HL", 6)
        else:
            (length,) = self._unpack("H", 2)
        return vr, length

    def skip(self, length: int, end: int) -> None:
        """Skip a value of defined ``length``; raise when it runs past ``end``."""
        if self.pos + length > end:
            raise TruncatedError(
                f"an element at byte {self.pos} declares {length} bytes but the data ends "
                f"after {end - self.pos}"
            )
        self.pos += length

    def fragments(self, end: int) -> None:
        """Skip the items of encapsulated pixel data up to the sequence delimiter."""
        while self.pos < end:
            group, elem = self._unpack("HH", 4)
            tag = (group << 16) | elem
            (length,) = self._unpack("L", 4)
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM:
                raise TruncatedError(f"expected a pixel data fragment at byte {self.pos - 8}")
            self.skip(length, end)
        raise TruncatedError(
            f"the data ends at byte {len(self.data)} inside encapsulated pixel data"
        )

    def sequence(self, length: int, *, depth: int, end: int) -> None:
        """Walk the items of a sequence (or encapsulated fragments) of ``length``."""
        seq_end = end if length == UNDEFINED else self.pos + length
        if seq_end > end:
            raise TruncatedError(
                f"a sequence at byte {self.pos} declares {length} bytes but the data ends "
                f"after {end - self.pos}"
            )
        while self.pos < seq_end:
            group, elem = self._unpack("HH", 4)
            tag = (group << 16) | elem
            (item_length,) = self._unpack("L", 4)
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM:
                raise TruncatedError(f"expected a sequence item at byte {self.pos - 8}")
            if item_length == UNDEFINED:
                self.elements(self.pos, seq_end, depth=depth, until_delimiter=True)
            else:
                item_end = self.pos + item_length
                if item_end > seq_end:
                    raise TruncatedError(
                        f"a sequence item at byte {self.pos} declares {item_length} bytes but "
                        f"the data ends after {seq_end - self.pos}"
                    )
                self.elements(self.pos, item_end, depth=depth, until_delimiter=False)
        if length == UNDEFINED:
            raise TruncatedError(
                f"the data ends at byte {len(self.data)} inside a sequence (no sequence delimiter)"
            )
