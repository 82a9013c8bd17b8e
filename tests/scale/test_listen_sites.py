"""Two ``kerma listen`` nodes of two sites receive at once into one PostgreSQL (#15).

Each node runs with its own ``KERMA_SITE`` and spool, both write to the same database;
objects are sent to both at the same time over several associations. Afterwards each
site's filter returns that node's studies only, and a user of one site is refused the
other's study detail.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from kerma.db.filters import StudyFilter
from kerma.demo.generator import build_demo_dataset
from kerma.errors import SiteAccessError
from kerma.services.registry import Registry
from kerma.web.security import Principal, Role
from tests.db_fixtures import TEST_PSEUDONYM_KEY, fresh_database, make_settings
from tests.net.conftest import KermaListener, SendLog, send_concurrently

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STUDIES = 24


@dataclass
class SiteListener(KermaListener):
    """A ``kerma listen`` node writing to a shared database (not its own SQLite file)."""

    url: str = ""

    @property
    def database_url(self) -> str:
        """The shared database."""
        return self.url


def test_two_listen_nodes_of_two_sites(tmp_path: Path) -> None:
    """North and South receive concurrently; filters and restriction follow the sites."""
    datasets = [build_demo_dataset(i, seed=21, studies=STUDIES)[0] for i in range(STUDIES)]
    halves = {"North": datasets[: STUDIES // 2], "South": datasets[STUDIES // 2 :]}
    with fresh_database("postgresql", tmp_path) as url:
        Registry(settings=make_settings(url, tmp_path / "setup")).close()  # schema once
        nodes = {
            site: SiteListener(
                tmp_path / site,
                url=url,
                extra_env={
                    "KERMA_SITE": site,
                    "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
                    "KERMA_ARCHIVE_MODE": "original",
                },
            )
            for site in halves
        }
        try:
            for node in nodes.values():
                node.start()
            logs = {site: SendLog() for site in halves}
            senders = [
                threading.Thread(
                    target=send_concurrently,
                    args=(halves[site], nodes[site].port),
                    kwargs={"associations": 4, "log": logs[site]},
                )
                for site in halves
            ]
            for thread in senders:
                thread.start()
            for thread in senders:
                thread.join(300)
            for site, node in nodes.items():
                assert not logs[site].errors, logs[site].errors
                node.wait_drained()
        finally:
            for node in nodes.values():
                node.terminate()
        with Registry(settings=make_settings(url, tmp_path / "reader")) as registry:
            for site, sent in halves.items():
                frame = registry.studies(
                    flt=StudyFilter(site_names=(site,)), include_non_patient=True
                )
                assert sorted(frame["study_instance_uid"]) == sorted(
                    str(ds.StudyInstanceUID) for ds in sent
                ), site
            north_id, south_id = registry.site_ids(["North", "South"])
            registry.assign_user_sites("nora", ["North"])
            nora = Principal("nora", Role.physicist, site_ids=registry.sites_for_user("nora"))
            south = registry.studies(
                flt=StudyFilter(site_ids=(south_id,)), include_non_patient=True
            )
            with pytest.raises(SiteAccessError):
                registry.study(int(south["study_id"].iloc[0]), principal=nora)
            assert registry.sites_for_user("nora") == (north_id,)
