"""Which site (institution) a received object belongs to (issue #15).

The site of an object, in order:

1. ``KERMA_SITE_MAP`` names its (0008,0080) Institution Name (one site for the
   spellings an institution's modalities use);
2. the receiving node is configured for a site (``KERMA_SITE``, ``kerma import
   --site``);
3. its Institution Name as written (not a placeholder such as ``REMOVED``);

else it has none. An Institution Name that the site treats as identifying
(``KERMA_IDENTIFYING_ATTRIBUTES`` lists ``InstitutionName``) is used only through the
map, never stored as a site name.

May import ``kerma.config`` and ``kerma.records``.
"""

from __future__ import annotations

from kerma.config import Settings
from kerma.records import DoseReport

#: Longest site name stored (``site.name``).
MAX_SITE_NAME = 255

#: Institution Names that anonymisers or devices write when the real one is unknown:
#: not a site (the node's KERMA_SITE or the map decide, else the study has none).
PLACEHOLDER_INSTITUTIONS = frozenset(
    {"REMOVED", "ANONYMIZED", "ANONYMISED", "ANONYMOUS", "UNKNOWN", "NONE", "N/A", "-", "X"}
)


def _key(text: str) -> str:
    """Return an institution name as compared with the map: outer spaces off, any case."""
    return " ".join(text.split()).casefold()


def site_name(report: DoseReport, settings: Settings) -> str | None:
    """Return the name of the site ``report`` belongs to, or ``None``.

    Parameters
    ----------
    report : DoseReport
        The extracted record, before identifying text is dropped
        (``report.device.institution_name`` is (0008,0080) Institution Name).
    settings : Settings
        ``site_map``, ``site`` and ``identifying_attributes``.

    Returns
    -------
    str or None
        The site name (at most :data:`MAX_SITE_NAME` characters).
    """
    institution = (report.device.institution_name or "").strip()
    if institution.upper() in PLACEHOLDER_INSTITUTIONS:
        institution = ""
    if institution and settings.site_map:
        mapped = {_key(k): v for k, v in settings.site_map.items()}.get(_key(institution))
        if mapped and mapped.strip():
            return mapped.strip()[:MAX_SITE_NAME]
    if settings.site and settings.site.strip():
        return settings.site.strip()[:MAX_SITE_NAME]
    if institution and "InstitutionName" not in settings.identifying_attributes:
        return " ".join(institution.split())[:MAX_SITE_NAME]
    return None
