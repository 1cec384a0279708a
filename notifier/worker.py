"""Running the dispatcher: the APScheduler loop, the sender choice, the SQLite lock."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from notifier.dispatch import Dispatcher
from notifier.plan import load_plans
from notifier.sending import ConsoleSender, Sender
from notifier.settings import Settings
from notifier.whatsapp import load_whatsapp_templates

log = logging.getLogger(__name__)
# APScheduler reports every run of the job at INFO; a pass logs its own summary.
logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)


class WorkerLockError(Exception):
    """Another dispatcher already works on this SQLite database."""


def build_sender(settings: Settings) -> Sender:
    """Twilio when credentials are set, else the console."""
    if settings.twilio is None:
        return ConsoleSender()
    from notifier.twilio_sender import TwilioSender

    return TwilioSender(settings.twilio)


def build_dispatcher(settings: Settings, engine: Engine) -> Dispatcher:
    plans = load_plans(settings.plans_dir)
    return Dispatcher(
        engine,
        build_sender(settings),
        plans,
        settings,
        templates=load_whatsapp_templates(settings, plans),
    )


def dispatch_now(dispatcher: Dispatcher) -> None:
    """One pass at the current time; the scheduler's job."""
    report = dispatcher.run_pass(datetime.now(UTC))
    if report.claimed or report.expired or report.adopted:
        log.info("dispatch: %s", report.summary())


def add_dispatch_job(scheduler: BaseScheduler, dispatcher: Dispatcher, settings: Settings) -> None:
    scheduler.add_job(
        dispatch_now,
        "interval",
        args=[dispatcher],
        id="dispatch",
        seconds=settings.dispatch_interval_seconds,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )


def run_worker(settings: Settings, engine: Engine) -> None:
    """The dispatcher loop alone, until SIGTERM or Ctrl-C."""
    with single_worker_lock(settings.database_url):
        dispatcher = build_dispatcher(settings, engine)
        scheduler = BlockingScheduler(timezone=UTC)
        add_dispatch_job(scheduler, dispatcher, settings)

        def stop(_signum: int, _frame: FrameType | None) -> None:
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        log.info("worker started: a pass every %gs", settings.dispatch_interval_seconds)
        try:
            scheduler.start()
        except KeyboardInterrupt:
            pass
        finally:
            dispatcher.close()
        log.info("worker stopped")


def start_background(settings: Settings, engine: Engine) -> BackgroundScheduler:
    """The dispatcher in a background thread, for `aftercare run`."""
    scheduler = BackgroundScheduler(timezone=UTC)
    add_dispatch_job(scheduler, build_dispatcher(settings, engine), settings)
    scheduler.start()
    return scheduler


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
