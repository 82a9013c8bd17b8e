"""Kerma's DICOM Storage SCP: the AE, its presentation contexts, start and stop.

Built after pynetdicom's ``apps/storescp`` recipe: (1) transfer syntaxes and
handlers; (2) ``AE(ae_title=...)``; (3) ``add_supported_context`` once per storage
SOP class; (4) PDU size and timeouts; (5) ``start_server(..., block=False)``.

Every storage SOP class of pynetdicom's ``AllStoragePresentationContexts`` is
accepted, and the dose SR classes are added explicitly (X-Ray, Radiopharmaceutical
and Enhanced X-Ray Radiation Dose SR, Enhanced and Comprehensive SR): an SCP built
from ``StoragePresentationContexts`` rejects the Radiopharmaceutical Radiation Dose
SR of a PET/NM scanner (case C14, pynetdicom issue #432). Every transfer syntax is
accepted, since only headers are read and compressed pixel data is kept as sent.

Limits (docs/network.md "Limits"): every association is guarded
(:func:`kerma.net.handlers.guard_association`: data sets over ``max_object_bytes``
are not held, PDUs over :data:`~kerma.net.handlers.MAX_PDU_BYTES` not read);
:class:`AssociationAdmission` rejects a peer over ``scp_max_associations_per_peer``
and, with ``scp_tls_aet_certificates``, a calling AE title not bound to the client
certificate presented; the network time-out closes idle associations.

Received objects go to the durable spool and a :class:`~kerma.net.spool.SpoolWorker`
imports them (see :mod:`kerma.net.spool`) with the importer the caller passes in
(``kerma listen``: a :class:`~kerma.net.spool.ProcessImporter`).

May import ``kerma.config``, ``kerma.errors`` and ``kerma.net``; never ``kerma.api``,
``kerma.db`` or ``kerma.services``.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from pydicom import uid
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from kerma.config import Settings
from kerma.errors import ConfigurationError
from kerma.net.handlers import (
    MAX_PDU_BYTES,
    AssociationActivity,
    IntakeLimits,
    StoreCounters,
    handle_echo,
    handle_open,
    handle_store,
)
from kerma.net.spool import BytesImporter, Spool, SpoolImporter, SpoolWorker

logger = logging.getLogger(__name__)

#: Dose SR SOP classes accepted explicitly (case C14).
DOSE_SR_SOP_CLASSES: tuple[str, ...] = (
    uid.XRayRadiationDoseSRStorage,
    uid.RadiopharmaceuticalRadiationDoseSRStorage,
    uid.EnhancedXRayRadiationDoseSRStorage,
    uid.EnhancedSRStorage,
    uid.ComprehensiveSRStorage,
)

#: Transfer syntaxes accepted for every storage SOP class.
TRANSFER_SYNTAXES: tuple[str, ...] = tuple(ALL_TRANSFER_SYNTAXES)

#: A-ASSOCIATE-RJ (result, source, reason) of an association over the per-peer limit:
#: rejected-transient, DICOM UL service-provider (presentation related function),
#: local-limit-exceeded (PS3.8 Table 9-21).
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)

#: A-ASSOCIATE-RJ of a calling AE title not bound to the peer's TLS certificate:
#: rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized (PS3.8
#: Table 9-21).
REJECT_CALLING_AET = (0x01, 0x01, 0x03)

#: How often the reactor sleep of the open associations is refitted, in seconds
#: (:class:`kerma.net.handlers.AssociationActivity`).
TUNE_INTERVAL_S = 0.1


def storage_sop_classes() -> list[str]:
    """Return every storage SOP class UID the SCP accepts (dose SR classes first)."""
    seen: dict[str, None] = dict.fromkeys(DOSE_SR_SOP_CLASSES)
    for context in AllStoragePresentationContexts:
        seen.setdefault(str(context.abstract_syntax), None)
    return list(seen)


def build_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Return the server TLS context from ``scp_tls_cert``/``scp_tls_key``, or ``None``.

    Parameters
    ----------
    settings : Settings
        ``scp_tls_cert`` and ``scp_tls_key`` (PEM); with ``scp_tls_ca`` set, peers
        must present a certificate signed by that CA.

    Raises
    ------
    ConfigurationError
        When only one of certificate and key is set, or they cannot be loaded.
    """
    cert, key = settings.scp_tls_cert, settings.scp_tls_key
    if cert is None and key is None:
        if settings.scp_tls_aet_certificates:
            raise ConfigurationError(
                "Unable to bind calling AE titles to client certificates "
                "(KERMA_SCP_TLS_AET_CERTIFICATES) without TLS: set KERMA_SCP_TLS_CERT, "
                "KERMA_SCP_TLS_KEY and KERMA_SCP_TLS_CA."
            )
        return None
    if cert is None or key is None:
        raise ConfigurationError(
            "Unable to enable TLS: set both KERMA_SCP_TLS_CERT and KERMA_SCP_TLS_KEY."
        )
    if settings.scp_tls_aet_certificates and settings.scp_tls_ca is None:
        raise ConfigurationError(
            "Unable to bind calling AE titles to client certificates "
            "(KERMA_SCP_TLS_AET_CERTIFICATES): set KERMA_SCP_TLS_CA so that peers must "
            "present a certificate."
        )
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
        if settings.scp_tls_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(settings.scp_tls_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"Unable to load the TLS certificate {cert}: {exc}.") from exc
    return context


