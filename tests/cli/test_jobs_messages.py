"""What ``kerma reprocess|alerts recheck|exams --apply --queue`` says it queued."""

from __future__ import annotations

import pytest

from kerma.cli.jobs import print_enqueued
from kerma.services.jobs import Enqueued


@pytest.mark.parametrize(
    ("jobs", "said"),
    [
        ({"kerma.recheck_alerts": 1}, "queued 1 job (1 kerma.recheck_alerts); run it with"),
        (
            {"kerma.reprocess_reports": 5, "kerma.reprocess_rejected": 0},
            "queued 5 jobs (5 kerma.reprocess_reports, 0 kerma.reprocess_rejected); run them",
        ),
    ],
)
def test_enqueued_count_reads_as_english(
    jobs: dict[str, int], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One job is "1 job ... run it" (regression: "queued 1 jobs"), more are "jobs"."""
    print_enqueued(Enqueued(jobs=jobs))
    out = " ".join(capsys.readouterr().out.split())
    assert said in out, out
    assert out.endswith("with `kerma worker` on any node"), out
