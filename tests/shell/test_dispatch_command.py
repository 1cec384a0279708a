"""`aftercare dispatch`: one run from cron sends everything that is due, pass after pass,
within `--max-seconds`, and prints one summary of all its passes."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.cli import dispatch_until_done
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.outcomes import PassReport
from notifier.delivery.sender import RateLimited
from notifier.planning.plan import load_plans
from notifier.store.db import make_engine
from notifier.store.models import Status
from tests.conftest import Clock, RecordingSender, make_settings
from tests.support.command import aftercare
from tests.support.rows import status_counts
from tests.support.seed import seed_messages

DUE = 2_000
BATCH = 50  # far fewer than DUE: only passing again on a full claim sends them all
NOW = datetime.now(UTC).replace(microsecond=0)  # the subprocess dispatches at the real time


@pytest.fixture
def backlog(database_url: str) -> str:
    """DUE messages due a minute ago (patients in UTC, send window open all day)."""
    seed_messages(database_url, DUE, NOW - timedelta(minutes=1), NOW)
    return database_url


@pytest.fixture
def small_batches(backlog: str, sender: RecordingSender) -> Iterator[Dispatcher]:
    settings = replace(make_settings(backlog), dispatch_batch_size=BATCH)
    engine = make_engine(backlog)
    dispatcher = Dispatcher(
        engine, sender, load_plans(settings.plans_dir), settings, rng=random.Random(7)
    )
    yield dispatcher
    dispatcher.close()
    engine.dispose()


def test_one_run_sends_every_due_message_pass_after_pass(backlog: str) -> None:
    env = {"DATABASE_URL": backlog, "DISPATCH_BATCH_SIZE": str(BATCH), "CLINIC_TIMEZONE": "UTC"}
    result = aftercare("dispatch", "--console", env=env)
    assert result.returncode == 0, result.stderr
    assert status_counts(backlog) == {str(Status.QUEUED): DUE}
    assert result.stdout.count("[console sender] sms to ") == DUE
    summary = [line for line in result.stdout.splitlines() if line.startswith("dispatch: ")]
    assert len(summary) == 1, summary  # one summary of the whole run, not one per pass
    assert summary[0].startswith(f"dispatch: claimed {DUE}, sent {DUE} (")
    found = re.search(r"\((\d+) passes in \d+\.\d s\)$", summary[0])
    assert found is not None, summary[0]
    assert int(found.group(1)) > DUE // BATCH  # full passes, then one that finds no more
    again = aftercare("dispatch", "--console", env=env)
    assert again.returncode == 0, again.stderr
    assert "dispatch: nothing due (1 pass in " in again.stdout


def test_max_seconds_stops_the_run_before_everything_is_sent(
    small_batches: Dispatcher, sender: RecordingSender, backlog: str
) -> None:
    ticks = iter(range(100))  # a monotonic clock that moves one second per reading

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s without being rate-limited")

    run = dispatch_until_done(
        small_batches,
        3,
        clock=lambda: NOW,
        monotonic=lambda: float(next(ticks)),
        sleep=no_sleep,
    )
    assert not run.finished
    assert run.passes == 3
    assert 0 < run.report.sent == len(sender.sent) <= 3 * BATCH
    assert status_counts(backlog) == {
        str(Status.QUEUED): run.report.sent,
        str(Status.SCHEDULED): DUE - run.report.sent,
    }
    assert run.summary().endswith("; stopped after --max-seconds 3: more may be due")
    assert run.summary().startswith(f"claimed {run.report.sent}, sent {run.report.sent}, more (")


def test_a_rate_limited_run_waits_out_the_pause_and_carries_on(
    small_batches: Dispatcher, sender: RecordingSender, backlog: str
) -> None:
    clock = Clock(NOW)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the pause passes on the run's own clock
        slept.append(seconds)
        clock.advance(seconds=seconds)

    sender.fail_next(RateLimited("429 Too Many Requests", code=20429))
    run = dispatch_until_done(small_batches, 600, clock=clock, monotonic=lambda: 0.0, sleep=sleep)
    assert run.finished
    assert len(slept) == 1 and 0 < slept[0] <= 10
    assert (run.report.rate_limited, run.report.retrying) == (1, 1)
    assert run.report.sent == len(sender.sent) == DUE - 1  # the refused one is retried later
    assert status_counts(backlog) == {str(Status.QUEUED): DUE - 1, str(Status.SCHEDULED): 1}


def test_a_sum_of_pass_reports_adds_counts_and_keeps_the_last_passes_flags() -> None:
    total = PassReport(claimed=50, sent=48, failed=2, more=True)
    total.absorb(PassReport(claimed=10, sent=9, retrying=1, rate_limited=1))
    total.absorb(PassReport(throttled=True))
    assert total == PassReport(
        claimed=60, sent=57, failed=2, retrying=1, rate_limited=1, throttled=True, more=False
    )


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "1.5"])
def test_a_bad_max_seconds_is_refused_in_one_line(value: str, tmp_path: Any) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    result = aftercare("dispatch", "--console", "--max-seconds", value, env=env)
    assert result.returncode == 2
    assert "Invalid value for '--max-seconds'" in result.stderr
    assert "Traceback" not in result.stderr