def build_ae(settings: Settings, *, ae_title: str | None = None) -> AE:
    """Return the Storage SCP application entity (contexts and timeouts set).

    Parameters
    ----------
    settings : Settings
        ``scp_aet``, ``scp_allowed_aets`` (calling AE titles allowed; empty = any),
        ``scp_max_associations`` and the ACSE, DIMSE and network (idle) time-outs
        ``scp_acse_timeout_s``, ``scp_dimse_timeout_s``, ``scp_network_timeout_s``.
    ae_title : str, optional
        Overrides ``settings.scp_aet``.
    """
    # pynetdicom's default event logging formats every PDU and DIMSE message (several
    # milliseconds of CPU per object); Kerma logs each store itself.
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=ae_title or settings.scp_aet)
    ae.require_called_aet = True  # refuse associations addressed to another AE title
    for sop_class in storage_sop_classes():
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(Verification)
    # large PDUs (few per object) but bounded: a longer one is never read
    # (kerma.net.handlers.guard_association)
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.acse_timeout = settings.scp_acse_timeout_s
    ae.dimse_timeout = settings.scp_dimse_timeout_s
    ae.network_timeout = settings.scp_network_timeout_s  # an idle association is closed
    ae.maximum_associations = settings.scp_max_associations
    if settings.scp_allowed_aets:
        ae.require_calling_aet = [a.strip() for a in settings.scp_allowed_aets]
    return ae


