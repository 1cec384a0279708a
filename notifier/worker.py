"""Running the dispatcher: the APScheduler loop, the sender choice, the SQLite lock."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from notifier.consent.retention import INTERVAL as RETENTION_INTERVAL
from notifier.consent.retention import Retention
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import ConsoleSender, Sender
from notifier.delivery.whatsapp import load_whatsapp_templates
from notifier.events.publisher import Publisher
from notifier.planning.plan import load_plans
from notifier.settings import Settings
from notifier.store import tally
from notifier.store.db import transaction

log = logging.getLogger(__name__)
# APScheduler reports every run of the job at INFO; a pass logs its own summary.
logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)

JOB_ID = "dispatch"
RETENTION_JOB_ID = "retention"
EVENTS_JOB_ID = "events"
TALLY_JOB_ID = "tally"
TALLY_INTERVAL = timedelta(minutes=1)
WAKE_MARGIN = timedelta(milliseconds=50)


class WorkerLockError(Exception):
    """Another dispatcher already works on this SQLite database."""


def build_sender(settings: Settings) -> Sender:
    """Twilio when credentials are set, else the console."""
    if settings.twilio is None:
        return ConsoleSender()
    from notifier.delivery.twilio_sender import TwilioSender

    return TwilioSender(settings.twilio, concurrency=settings.dispatch_concurrency)


def build_dispatcher(settings: Settings, engine: Engine) -> Dispatcher:
    plans = load_plans(settings.plans_dir)
    return Dispatcher(
        engine,
        build_sender(settings),
        plans,
        settings,
        templates=load_whatsapp_templates(settings, plans),
    )


class DispatchJob:
    """The scheduler's job: passes until nothing more is due now, then an early wake-up.

    A full claim means more may be due, so passes follow each other without waiting
    for the next tick. Afterwards the job's next run is moved forward to the next
    message's due time (or the end of a rate-limit pause) when that comes before the
    regular tick: a message is sent when it falls due, not up to an interval later.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        scheduler: BaseScheduler,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.clock = clock
        self.stopping = threading.Event()  # set on shutdown: finish this pass, start no more
        self._running = threading.Lock()

    def __call__(self) -> None:
        with self._running:
            while not self.stopping.is_set():
                report = self.dispatcher.run_pass(self.clock())
                if report.claimed or report.expired or report.adopted:
                    log.info("dispatch: %s", report.summary())
                if not report.more:
                    self._wake_early()
                    break

    def stop(self) -> None:
        """Let the pass under way finish, and start no other. Call it after the
        scheduler's `shutdown(wait=False)`: a `shutdown(wait=True)` holds the
        scheduler's job store lock while it waits, and `_wake_early` needs that lock."""
        self.stopping.set()
        with self._running:
            return

    def _wake_early(self) -> None:
        wake = self.dispatcher.next_pass_at()
        job = self.scheduler.get_job(JOB_ID)  # None once the scheduler has shut down
        if wake is None or job is None or job.next_run_time is None:
            return
        # Never in the past: the job has to return before the scheduler may run it again.
        wake = max(wake, self.clock() + WAKE_MARGIN)
        if wake < job.next_run_time:
            with suppress(JobLookupError):  # the scheduler shut down just now
                job.modify(next_run_time=wake)


