"""Inflate a deflated data set in bounded steps, refusing one that grows beyond a limit.

The Deflated Explicit VR Little Endian transfer syntax (1.2.840.10008.1.2.1.99, PS3.5
A.5) compresses the data set with raw deflate (RFC 1951). pydicom inflates it in one
call (``zlib.decompress``), so a 1 MB "deflate bomb" becomes gigabytes in memory
before anything can look at its size. Here the data is inflated with
``zlib.decompressobj`` and ``max_length`` steps of :data:`INFLATE_STEP_BYTES`:
:func:`inflated_size` counts the output and discards it (memory: one step), and
:func:`inflate` inflates for real only once the size is known to be within the limit.

May import nothing of Kerma's but ``kerma.errors`` (DESIGN.md: dicom reads DICOM only).
The default limits below are the defaults of the settings ``max_object_bytes`` and
``max_inflated_bytes`` (``kerma.config``, which repeats them: ``tests/net/test_limits.py``
checks both agree).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from kerma.errors import ObjectTooLargeError

#: Default largest object accepted, in bytes (256 MiB); setting ``max_object_bytes``.
DEFAULT_MAX_OBJECT_BYTES = 256 * 1024 * 1024

#: Default largest inflated data set of a deflated object, in bytes (512 MiB; PS3.5
#: A.5); setting ``max_inflated_bytes``.
DEFAULT_MAX_INFLATED_BYTES = 512 * 1024 * 1024

#: Inflated bytes produced per step (``max_length`` of ``decompressobj.decompress``).
INFLATE_STEP_BYTES = 1024 * 1024

#: Bytes of the inflated start of a data set read to find its UIDs (the elements up to
#: (0008,0018) 'SOP Instance UID' are a few hundred bytes in every real object).
HEAD_BYTES = 256 * 1024


def _too_large(name: str, max_bytes: int) -> ObjectTooLargeError:
    """Return the error of a data set that inflates beyond ``max_bytes``."""
    return ObjectTooLargeError(
        f"Unable to read {name}: its deflated data set inflates to more than "
        f"{max_bytes:,} bytes (max_inflated_bytes; a deflate bomb, or an object larger "
        "than this registry accepts). Raise KERMA_MAX_INFLATED_BYTES if it is genuine.",
        limit_bytes=max_bytes,
    )


def inflated_size(
    chunks: Iterable[bytes | memoryview],
    *,
    max_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    name: str = "the object",
) -> tuple[int, bool]:
    """Return the inflated size of raw-deflate data given in chunks, without keeping it.

    Parameters
    ----------
    chunks : iterable of bytes
        The deflated data set (what follows the file meta information), in pieces.
    max_bytes : int, optional
        Largest inflated size accepted (``settings.max_inflated_bytes``).
    name : str, optional
        How the error message names the object.

    Returns
    -------
    tuple of (int, bool)
        The inflated size in bytes, and whether the deflate stream ended (``False``:
        the data is cut short).

    Raises
    ------
    ObjectTooLargeError
        As soon as the output passes ``max_bytes`` (memory stays one step).
    zlib.error
        When the data is not a valid deflate stream.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    for chunk in chunks:
        data: bytes | memoryview = chunk
        while data and not inflater.eof:
            out = inflater.decompress(data, INFLATE_STEP_BYTES)
            total += len(out)
            if total > max_bytes:
                raise _too_large(name, max_bytes)
            data = inflater.unconsumed_tail
            # output held back by max_length is returned by a call without new input
            while len(out) == INFLATE_STEP_BYTES and not data and not inflater.eof:
                out = inflater.decompress(b"", INFLATE_STEP_BYTES)
                total += len(out)
                if total > max_bytes:
                    raise _too_large(name, max_bytes)
        if inflater.eof:
            break
    return total, inflater.eof


def inflate(
    data: bytes | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    name: str = "the object",
) -> tuple[bytes, bool]:
    """Inflate a raw-deflate data set whose inflated size is within ``max_bytes``.

    The size is counted first (:func:`inflated_size`, bounded memory); only a data set
    within the limit is inflated, so memory never holds more than ``max_bytes``.

    Returns
    -------
    tuple of (bytes, bool)
        The inflated data set and whether the deflate stream ended.

    Raises
    ------
    ObjectTooLargeError
        When it inflates to more than ``max_bytes``.
    zlib.error
        When the data is not a valid deflate stream.
    """
    inflated_size((data,), max_bytes=max_bytes, name=name)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    body = inflater.decompress(data)
    return body, inflater.eof


def inflate_head(
    data: bytes | memoryview | Iterable[bytes | memoryview], size: int = HEAD_BYTES
) -> bytes:
    """Return the first ``size`` inflated bytes of raw-deflate data (or all, if fewer).

    Parameters
    ----------
    data : bytes or iterable of bytes
        The deflated data, whole or in chunks (read only as far as needed).
    size : int, optional
        How many inflated bytes to return at most (:data:`HEAD_BYTES`).

    Raises
    ------
    zlib.error
        When the data is not a valid deflate stream.
    """
    chunks = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = bytearray()
    for chunk in chunks:
        head += inflater.decompress(chunk, size - len(head))
        if len(head) >= size or inflater.eof:
            break
    return bytes(head)
