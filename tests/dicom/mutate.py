"""A seeded mutator of DICOM objects for the fuzz test (issue #11, item 1).

Mutants are made from the bytes of real objects (``../shared/dicom``, ``../shared/cases``)
without re-encoding them with pydicom (which costs 20-70 ms per RDSR): each seed's
element structure is walked once (:func:`map_elements`: every element's header and value
position, its VR, the tags of the sequences above it and the defined-length fields that
enclose it), and a mutation splices bytes, patching the enclosing defined lengths. One
mutant costs microseconds; the time of the fuzz test is the extraction.

Kinds of mutation (:data:`KINDS`):

- ``flip``: 1-8 random bytes of the data set changed;
- ``truncate``: the object cut at a random byte;
- ``remove``: a random element removed (a Concept Name, a unit, a Value Type, a
  Measured Value Sequence, a root attribute ...);
- ``unnamed``: the Concept Name Code Sequence of a random content item removed (PS3.3
  C.17.3 makes it Type 1C: absent on an IMAGE item by relationship, for example);
- ``retype``: a random element re-encoded with another VR (a sequence as text, text as
  a sequence, a value as ``UN``, a VR that is not one);
- ``number``: a number made non-finite, huge, negative or non-numeric (Numeric Value,
  Floating Point Value, header doses and counts);
- ``unit``: a Measurement Units code replaced by a wrong one;
- ``nest``: a chain of 10-300 nested CONTAINER items inserted in a Content Sequence;
- ``bare``: one of the structural mutations above, then the preamble and file meta
  information removed (a bare data set, as some archives hold them), so the object is
  read by pydicom (Kerma's fallback reader) instead of the one-pass walk.

Only Explicit and Implicit VR Little Endian objects get structural mutations; others
(deflated, big endian) get byte flips and truncation.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQ_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
#: Tags by DICOM keyword (the few the mutator aims at).
CONCEPT_NAME = 0x0040A043
CONTENT_SEQUENCE = 0x0040A730
UNITS = 0x004008EA
CODE_VALUE = 0x00080100
NUMERIC_VALUE = 0x0040A30A
FLOATING_POINT_VALUE = 0x0040A161
#: Header attributes holding numbers Kerma reads (CTDIvol, DAP, exposure, weight, age ...).
NUMBER_TAGS = {
    NUMERIC_VALUE,
    FLOATING_POINT_VALUE,
    0x00189345,  # CTDIvol FD
    0x0018115E,  # Image and Fluoroscopy Area Dose Product DS
    0x00181152,  # Exposure IS
    0x00181153,  # Exposure in uAs IS
    0x00181150,  # Exposure Time IS
    0x00180060,  # KVP DS
    0x00101030,  # Patient's Weight DS
    0x00101020,  # Patient's Size DS
    0x00101010,  # Patient's Age AS
    0x00400302,  # Entrance Dose IS
    0x00408302,  # Entrance Dose in mGy DS
    0x00400316,  # Organ Dose DS
    0x00181074,  # Radionuclide Total Dose DS
    0x00181075,  # Radionuclide Half Life DS
    0x00281052,  # Rescale Intercept DS
    0x00280010,  # Rows US
}
#: Replacement numbers: non-finite, huge, negative, not a number, empty.
BAD_NUMBERS = [
    b"NaN",
    b"nan",
    b"inf",
    b"-inf",
    b"Infinity",
    b"1e999",
    b"-1e308",
    b"1e308",
    b"-1",
    b"-0.0",
    b"9" * 16,
    b"1" + b"0" * 300,
    b"",
    b"  ",
    b"abc",
    b"1.2.3",
    b"1\\2\\NaN",
    b"0x1F",
    b"1e-400",
]
BAD_DOUBLES = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, -1.0, 5e-324]
BAD_UNITS = [b"Gy", b"mGy", b"kg", b"ms", b"1", b"xyz", b"", b"Gy.m2", b"dGy.cm2", b"mGy.cm", b"%"]
RETYPE_VRS = [b"LO", b"SQ", b"UN", b"DS", b"FD", b"UL", b"US", b"SS", b"AT", b"ZZ", b"\x00\x01"]
KINDS = ("flip", "truncate", "remove", "unnamed", "retype", "number", "unit", "nest", "bare")
#: Kinds a ``bare`` mutant applies before it strips the preamble and file meta.
BARE_INNER = ("remove", "unnamed", "retype", "number", "unit")


@dataclass
class Element:
    """Where one element sits in the bytes of an object."""

    tag: int
    vr: bytes | None
    start: int  # header start
    value_start: int
    end: int  # value end (for an undefined-length sequence: after its delimiter)
    parents: tuple[int, ...]  # tags of the enclosing sequences, outermost first
    lengths: tuple[int, ...]  # offsets of enclosing defined 4-byte length fields
    is_sequence: bool = False


@dataclass
class Seed:
    """A seed object: its bytes, encoding and element map."""

    name: str
    data: bytes
    implicit: bool = False
    structural: bool = False
    elements: list[Element] = field(default_factory=list)
    items: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


class _Stop(Exception):
    """The walk met a structure it does not map (the seed gets byte mutations only)."""


def load_seed(name: str, data: bytes) -> Seed:
    """Return a seed with its element map (structural mutations when the walk succeeds)."""
    seed = Seed(name, data)
    if data[128:132] != b"DICM":
        return seed
    pos = 132
    syntax = b""
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 2:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            (length,) = struct.unpack_from("<L", data, pos + 8)
            value = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            value = pos + 8
        if elem == 0x0010:
            syntax = data[value : value + length].rstrip(b"\x00 ")
        pos = value + length
    if syntax not in (b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1"):
        return seed
    seed.implicit = syntax == b"1.2.840.10008.1.2"
    try:
        _walk(seed, pos, len(data), (), (), 0)
    except (_Stop, struct.error, IndexError):
        seed.elements.clear()
        seed.items.clear()
        return seed
    seed.structural = bool(seed.elements)
    return seed


def _is_sequence(seed: Seed, tag: int, vr: bytes | None, length: int) -> bool:
    """Return whether an element is a sequence."""
    if vr is not None:
        return vr == b"SQ"
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return length == UNDEFINED


def _walk(
    seed: Seed, pos: int, end: int, parents: tuple[int, ...], lengths: tuple[int, ...], depth: int
) -> int:
    """Map the elements from ``pos`` to ``end`` (or an item delimiter); return the end."""
    data = seed.data
    if depth > 40:
        raise _Stop
    while pos < end:
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        tag = group << 16 | elem
        if tag == ITEM_END:
            return pos + 8
        if seed.implicit:
            vr, value, length_at = None, pos + 8, pos + 4
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in LONG_VRS:
                (length,) = struct.unpack_from("<L", data, pos + 8)
                value, length_at = pos + 12, pos + 8
            else:
                (length,) = struct.unpack_from("<H", data, pos + 6)
                value, length_at = pos + 8, -1
        is_sequence = _is_sequence(seed, tag, vr, length)
        if tag == 0x7FE00010 or (length == UNDEFINED and not is_sequence):
            raise _Stop  # pixel data or fragments: stop mapping here (nothing to aim at)
        if is_sequence:
            inner = (*lengths, length_at) if length != UNDEFINED else lengths
            stop = end if length == UNDEFINED else value + length
            after = _sequence(seed, value, stop, (*parents, tag), inner, depth, length == UNDEFINED)
            seed.elements.append(Element(tag, vr, pos, value, after, parents, lengths, True))
            pos = after
            continue
        stop = value + length
        if stop > end:
            raise _Stop
        seed.elements.append(Element(tag, vr, pos, value, stop, parents, lengths))
        pos = stop
    return pos


def _sequence(
    seed: Seed,
    pos: int,
    end: int,
    parents: tuple[int, ...],
    lengths: tuple[int, ...],
    depth: int,
    undefined: bool,
) -> int:
    """Map the items of a sequence; return the position after it."""
    data = seed.data
    while pos < end:
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        tag = group << 16 | elem
        if tag == SEQ_END:
            return pos + 8
        if tag != ITEM:
            raise _Stop
        inner = (*lengths, pos + 4) if length != UNDEFINED else lengths
        stop = end if length == UNDEFINED else pos + 8 + length
        seed.items.append((pos + 8, parents, inner))
        after = _walk(seed, pos + 8, stop, parents, inner, depth + 1)
        pos = after if length == UNDEFINED else stop
    if undefined:
        raise _Stop
    return pos


def _splice(seed: Seed, start: int, end: int, new: bytes, lengths: tuple[int, ...]) -> bytes:
    """Return the bytes with ``[start, end)`` replaced by ``new``, enclosing lengths patched."""
    out = bytearray(seed.data[:start] + new + seed.data[end:])
    delta = len(new) - (end - start)
    for at in lengths:
        (old,) = struct.unpack_from("<L", out, at)
        struct.pack_into("<L", out, at, max(0, old + delta))
    return bytes(out)


def _encode(seed: Seed, tag: int, vr: bytes, value: bytes) -> bytes:
    """Return an element (header and value) in the seed's encoding."""
    if len(value) % 2:
        value += b" " if vr not in (b"UI", b"OB", b"UN") else b"\x00"
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if seed.implicit:
        return head + struct.pack("<L", len(value)) + value
    if vr in LONG_VRS or len(value) > 0xFFFF:
        return head + vr[:2].ljust(2, b" ") + b"\x00\x00" + struct.pack("<L", len(value)) + value
    return head + vr[:2].ljust(2, b" ") + struct.pack("<H", len(value)) + value