def add_dispatch_job(
    scheduler: BaseScheduler, dispatcher: Dispatcher, settings: Settings
) -> DispatchJob:
    job = DispatchJob(dispatcher, scheduler)
    scheduler.add_job(
        job,
        "interval",
        id=JOB_ID,
        seconds=settings.dispatch_interval_seconds,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
    return job


def add_retention_job(
    scheduler: BaseScheduler, engine: Engine, settings: Settings
) -> Retention | None:
    """With RETENTION_DAYS, retention runs hourly from start-up as a job of its own, so
    it never delays a pass; it stops between batches once the scheduler shuts down."""
    if settings.retention_days is None:
        return None
    retention = Retention(
        engine, settings.retention_days, stopping=lambda: scheduler.state == STATE_STOPPED
    )
    scheduler.add_job(
        retention,
        "interval",
        id=RETENTION_JOB_ID,
        seconds=RETENTION_INTERVAL.total_seconds(),
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
    log.info("retention: texts of treatments past %d days are erased, hourly", retention.keep.days)
    return retention


def add_events_job(scheduler: BaseScheduler, engine: Engine, settings: Settings) -> Publisher:
    """Events go to the booking system from a job of their own, every dispatch interval:
    a slow receiver never delays a message. Without EVENTS_WEBHOOK_URL the job only
    drops what nobody will receive."""
    publisher = Publisher(engine, settings)
    scheduler.add_job(
        lambda: publisher.run(datetime.now(UTC)),
        "interval",
        id=EVENTS_JOB_ID,
        seconds=settings.dispatch_interval_seconds,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
    return publisher


def fold_tallies(engine: Engine) -> int:
    """The overview's counts take in the changes the database's triggers wrote."""
    with transaction(engine) as session:
        return tally.fold(session)


def add_tally_job(scheduler: BaseScheduler, engine: Engine) -> None:
    """Folding runs every minute as a job of its own. Pages read the changes not yet
    folded too, so a late fold costs the overview a little time, never a count."""
    scheduler.add_job(
        fold_tallies,
        "interval",
        args=(engine,),
        id=TALLY_JOB_ID,
        seconds=TALLY_INTERVAL.total_seconds(),
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )


def add_upkeep_jobs(scheduler: BaseScheduler, engine: Engine, settings: Settings) -> None:
    """The jobs beside dispatching, each on its own schedule: retention, events, tallies."""
    add_retention_job(scheduler, engine, settings)
    add_events_job(scheduler, engine, settings)
    add_tally_job(scheduler, engine)


def run_worker(settings: Settings, engine: Engine) -> None:
    """The dispatcher loop alone, until SIGTERM or Ctrl-C."""
    with single_worker_lock(settings.database_url):
        dispatcher = build_dispatcher(settings, engine)
        scheduler = BlockingScheduler(timezone=UTC)
        job = add_dispatch_job(scheduler, dispatcher, settings)
        add_upkeep_jobs(scheduler, engine, settings)

        def stop(_signum: int, _frame: FrameType | None) -> None:
            job.stopping.set()
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        log.info("worker started: a pass every %gs", settings.dispatch_interval_seconds)
        try:
            scheduler.start()
        except KeyboardInterrupt:
            scheduler.shutdown(wait=False)
        finally:
            job.stop()
            dispatcher.close()
        log.info("worker stopped")


@contextmanager
def dispatching_in_background(settings: Settings, engine: Engine) -> Iterator[BackgroundScheduler]:
    """The dispatcher in a background thread, for `aftercare run`; on exit the pass under
    way finishes and no other starts."""
    scheduler = BackgroundScheduler(timezone=UTC)
    dispatcher = build_dispatcher(settings, engine)
    job = add_dispatch_job(scheduler, dispatcher, settings)
    add_upkeep_jobs(scheduler, engine, settings)
    scheduler.start()
    try:
        yield scheduler
    finally:
        job.stopping.set()
        scheduler.shutdown(wait=False)
        job.stop()
        dispatcher.close()


@contextmanager
def single_worker_lock(database_url: str) -> Iterator[None]:
    """On SQLite only one dispatcher may run: hold an exclusive lock beside the file.

    PostgreSQL needs no lock: claims use FOR UPDATE SKIP LOCKED.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    path = Path(url.database).resolve().with_name(Path(url.database).name + ".worker.lock")
    handle: IO[str] = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise WorkerLockError(
            f"another worker (pid {holder}) is already dispatching from {url.database}. "
            "SQLite allows one worker; use PostgreSQL (DATABASE_URL=postgresql+psycopg://...) "
            "to run several."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
