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

Received objects go to the durable spool and a :class:`~kerma.net.spool.SpoolWorker`
imports them (see :mod:`kerma.net.spool`) with the importer the caller passes in
(``kerma listen``: a :class:`~kerma.net.spool.ProcessImporter`).

May import ``kerma.config``, ``kerma.errors`` and ``kerma.net``; never ``kerma.api``,
``kerma.db`` or ``kerma.services``.
"""

from __future__ import annotations

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
    AssociationActivity,
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

#: Timeouts of the SCP, in seconds (ACSE, DIMSE, network).
ACSE_TIMEOUT_S = 30.0
DIMSE_TIMEOUT_S = 60.0
NETWORK_TIMEOUT_S = 60.0

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
        return None
    if cert is None or key is None:
        raise ConfigurationError(
            "Unable to enable TLS: set both KERMA_SCP_TLS_CERT and KERMA_SCP_TLS_KEY."
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
        ``scp_aet`` and ``scp_allowed_aets`` (calling AE titles allowed; empty = any).
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
    ae.maximum_pdu_size = 0  # no limit: the peer sends the largest PDUs it can
    ae.acse_timeout = ACSE_TIMEOUT_S
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    ae.network_timeout = NETWORK_TIMEOUT_S
    ae.maximum_associations = 64
    if settings.scp_allowed_aets:
        ae.require_calling_aet = [a.strip() for a in settings.scp_allowed_aets]
    return ae


class StorageSCP:
    """A running Storage SCP with its spool and import worker.

    Parameters
    ----------
    settings : Settings
        ``scp_aet``, ``scp_host``, ``scp_port``, ``scp_allowed_aets``, TLS fields,
        ``archive_dir`` (the spool is ``<archive_dir>/incoming``) and
        ``scp_keep_non_dose``.
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
        self._server: Any = None
        self._lock = threading.Lock()

    @property
    def handlers(self) -> list[tuple[Any, ...]]:
        """The event handlers bound to the server (C-STORE, C-ECHO)."""
        return [
            (
                evt.EVT_C_STORE,
                handle_store,
                [self.spool, self.worker.submit, self.counters, self.activity],
            ),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_CONN_OPEN, handle_open),
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