def certificate_identities(der: bytes | None, peer_cert: dict[str, Any] | None) -> set[str]:
    """Return how a client certificate can be named in ``scp_tls_aet_certificates``.

    Parameters
    ----------
    der : bytes or None
        The certificate (``SSLSocket.getpeercert(binary_form=True)``).
    peer_cert : dict or None
        Its decoded form (``SSLSocket.getpeercert()``).

    Returns
    -------
    set of str
        ``sha256:<64 lowercase hex digits>`` and ``CN=<common name>`` of the subject.
    """
    names: set[str] = set()
    if der:
        names.add("sha256:" + hashlib.sha256(der).hexdigest())
    for rdn in (peer_cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(f"CN={value}")
    return names


def normalise_certificate_entry(entry: str) -> str:
    """Return a ``scp_tls_aet_certificates`` entry in the form of :func:`certificate_identities`.

    ``CN=<name>`` stays as is; a fingerprint (hex, colons and spaces allowed, optional
    ``sha256:`` prefix, any case) becomes ``sha256:<lowercase hex>``.
    """
    text = entry.strip()
    if text[:3].upper() == "CN=":
        return "CN=" + text[3:].strip()
    hex_digits = text.lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    return "sha256:" + hex_digits


class AssociationAdmission:
    """Admit or reject an association request (``evt.EVT_REQUESTED``).

    Two checks, before pynetdicom's own (called AE title, ``scp_allowed_aets``,
    ``scp_max_associations``):

    - **per-peer limit**: a peer address, or a calling AE title, that already holds
      ``scp_max_associations_per_peer`` associations is rejected (A-ASSOCIATE-RJ
      :data:`REJECT_LOCAL_LIMIT`, transient: the peer may retry), so one peer cannot
      take every association of the SCP; with the idle time-out
      (``scp_network_timeout_s``) the associations it leaves open end;
    - **AE title bound to the TLS client certificate**: with
      ``scp_tls_aet_certificates`` set, the calling AE title must be listed and bound
      to the certificate the peer presented (its SHA-256 fingerprint or subject CN),
      or the association is rejected (:data:`REJECT_CALLING_AET`).

    Parameters
    ----------
    settings : Settings
        ``scp_max_associations_per_peer`` and ``scp_tls_aet_certificates``.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_per_peer = settings.scp_max_associations_per_peer
        self.bindings = {
            aet.strip(): {normalise_certificate_entry(e) for e in entries}
            for aet, entries in settings.scp_tls_aet_certificates.items()
        }
        self.rejected_per_peer = 0
        self.rejected_certificate = 0
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        """Handle ``evt.EVT_REQUESTED``: send an A-ASSOCIATE-RJ when a check fails."""
        assoc = event.assoc
        try:
            calling = str(assoc.requestor.primitive.calling_ae_title).strip()
            address = str(assoc.requestor.address)
        except AttributeError:
            return
        reason = self._certificate_refusal(assoc, calling) or self._limit_refusal(
            assoc, calling, address
        )
        if reason is None:
            return
        rejection, message = reason
        logger.warning("Rejected association from %s at %s: %s", calling, address, message)
        assoc.acse.send_reject(*rejection)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()  # as pynetdicom does: waits until the DUL has sent the A-ASSOCIATE-RJ

    def _limit_refusal(
        self, assoc: Any, calling: str, address: str
    ) -> tuple[tuple[int, int, int], str] | None:
        """Return the rejection of a peer over its association limit, or ``None``."""
        if self.max_per_peer <= 0:
            return None
        same_address = same_aet = 0
        with self._lock:
            for other in assoc.ae.active_associations:
                if other is assoc or not other.is_acceptor:
                    continue
                if other.is_rejected or other.is_aborted or other.is_released:
                    continue
                try:
                    other_calling = str(other.requestor.primitive.calling_ae_title).strip()
                    other_address = str(other.requestor.address)
                except AttributeError:
                    continue
                same_address += other_address == address
                same_aet += other_calling == calling
            if same_address < self.max_per_peer and same_aet < self.max_per_peer:
                return None
            self.rejected_per_peer += 1
        return REJECT_LOCAL_LIMIT, (
            f"{max(same_address, same_aet)} associations already open from this peer "
            f"(scp_max_associations_per_peer = {self.max_per_peer})"
        )

    def _certificate_refusal(
        self, assoc: Any, calling: str
    ) -> tuple[tuple[int, int, int], str] | None:
        """Return the rejection of an AE title not bound to the peer's certificate."""
        if not self.bindings:
            return None
        allowed = self.bindings.get(calling)
        sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
        presented: set[str] = set()
        if isinstance(sock, ssl.SSLSocket):
            presented = certificate_identities(
                sock.getpeercert(binary_form=True), sock.getpeercert()
            )
        if allowed and presented & allowed:
            return None
        with self._lock:
            self.rejected_certificate += 1
        if not allowed:
            return REJECT_CALLING_AET, "calling AE title not in scp_tls_aet_certificates"
        if not presented:
            return REJECT_CALLING_AET, "no TLS client certificate presented"
        return REJECT_CALLING_AET, (
            f"the client certificate ({', '.join(sorted(presented))}) is not bound to "
            "this calling AE title (scp_tls_aet_certificates)"
        )


class StorageSCP:
    """A running Storage SCP with its spool and import worker.

    Parameters
    ----------
    settings : Settings
        ``scp_aet``, ``scp_host``, ``scp_port``, ``scp_allowed_aets``, TLS fields
        (``scp_tls_aet_certificates`` binds calling AE titles to client
        certificates), ``archive_dir`` (the spool is ``<archive_dir>/incoming``),
        ``scp_keep_non_dose`` and the limits (``max_object_bytes``,
        ``max_inflated_bytes``, ``scp_max_associations``,
        ``scp_max_associations_per_peer``, the time-outs; docs/network.md "Limits").
    importer_factory : callable
        Returns what the worker imports with (called once, on the worker thread): a
        :class:`~kerma.net.spool.ProcessImporter` (``kerma listen``: the pipeline in a
        child process, so imports never hold up the network threads), or the ingest
        pipeline itself (``kerma.ingest.pipeline.Importer``, in this process).
    ae_title, host, port : optional
        Override the settings.
    modalities : collection of str, optional
        Keep only dose objects of these modalities (``kerma pull -m`` with a temporary
        SCP); default every modality.
    spool : Spool, optional
        The spool to write to; default one in ``settings.archive_dir``.

    Raises
    ------
    ConfigurationError
        When the TLS certificate, key or CA (``scp_tls_*``) cannot be loaded.

    Examples
    --------
    >>> scp = StorageSCP(settings, importer_factory=factory)  # doctest: +SKIP
    >>> scp.start()                          # returns at once
    >>> ...
    >>> scp.stop()                           # finish in-flight work, stop the worker
    """

    def __init__(
        self,
        settings: Settings,
        *,
        importer_factory: Callable[[], SpoolImporter | BytesImporter],
        ae_title: str | None = None,
        host: str | None = None,
        port: int | None = None,
        modalities: Collection[str] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        self.ae_title = ae_title or settings.scp_aet
        self.host = host if host is not None else settings.scp_host
        self.port = port if port is not None else settings.scp_port
        self.spool = spool if spool is not None else Spool(settings.archive_dir)
        self.counters = StoreCounters()
        self.activity = AssociationActivity()
        self._tuner_stop = threading.Event()
        self.worker = SpoolWorker(
            self.spool,
            importer_factory,
            keep_non_dose=settings.scp_keep_non_dose,
            modalities=modalities,
        )
        self.ae = build_ae(settings, ae_title=self.ae_title)
        self.ssl_context = build_ssl_context(settings)
        self.limits = IntakeLimits.from_settings(settings)
        self.admission = AssociationAdmission(settings)
        self._server: Any = None
        self._lock = threading.Lock()

    @property
    def handlers(self) -> list[tuple[Any, ...]]:
        """The event handlers bound to the server (C-STORE, C-ECHO, connection, request)."""
        return [
            (
                evt.EVT_C_STORE,
                handle_store,
                [self.spool, self.worker.submit, self.counters, self.activity, self.limits],
            ),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_CONN_OPEN, handle_open, [self.limits, self.spool.directory]),
            (evt.EVT_REQUESTED, self.admission),
        ]

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port) — the real port when ``port`` was 0."""
        if self._server is None:
            return (self.host, self.port)
        host, port = self._server.server_address[:2]
        return (str(host), int(port))

    @property
    def tls_description(self) -> str:
        """``"off"``, ``"on"`` or ``"on, client certificates required"`` (for logs)."""
        if self.ssl_context is None:
            return "off"
        if self.ssl_context.verify_mode == ssl.CERT_REQUIRED:
            return "on, client certificates required"
        return "on"

    @property
    def limits_description(self) -> str:
        """The intake limits in force, for the start line (docs/network.md "Limits")."""
        mib = 1024 * 1024
        per_peer = self.settings.scp_max_associations_per_peer or "no limit"
        bound = len(self.admission.bindings)
        return (
            f"object {self.limits.max_object_bytes / mib:g} MiB, inflated "
            f"{self.limits.max_inflated_bytes / mib:g} MiB; associations "
            f"{self.settings.scp_max_associations}, per peer {per_peer}; idle time-out "
            f"{self.settings.scp_network_timeout_s:g} s"
            + (f"; {bound} AE titles bound to client certificates" if bound else "")
        )

    def start(self) -> None:
        """Start the import worker, then listen (returns at once)."""
        with self._lock:
            if self._server is not None:
                return
            if not self.worker.is_alive():
                self.worker.start()
            self._server = self.ae.start_server(
                (self.host, self.port),
                block=False,
                evt_handlers=self.handlers,
                ssl_context=self.ssl_context,
            )
            self._tuner_stop.clear()
            threading.Thread(
                target=self._tune_associations,
                args=(self._server,),
                name="kerma-scp-tuner",
                daemon=True,
            ).start()
        logger.info(
            "Storage SCP %s listening on %s:%d (spool %s, TLS %s)",
            self.ae_title,
            *self.address,
            self.spool.directory,
            self.tls_description,
        )

    def _tune_associations(self, server: Any) -> None:
        """Every 0.1 s, fit each association's reactor sleep to its activity (until stop)."""
        while not self._tuner_stop.wait(TUNE_INTERVAL_S):
            self.activity.tune(list(server.active_associations))

    def stop(self, *, grace_s: float = 30.0, drain: bool = False) -> None:
        """Stop listening, let associations in progress finish, stop the worker.

        Parameters
        ----------
        grace_s : float, optional
            Seconds to wait for open associations to end before aborting them.
            Objects already acknowledged are on disk either way. Default 30.
        drain : bool, optional
            Wait until the worker imported everything spooled before stopping it
            (default ``False``: what is left is imported on the next start).
        """
        with self._lock:
            server, self._server = self._server, None
        self._tuner_stop.set()
        if server is not None:
            server.shutdown()  # no new associations; running ones carry on
            deadline = time.monotonic() + grace_s
            while server.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            for assoc in server.active_associations:
                logger.warning("Aborting association with %s at shutdown", assoc.requestor.ae_title)
                assoc.abort()
        if drain:
            self.worker.wait_idle()
        self.worker.stop()
        logger.info(
            "Storage SCP %s stopped: %d stored, %d failed, %d imported "
            "(of which %d ignored as non-dose, %d rejected), %d left in the spool",
            self.ae_title,
            self.counters.stored,
            self.counters.failed,
            self.worker.imported,
            self.worker.ignored,
            self.worker.rejected,
            len(self.spool.pending()),
        )
