"""Decode DICOM text as the bytes are, whatever the Specific Character Set claims.

PS3.5 6.1 says how text is encoded: by (0008,0005) Specific Character Set, and in the
default repertoire (ASCII) when it is absent. The field does not always follow it
(EXTRACTION.md: "where bytes are not valid in the declared set but are valid UTF-8 (a
common vendor fault), they are decoded as UTF-8 and a warning says so"):

- UTF-8 bytes labelled with a single-byte set (``ISO_IR 100`` Latin-1 most often, also
  ``ISO_IR 144`` Cyrillic, ``ISO_IR 126`` Greek ...), in any script: accented Latin,
  Cyrillic, Greek, CJK. Read under the label they turn into mojibake (``'ÐŸÑ€Ð¸'`` for
  ``'При'``);
- non-ASCII bytes with no Specific Character Set at all;
- bytes that are invalid in a declared multi-byte set (``ISO_IR 192``, ``GB18030``).

The rule (:func:`decode_text`): ASCII bytes are ASCII. Otherwise the bytes are decoded
with the declared set (pydicom's :func:`pydicom.charset.decode_bytes`, which handles ISO
2022 escape sequences), unless they are not what that set would hold:

1. no set declared: UTF-8 when the bytes are valid UTF-8, else Latin-1 (the commonest
   legacy set), with a warning either way;
2. a single-byte set: UTF-8 when the bytes are valid UTF-8 *and* the declared reading is
   implausible: it holds C1 control characters (U+0080 to U+009F, which no text in an
   ISO 8859 set contains, while the continuation bytes of UTF-8 produce them), or the
   set is a Latin one (where a valid UTF-8 multi-byte sequence needs an accented
   capital followed by a symbol, which no real text has). A genuine Cyrillic, Greek,
   Arabic or Hebrew text in its ISO 8859 set is kept as declared;
3. a multi-byte set whose decoding fails: UTF-8 when valid, else the declared set with
   replacement characters, with a warning.

A text decoded otherwise than as declared is returned as :class:`DecodedText`, a
``str`` that carries the warning; :func:`kerma.dicom.content.clean_text` puts it on the
report where the value is used.

May import nothing of Kerma's (pydicom only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from pydicom.charset import decode_bytes

#: pydicom's Python codec for "no Specific Character Set" (the default repertoire).
DEFAULT_CODEC: Final = "iso8859"
#: Python codecs (pydicom's names) of the single-byte sets of PS3.3 C.12.1.1.2.
SINGLE_BYTE_CODECS: Final = frozenset(
    {
        "latin_1",
        "iso8859_2",
        "iso8859_3",
        "iso8859_4",
        "iso8859_15",
        "iso_ir_126",
        "iso_ir_127",
        "iso_ir_138",
        "iso_ir_144",
        "iso_ir_148",
        "iso_ir_166",
        "shift_jis",  # ISO_IR 13: JIS X 0201, katakana in single bytes
    }
)
#: Single-byte sets of Latin script (ISO 8859-1, -2, -3, -4, -9, -15).
LATIN_CODECS: Final = frozenset(
    {"latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso_ir_148", "iso8859_15"}
)
#: DICOM names of the sets, for messages.
_DICOM_NAMES: Final[dict[str, str]] = {
    "latin_1": "Latin-1 (ISO_IR 100)",
    "iso8859_2": "Latin-2 (ISO_IR 101)",
    "iso8859_3": "Latin-3 (ISO_IR 109)",
    "iso8859_4": "Latin-4 (ISO_IR 110)",
    "iso8859_15": "Latin-9 (ISO_IR 203)",
    "iso_ir_126": "Greek (ISO_IR 126)",
    "iso_ir_127": "Arabic (ISO_IR 127)",
    "iso_ir_138": "Hebrew (ISO_IR 138)",
    "iso_ir_144": "Cyrillic (ISO_IR 144)",
    "iso_ir_148": "Latin-5 (ISO_IR 148)",
    "iso_ir_166": "Thai (ISO_IR 166)",
    "shift_jis": "Japanese katakana (ISO_IR 13)",
    "UTF8": "UTF-8 (ISO_IR 192)",
}
_C1 = re.compile("[\x80-\x9f]")
#: (0008,0005) values pydicom does not map end up here as themselves.
_PADDING = " \x00"


class DecodedText(str):
    """A decoded text whose bytes were not read as declared; ``warning`` says how."""

    warning: str

    def __new__(cls, value: str, warning: str) -> DecodedText:
        """Return ``value`` carrying ``warning``."""
        text = super().__new__(cls, value)
        text.warning = warning
        return text


def set_name(codecs: Sequence[str]) -> str:
    """Return the DICOM name of the declared character set(s), for messages."""
    names = [_DICOM_NAMES.get(c, c) for c in codecs if c != DEFAULT_CODEC]
    return " + ".join(names) if names else "no Specific Character Set"


def decode_text(raw: bytes, codecs: Sequence[str] | str | None) -> str:
    """Return the text of a string element's bytes (padding stripped).

    Parameters
    ----------
    raw : bytes
        The element's value as stored.
    codecs : sequence of str or None
        The Python codecs of the dataset's (0008,0005) Specific Character Set, as
        :func:`pydicom.charset.convert_encodings` gives them (``["iso8859"]`` or
        ``None`` when none is declared).

    Returns
    -------
    str
        The text; a :class:`DecodedText` (with the warning) when the bytes were read
        otherwise than as declared (module docstring).
    """
    raw = raw.rstrip(b" \x00")
    if raw.isascii():
        return raw.decode("ascii").strip(_PADDING)
    if isinstance(codecs, str):  # pydicom gives the default as one string
        codecs = [codecs]
    declared = [c for c in (codecs or []) if c] or [DEFAULT_CODEC]
    utf8 = _utf8(raw)
    if all(c == DEFAULT_CODEC for c in declared):
        if utf8 is not None:
            return _decoded(utf8, "no Specific Character Set (0008,0005): decoded as UTF-8")
        return _decoded(
            raw.decode("latin_1"),
            "no Specific Character Set (0008,0005) and not UTF-8: decoded as Latin-1",
        )
    try:
        text = _strict(raw, declared)
    except (UnicodeDecodeError, LookupError, ValueError):
        text = None
    if declared[0] == "UTF8" and len(declared) == 1:
        if text is not None:
            return text.strip(_PADDING)
        return _decoded(
            raw.decode("latin_1"),
            f"declared {set_name(declared)} but not valid UTF-8: decoded as Latin-1",
        )
    single = all(c in SINGLE_BYTE_CODECS or c == DEFAULT_CODEC for c in declared)
    if utf8 is not None and (
        text is None or (single and (_C1.search(text) or declared[-1] in LATIN_CODECS))
    ):
        return _decoded(
            utf8,
            f"was stored as UTF-8 under a {set_name(declared)} character set label; "
            "decoded as UTF-8",
        )
    if text is not None:
        return text.strip(_PADDING)
    replaced = decode_bytes_lenient(raw, declared)
    return _decoded(
        replaced,
        f"not valid in its declared {set_name(declared)}: undecodable bytes replaced",
    )


def repair_decoded(text: str) -> str:
    """Return a string pydicom decoded under a Latin-1 label, repaired if it was UTF-8.

    For values Kerma did not decode from bytes itself (datasets built in memory, or
    sequences pydicom decoded): Latin-1 (or no set) maps bytes to characters one to one,
    so the bytes are recovered and :func:`decode_text`'s rule 2 applies.
    """
    if text.isascii():
        return text
    try:
        raw = text.encode("latin_1")
    except UnicodeEncodeError:
        return text  # not a Latin-1 reading: nothing to recover
    utf8 = _utf8(raw)
    if utf8 is None or utf8 == text:
        return text
    return _decoded(
        utf8, "was stored as UTF-8 under a Latin-1 character set label; decoded as UTF-8"
    )


def decode_bytes_lenient(raw: bytes, codecs: Sequence[str]) -> str:
    """Return ``raw`` decoded with the first codec, undecodable bytes replaced."""
    try:
        return raw.decode(codecs[0], errors="replace").strip(_PADDING)
    except LookupError:
        return raw.decode("latin_1").strip(_PADDING)


def _strict(raw: bytes, codecs: Sequence[str]) -> str:
    """Decode with the declared codecs, raising on bytes they cannot hold."""
    if len(codecs) == 1 and "\x1b" not in raw.decode("latin_1"):
        return raw.decode(codecs[0])
    text = decode_bytes(raw, list(codecs), set())
    if "\ufffd" in text:
        raise ValueError("undecodable bytes")
    return text


def _utf8(raw: bytes) -> str | None:
    """Return ``raw`` decoded as UTF-8 when it is valid UTF-8, else ``None``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decoded(text: str, how: str) -> DecodedText:
    """Return ``text`` (padding stripped) with the warning ``text {text!r} {how}``."""
    text = text.strip(_PADDING)
    if how.startswith("was "):
        return DecodedText(text, f"text {text!r} {how}")
    return DecodedText(text, f"text {text!r}: {how}")
