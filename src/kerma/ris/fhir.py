"""FHIR in by polling: read a FHIR search URL (and its next pages) into the registry.

``kerma fhir poll URL`` GETs ``URL`` (e.g. ``https://fhir.example/ServiceRequest?
_include=ServiceRequest:subject&_revinclude=Observation:based-on``), follows the
Bundle's ``next`` links and hands each page to
:meth:`kerma.services.orders.OrderIntake.receive_fhir`. Uses httpx (HTTP/1.1, TLS
verified by default).

May import ``kerma.services``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Final

from kerma.errors import KermaError
from kerma.services.orders import OrderIntake, Receipt

logger = logging.getLogger(__name__)

#: Pages read at most per poll (a guard against a server that links pages in a loop).
MAX_PAGES: Final = 1000


class FhirPollError(KermaError):
    """The FHIR server could not be read (connection, HTTP status)."""


@dataclass
class PollResult:
    """What one poll read: pages, orders written, studies updated, refused pages."""

    pages: int = 0
    orders: int = 0
    studies_updated: int = 0
    refused: list[str] = field(default_factory=list)


def poll(
    intake: OrderIntake,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    max_pages: int = MAX_PAGES,
) -> PollResult:
    """Read a FHIR search URL and its next pages into the registry.

    Raises
    ------
    FhirPollError
        When the server cannot be reached or answers an HTTP error.
    """
    import httpx

    result = PollResult()
    seen: set[str] = set()
    next_url: str | None = url
    with httpx.Client(
        timeout=timeout_s, headers={"Accept": "application/fhir+json", **(headers or {})}
    ) as client:
        while next_url and result.pages < max_pages and next_url not in seen:
            seen.add(next_url)
            try:
                response = client.get(next_url)
            except httpx.HTTPError as exc:
                raise FhirPollError(
                    f"Unable to read the FHIR server: {type(exc).__name__}: {exc}."
                ) from exc
            if response.status_code != 200:
                raise FhirPollError(
                    f"Unable to read the FHIR server: HTTP {response.status_code} for a page "
                    "of the search."
                )
            body = response.content
            result.pages += 1
            receipt: Receipt = intake.receive_fhir(body, transport="fhir-poll")
            if receipt.ack_code != "AA":
                result.refused.append(receipt.reason or receipt.ack_code)
            result.orders += len(receipt.order_ids)
            result.studies_updated += len(receipt.studies_updated)
            next_url = _next_link(body)
    return result


def _next_link(body: bytes) -> str | None:
    """Return the Bundle's ``next`` link, ``None`` when there is none."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    for link in data.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None
