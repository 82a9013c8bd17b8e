"""Versions of one SOP Instance UID: how each arrived, and the conflict rule.

When an object arrives whose SOP Instance UID is stored with different extracted
content, the pipeline keeps it as a *version* (``report_version``) and marks the study
as in conflict instead of letting the first copy win (issue #11: a forged object sent
first with a genuine UID must not displace the genuine one). A user decides (``kerma
conflicts resolve``) or, with ``KERMA_CONFLICT_RULE=prefer-device-association``, the
rule of :func:`device_versions` does.

This module holds the pure parts: where an object came from (:func:`transport_of`,
parsing the origin strings the intake writes) and which versions the rule prefers.

May import ``kerma.records`` and ``kerma.config`` only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Transport(StrEnum):
    """How a version reached Kerma (``report_version.transport``)."""

    FILE = "file"
    C_STORE = "c-store"
    C_GET = "c-get"
    STOW_RS = "stow-rs"
    WADO_RS = "wado-rs"
    OTHER = "other"


class ConflictRule(StrEnum):
    """How conflicts are decided without a user (``KERMA_CONFLICT_RULE``)."""

    MANUAL = "manual"
    PREFER_DEVICE_ASSOCIATION = "prefer-device-association"


#: ``decided_by`` of a decision the rule made (``conflict_decision``).
RULE_DECIDER = f"rule:{ConflictRule.PREFER_DEVICE_ASSOCIATION}"

#: Origins written by the intake (:func:`kerma.net.handlers.peer_origin`, the STOW-RS
#: route, the DICOMweb pull): ``C-STORE from <AE> at <address>``, ``C-GET from <AE> at
#: <address>:<port>``, ``STOW-RS from <client>``, ``WADO-RS <url>``.
_ASSOCIATION = re.compile(r"^(C-STORE|C-GET) from (.*?) at \S+$")


def transport_of(source: str | None) -> tuple[Transport, str | None]:
    """Return how an object arrived and the peer's AE title, from its source or origin.

    Parameters
    ----------
    source : str or None
        ``dose_report.source``: the path of an imported file, or the origin the network
        intake recorded (``C-STORE from MODALITY at 10.0.0.5``, ``STOW-RS from
        10.0.0.9``, ...).

    Returns
    -------
    tuple of (Transport, str or None)
        The transport and, for a DICOM association, the calling (C-STORE) or called
        (C-GET) AE title (``None`` when unknown).
    """
    text = (source or "").strip()
    match = _ASSOCIATION.match(text)
    if match:
        transport = Transport.C_STORE if match.group(1) == "C-STORE" else Transport.C_GET
        ae_title = match.group(2).strip()
        return transport, (ae_title if ae_title and ae_title != "?" else None)
    if text.startswith("C-STORE from"):  # "C-STORE from an unknown peer"
        return Transport.C_STORE, None
    if text.startswith("STOW-RS from"):
        return Transport.STOW_RS, None
    if text.startswith("WADO-RS "):
        return Transport.WADO_RS, None
    if not text or text == "bytes" or text.startswith("spool file "):
        return Transport.OTHER, None
    return Transport.FILE, None


@dataclass(frozen=True)
class VersionOrigin:
    """What the conflict rule reads of one version.

    Attributes
    ----------
    version : int
        The version number (1 = first received).
    transport : str
        :class:`Transport` value.
    calling_ae_title : str or None
        The peer's AE title on a DICOM association.
    device_observer_uid : str or None
        The TID 1004 Device Observer UID the version's content gives.
    """

    version: int
    transport: str
    calling_ae_title: str | None
    device_observer_uid: str | None


def is_from_device(
    origin: VersionOrigin, *, device_observer_uid: str | None, station_name: str | None
) -> bool:
    """Return whether a version came from the study's device over its own association.

    A version qualifies when it was received over a DICOM association the peer opened
    (C-STORE to Kerma's SCP; not C-GET or a DICOMweb or file import, whose sender is
    a PACS or a person) and either its TID 1004 Device Observer UID equals the study
    device's, or the calling AE title equals the device's (0008,1010) Station Name
    (case-insensitive; many sites give a modality its station name as AE title).

    Parameters
    ----------
    origin : VersionOrigin
        The version.
    device_observer_uid, station_name : str or None
        Of the study's device (``device`` row).
    """
    if origin.transport != Transport.C_STORE:
        return False
    if device_observer_uid and origin.device_observer_uid == device_observer_uid:
        return True
    ae_title = (origin.calling_ae_title or "").strip().upper()
    return bool(ae_title) and ae_title == (station_name or "").strip().upper()


def device_versions(
    origins: Sequence[VersionOrigin], *, device_observer_uid: str | None, station_name: str | None
) -> list[int]:
    """Return the versions the ``prefer-device-association`` rule may keep.

    The rule decides only when exactly one version qualifies (:func:`is_from_device`);
    otherwise (none, or several from the device) the conflict waits for a user.

    Returns
    -------
    list of int
        The qualifying version numbers, ascending.
    """
    return sorted(
        o.version
        for o in origins
        if is_from_device(o, device_observer_uid=device_observer_uid, station_name=station_name)
    )