def _item(body: bytes) -> bytes:
    """Return an undefined-length sequence item holding ``body``."""
    return (
        struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED)
        + body
        + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    )


def _sequence_element(seed: Seed, tag: int, items: list[bytes]) -> bytes:
    """Return an undefined-length sequence element of the given items."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    head += (
        struct.pack("<L", UNDEFINED)
        if seed.implicit
        else b"SQ\x00\x00" + struct.pack("<L", UNDEFINED)
    )
    return head + b"".join(_item(i) for i in items) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _nested(seed: Seed, depth: int) -> bytes:
    """Return a CONTAINER content item nested ``depth`` levels deep (no concept names)."""
    leaf = _encode(seed, 0x0040A010, b"CS", b"CONTAINS") + _encode(
        seed, 0x0040A040, b"CS", b"CONTAINER"
    )
    body = leaf
    for _ in range(depth):
        body = leaf + _sequence_element(seed, CONTENT_SEQUENCE, [body])
    return body


def mutate(seed: Seed, rng: random.Random, kind: str) -> bytes:
    """Return a mutant of ``seed`` of ``kind`` (a byte mutation when ``kind`` does not apply)."""
    data = seed.data
    if kind == "bare":
        return strip_meta(mutate(seed, rng, rng.choice(BARE_INNER)))
    if kind == "truncate":
        return data[: rng.randrange(132, len(data))] if len(data) > 133 else data[:-1]
    if not seed.structural or kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(132, len(out)) if len(out) > 132 else rng.randrange(len(out))
            out[at] = rng.randrange(256)
        return bytes(out)
    elements = seed.elements
    if kind == "remove":
        el = rng.choice(elements)
        return _splice(seed, el.start, el.end, b"", el.lengths)
    if kind == "unnamed":
        named = [e for e in elements if e.tag == CONCEPT_NAME and e.parents]
        el = rng.choice(named or elements)
        return _splice(seed, el.start, el.end, b"", el.lengths)
    if kind == "retype":
        el = rng.choice(elements)
        vr = rng.choice(RETYPE_VRS)
        if vr == b"SQ":
            new = _sequence_element(seed, el.tag, [_encode(seed, CODE_VALUE, b"SH", b"X")])
        elif vr in (b"FD",):
            new = _encode(seed, el.tag, vr, struct.pack("<d", rng.choice(BAD_DOUBLES)))
        elif vr in (b"UL", b"US", b"SS", b"AT"):
            new = _encode(seed, el.tag, vr, b"\x01\x00\x00\x00"[: 2 if vr != b"UL" else 4])
        elif el.is_sequence:
            new = _encode(seed, el.tag, vr, b"not a sequence")
        else:
            new = _encode(seed, el.tag, vr, data[el.value_start : el.end])
        return _splice(seed, el.start, el.end, new, el.lengths)
    if kind == "number":
        targets = [e for e in elements if e.tag in NUMBER_TAGS and not e.is_sequence]
        el = rng.choice(targets or elements)
        if el.tag == FLOATING_POINT_VALUE or (el.vr == b"FD"):
            value = struct.pack("<d", rng.choice(BAD_DOUBLES))
            vr = b"FD"
        else:
            value = rng.choice(BAD_NUMBERS)
            vr = el.vr or b"DS"
        return _splice(seed, el.start, el.end, _encode(seed, el.tag, vr, value), el.lengths)
    if kind == "unit":
        targets = [e for e in elements if e.tag == CODE_VALUE and e.parents[-1:] == (UNITS,)]
        el = rng.choice(targets or elements)
        new = _encode(seed, el.tag, el.vr or b"SH", rng.choice(BAD_UNITS))
        return _splice(seed, el.start, el.end, new, el.lengths)
    if kind == "nest":
        targets = [i for i in seed.items if i[1][-1:] == (CONTENT_SEQUENCE,)]
        if not targets:
            return mutate(seed, rng, "flip")
        at, _, lengths = rng.choice(targets)
        chain = _item(_nested(seed, rng.choice((10, 40, 70, 150, 300))))
        return _splice(
            seed,
            at - 8,
            at - 8,
            chain,
            lengths[:-1] if lengths and lengths[-1] == at - 4 else lengths,
        )
    raise ValueError(f"unknown mutation kind {kind!r}")


def strip_meta(data: bytes) -> bytes:
    """Return the data set of a Part 10 object without preamble and file meta (group 2)."""
    if data[128:132] != b"DICM":
        return data
    pos = 132
    while pos + 8 <= len(data):
        group, _ = struct.unpack_from("<HH", data, pos)
        if group != 2:
            break
        if data[pos + 4 : pos + 6] in LONG_VRS:
            (length,) = struct.unpack_from("<L", data, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8 + length
    return data[pos:]


def iter_mutants(seeds: list[Seed], n: int, seed: int) -> list[tuple[str, str, bytes]]:
    """Return ``n`` mutants ``(kind, seed name, bytes)``, the same for the same ``seed``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        s = rng.choice(seeds)
        out.append((kind, s.name, mutate(s, rng, kind)))
    return out
