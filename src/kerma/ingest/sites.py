"""Which site (institution) a received object belongs to (issue #15).

The site of an object, in order:

1. ``KERMA_SITE_MAP`` names its (0008,0080) Institution Name together with its
   (0008,0081) Institution Address (a key ``"Name|Address"``: two institutions of the
   same name told apart), else its Institution Name alone (a key ``"Name"``: one site
   for the spellings an institution's modalities use, whatever address they write);
2. the receiving node is configured for a site (``KERMA_SITE``, ``kerma import
   --site``);
3. its Institution Name as written (not a placeholder such as ``REMOVED``);

else it has none. The Institution Address is never part of the site's identity on its
own: it is optional (Type 3) and free text that modalities of one hospital write
differently, so two objects of the same Institution Name are of the same site unless
the map tells their addresses apart (``docs/scaling.md`` "Sites"). The address is read
for the map only and never stored. An Institution Name that the site treats as
identifying (``KERMA_IDENTIFYING_ATTRIBUTES`` lists ``InstitutionName``) is used only
through the map, never stored as a site name.

May import ``kerma.config`` and ``kerma.records``.
"""

from __future__ import annotations

from typing import Any

from kerma.config import Settings
from kerma.records import DoseReport

#: Longest site name stored (``site.name``).
MAX_SITE_NAME = 255

#: Institution Names that anonymisers or devices write when the real one is unknown:
#: not a site (the node's KERMA_SITE or the map decide, else the study has none).
PLACEHOLDER_INSTITUTIONS = frozenset(
    {"REMOVED", "ANONYMIZED", "ANONYMISED", "ANONYMOUS", "UNKNOWN", "NONE", "N/A", "-", "X"}
)


#: Separator of Institution Name and Institution Address in a ``KERMA_SITE_MAP`` key.
ADDRESS_SEPARATOR = "|"


def _key(text: str) -> str:
    """Return a name or address as compared with the map: spaces collapsed, any case."""
    return " ".join(text.split()).casefold()


def _map_keys(site_map: dict[str, str]) -> dict[tuple[str, str | None], str]:
    """Return the map by ``(name, address or None)`` compared forms; empty sites left out."""
    out: dict[tuple[str, str | None], str] = {}
    for key, site in site_map.items():
        name, has_address, address = key.partition(ADDRESS_SEPARATOR)
        if not site.strip() or not _key(name):
            continue
        out[(_key(name), _key(address) if has_address and _key(address) else None)] = site
    return out


def site_name(
    report: DoseReport, settings: Settings, *, institution_address: str | None = None
) -> str | None:
    """Return the name of the site ``report`` belongs to, or ``None``.

    Parameters
    ----------
    report : DoseReport
        The extracted record, before identifying text is dropped
        (``report.device.institution_name`` is (0008,0080) Institution Name).
    settings : Settings
        ``site_map``, ``site`` and ``identifying_attributes``.
    institution_address : str, optional
        The object's (0008,0081) Institution Address: a map key ``"Name|Address"``
        matches only this address (spaces collapsed, any case).

    Returns
    -------
    str or None
        The site name (at most :data:`MAX_SITE_NAME` characters).
    """
    institution = (report.device.institution_name or "").strip()
    if institution.upper() in PLACEHOLDER_INSTITUTIONS:
        institution = ""
    if institution and settings.site_map:
        keys = _map_keys(settings.site_map)
        address = _key(institution_address or "") or None
        mapped = (keys.get((_key(institution), address)) if address else None) or keys.get(
            (_key(institution), None)
        )
        if mapped:
            return mapped.strip()[:MAX_SITE_NAME]
    if settings.site and settings.site.strip():
        return settings.site.strip()[:MAX_SITE_NAME]
    if institution and "InstitutionName" not in settings.identifying_attributes:
        return " ".join(institution.split())[:MAX_SITE_NAME]
    return None


def read_institution_address(dataset: Any) -> str | None:
    """Return an object's (0008,0081) Institution Address, or ``None`` (absent, empty or
    not readable as text): it only chooses a ``KERMA_SITE_MAP`` entry."""
    if dataset is None:
        return None
    try:
        value = dataset.get("InstitutionAddress")
    except (ValueError, TypeError, KeyError):  # a malformed element: as if absent
        return None
    text = str(value).strip() if value is not None else ""
    return text or None
