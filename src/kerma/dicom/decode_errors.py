"""What pydicom raises when the bytes of an element or data set cannot be decoded.

Tolerant reading (STYLE.md B6: "decoding is lenient") catches these, and only these,
around pydicom's decoding of a value, so a damaged element is left empty with a
warning while a bug in Kerma still surfaces. The families, from pydicom 3's
``values.py``, ``valuerep.py``, ``dataelem.py``, ``filereader.py`` and ``charset.py``:

- ``ValueError`` (invalid DS/IS/DA strings in RAISE validation mode,
  ``UnicodeDecodeError``), ``TypeError``, ``OverflowError``, ``AttributeError``;
- ``LookupError`` (``KeyError`` for unknown tags and keywords, ``IndexError``, unknown
  character sets), ``NotImplementedError`` (unsupported VRs and syntaxes);
- ``EOFError`` and :class:`struct.error` (values and sequences cut short),
  :class:`pydicom.errors.BytesLengthException` (a binary value whose length is not a
  multiple of its VR's size) and :class:`pydicom.errors.InvalidDicomError`;
- ``RecursionError`` (sequences nested too deeply to decode) and :class:`zlib.error`
  (a deflated data set that does not inflate).

May import nothing of Kerma's.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from pydicom.errors import BytesLengthException, InvalidDicomError

__all__ = ["DECODE_ERRORS"]

#: Exceptions pydicom raises for undecodable bytes (see the module docstring).
DECODE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    ValueError,
    TypeError,
    OverflowError,
    AttributeError,
    LookupError,
    NotImplementedError,
    EOFError,
    RecursionError,
    struct.error,
    zlib.error,
    BytesLengthException,
    InvalidDicomError,
)
