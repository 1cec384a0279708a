"""The `aftercare` command: run, worker, dispatch, queue, db upgrade, plan check/preview,
booking post, import."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from notifier.cli_staff import staff
from notifier.consent.keywords import KeywordError, load_keywords
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.outcomes import PassReport
from notifier.delivery.queue_health import queue_state
from notifier.delivery.whatsapp import load_whatsapp_templates
from notifier.events.publisher import Published, Publisher
from notifier.planning.plan import PlanError, load_plans
from notifier.planning.preview import render_preview
from notifier.planning.schedule import quiet_conflicts
from notifier.settings import ConfigError, Settings
from notifier.store import migrate
from notifier.store.db import make_engine
from notifier.worker import (
    WorkerLockError,
    build_dispatcher,
    fold_tallies,
    run_worker,
    single_worker_lock,
)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_SECONDS = 600  # `aftercare dispatch` starts no pass after this long
# The longest `aftercare dispatch` waits at once for Twilio's rate-limit pause to end
# (the dispatcher's pause is at most 10 s); it then looks again.
THROTTLE_WAIT_SECONDS = 10.0

console_option = click.option(
    "--console",
    is_flag=True,
    help="Without Twilio credentials, print each message instead of sending it (on purpose).",
)


def clear_errors(command: F) -> F:
    """Configuration, plan and lock problems end the command with one clear line."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            raise click.ClickException(f"configuration error: {error}") from None
        except PlanError as error:
            raise click.ClickException("plan error:\n" + str(error)) from None
        except WorkerLockError as error:
            raise click.ClickException(str(error)) from None
        except migrate.NotMigrated as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]


@click.group()
def main() -> None:
    """Aftercare Notifier: texts patients their aftercare instructions on time."""
    from notifier.privacy import install_log_masking

    install_log_masking()  # every command: a phone number in any log line is masked


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8000, show_default=True, envvar="PORT", type=click.IntRange(1, 65535)
)
@clear_errors
def run(host: str, port: int) -> None:
    """The whole service in one process: web and dispatcher (migrates first)."""
    from notifier.server import serve

    settings = Settings.from_env()
    load_keywords(settings.keywords_file, load_plans(settings.plans_dir))
    migrate.upgrade(settings.database_url)
    with single_worker_lock(settings.database_url):
        pass  # fail now, clearly, if a separate worker already holds the SQLite database
    sender = "Twilio" if settings.twilio else "console (no Twilio credentials set)"
    click.echo(f"aftercare: http://{host}:{port}  database {_safe_url(settings)}  sender {sender}")
    dashboard = "" if settings.secret_key else "  (set SECRET_KEY to use it)"
    click.echo(f"staff dashboard: http://{host}:{port}/staff/{dashboard}")
    serve(settings, host, port)


@main.command()
@console_option
@clear_errors
def worker(console: bool) -> None:
    """The dispatcher loop alone (APScheduler), every DISPATCH_INTERVAL_SECONDS."""
    settings = Settings.from_env()
    _check_sender(settings, console=console)
    migrate.ensure_current(settings.database_url)
    run_worker(settings, make_engine(settings.database_url))


@main.command()
@click.option(
    "--max-seconds",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SECONDS,
    show_default=True,
    help="Start no pass after this long, even if more is due.",
)
@console_option
@clear_errors
def dispatch(max_seconds: int, console: bool) -> None:
    """Send everything due now, pass after pass, then exit, printing what it did."""
    settings = Settings.from_env()
    _check_sender(settings, console=console)
    migrate.ensure_current(settings.database_url)
    engine = make_engine(settings.database_url)
    with single_worker_lock(settings.database_url):
        dispatcher = build_dispatcher(settings, engine)
        try:
            run = dispatch_until_done(dispatcher, max_seconds)
        finally:
            dispatcher.close()
        events = publish_until_done(Publisher(engine, settings), max_seconds)
        fold_tallies(engine)
    click.echo(f"dispatch: {run.summary()}")
    if settings.events_webhook_url is not None or events.dropped:
        click.echo(
            f"events: {events.delivered} delivered, {events.failed} to retry, "
            f"{events.dropped} dropped (older than the maximum age)"
        )


@dataclass
class DispatchRun:
    """What one `aftercare dispatch` did: its passes' reports added up."""

    report: PassReport
    passes: int
    seconds: float
    finished: bool  # False: --max-seconds ran out while more may have been due
    max_seconds: float

    def summary(self) -> str:
        passes = "1 pass" if self.passes == 1 else f"{self.passes} passes"
        line = f"{self.report.summary()} ({passes} in {self.seconds:.1f} s)"
        if not self.finished:
            line += f"; stopped after --max-seconds {self.max_seconds:g}: more may be due"
        return line


def dispatch_until_done(
    dispatcher: Dispatcher,
    max_seconds: float,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DispatchRun:
    """Passes until one finds nothing more due now, or until `max_seconds` have gone.

    A full claim means more may be due; a rate-limited pass leaves messages due, so
    the run waits out Twilio's pause (never past the deadline) and goes on."""
    start, total, passes = monotonic(), PassReport(), 0
    while True:
        report = dispatcher.run_pass(clock())
        total.absorb(report)
        passes += 1
        elapsed = monotonic() - start
        more = report.more or report.throttled or report.rate_limited > 0
        if more and elapsed >= max_seconds:
            return DispatchRun(total, passes, elapsed, False, max_seconds)
        wait = _throttle_wait(dispatcher, clock()) if report.throttled else 0.0
        if not more or wait is None:
            return DispatchRun(total, passes, elapsed, True, max_seconds)
        if wait > 0:
            sleep(min(wait, max_seconds - elapsed))


def publish_until_done(publisher: Publisher, max_seconds: float) -> Published:
    """Event passes until one delivers nothing (each posts one event per patient, so a
    patient's backlog takes a pass per event), within `max_seconds`."""
    start, total = time.monotonic(), Published()
    while True:
        done = publisher.run(datetime.now(UTC))
        total.absorb(done)
        if done.delivered == 0 or time.monotonic() - start >= max_seconds:
            return total


def _throttle_wait(dispatcher: Dispatcher, now: datetime) -> float | None:
    """Seconds until the next pass can claim (None: nothing is scheduled at all)."""
    wake = dispatcher.next_pass_at()
    if wake is None:
        return None
    return min(max((wake - now).total_seconds(), 0.0), THROTTLE_WAIT_SECONDS)


def _check_sender(settings: Settings, *, console: bool) -> None:
    """A worker without Twilio credentials marks messages queued that nobody receives:
    it runs only when asked for the console explicitly."""
    if settings.twilio is None and not console:
        raise click.ClickException(
            "no Twilio credentials (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN): messages would "
            "only be printed; set them, or pass --console to print them on purpose"
        )
    if settings.twilio is not None and console:
        raise click.ClickException(
            "--console: Twilio credentials are set, so messages go to Twilio; drop --console"
        )


@main.command()
@clear_errors
def queue() -> None:
    """How the outbox stands; exits 1 when messages are overdue or stuck (for monitoring)."""
    settings = Settings.from_env()
    migrate.ensure_current(settings.database_url)
    now = datetime.now(UTC)
    state = queue_state(make_engine(settings.database_url), now)
    for line in state.lines(now):
        click.echo(line)
    if not state.healthy:
        sys.exit(1)


main.add_command(staff)  # `aftercare staff add|list|remove|password` (notifier.cli_staff)


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
@clear_errors
def upgrade() -> None:
    """Apply every pending migration (Alembic)."""
    settings = Settings.from_env()
    migrate.upgrade(settings.database_url)
    click.echo(
        f"database {_safe_url(settings)} is at revision {migrate.current(settings.database_url)}"
    )


@main.group()
def plan() -> None:
    """Aftercare plans in config/plans/."""


@plan.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Plan directory (default: config/plans).",
)
@clear_errors
def check(directory: Path | None) -> None:
    """Validate every plan file, and the keyword file, triage rules and WhatsApp template
    mapping against them."""
    from notifier.replies.triage import TriageError, load_triage
    from notifier.replies.urgent import AlertTextError, load_alert_texts

    settings = Settings.from_env()
    plans = load_plans(directory or settings.plans_dir)
    if conflicts := quiet_conflicts(plans.values(), settings.quiet_hours):
        raise ConfigError("QUIET_HOURS: no message could ever go out for " + "; ".join(conflicts))
    for kind, item in sorted(plans.items()):
        click.echo(f"ok  {kind}: {len(item.steps)} steps, languages {', '.join(item.languages)}")
    try:
        keywords = load_keywords(settings.keywords_file, plans)
    except KeywordError as error:  # each line names the file: no "plan error" heading
        raise click.ClickException(str(error)) from None
    counts = Counter(lang for word in keywords.words.values() for lang in word.languages)
    per_language = ", ".join(f"{lang} {counts[lang]}" for lang in keywords.answers)
    click.echo(f"ok  keywords ({keywords.source}): words per language {per_language}")
    try:
        triage = load_triage(plans, settings.triage_file)
    except TriageError as error:  # each line names the file: no "plan error" heading
        raise click.ClickException(str(error)) from None
    click.echo(f"ok  triage ({triage.source}): {triage.summary()}")
    try:
        alerts = load_alert_texts(plans, settings.alerts_file)
    except AlertTextError as error:  # each line names the file
        raise click.ClickException(str(error)) from None
    languages = ", ".join(alerts.acknowledgements)
    click.echo(f"ok  urgent-reply texts ({alerts.source}): acknowledgements in {languages}")
    templates = load_whatsapp_templates(settings, plans)
    source = settings.whatsapp_templates_file
    found = f"{len(templates.by_step)} templates" if source.exists() else "no file: SMS fallback"
    click.echo(f"ok  WhatsApp templates ({source}): {found}")


@plan.command()
@click.option("--kind", required=True, help="Treatment kind, e.g. scalp_micropigmentation.")
@click.option(
    "--performed-at",
    "performed_at",
    required=True,
    help="ISO 8601 with offset, e.g. 2027-03-01T10:00:00+04:00.",
)
@click.option("--tz", "timezone", required=True, help="Patient's IANA timezone.")
@click.option("--lang", "language", default="en", show_default=True, help="Language tag.")
@click.option("--first-name", default="Omar", show_default=True)
@click.option(
    "--now",
    "now_text",
    default=None,
    help="Enrolment time (ISO 8601, default: the treatment time).",
)
@clear_errors
def preview(
    kind: str,
    performed_at: str,
    timezone: str,
    language: str,
    first_name: str,
    now_text: str | None,
) -> None:
    """Show a plan's timeline in the patient's local time."""
    settings = Settings.from_env()
    plans = load_plans(settings.plans_dir)
    if kind not in plans:
        raise click.BadParameter(
            f"no plan {kind!r} (known: {', '.join(sorted(plans))})", param_hint="--kind"
        )
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(
            f"{timezone!r} is not an IANA timezone name", param_hint="--tz"
        ) from None
    performed = _aware(performed_at, "--performed-at")
    now = _aware(now_text, "--now") if now_text else performed
    click.echo(
        render_preview(plans[kind], performed, tz, now, language, first_name, settings.clinic)
    )


@main.group()
def booking() -> None:
    """Talk to the booking webhook like a booking system does."""


@booking.command("post")
@click.argument("event", type=click.File("rb"))
@click.option("--url", default="http://127.0.0.1:8000/webhooks/booking", show_default=True)
@clear_errors
def post(event: Any, url: str) -> None:
    """Sign EVENT (a JSON file, or - for stdin) with BOOKING_WEBHOOK_SECRET and POST it."""
    from notifier.signature import sign

    secret = Settings.from_env().booking_webhook_secret
    if not secret:
        raise click.ClickException("BOOKING_WEBHOOK_SECRET is unset: nothing to sign with")
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL", param_hint="--url")
    body = event.read()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Aftercare-Signature": sign(secret, body, int(time.time())),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    except urllib.error.URLError as error:
        raise click.ClickException(f"cannot reach {url}: {error.reason}") from None
    click.echo(f"HTTP {status}")
    click.echo(_pretty(answer))
    if status >= 400:
        sys.exit(1)


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and say what would be imported.")
@clear_errors
def import_(file: Path, dry_run: bool) -> None:
    """Enrol past treatments from FILE (CSV, one row per treatment, a header row naming
    the columns: see the README). Treatments already stored are skipped."""
    from notifier.booking import import_csv as csv_import
    from notifier.booking.event import Context
    from notifier.booking.spreadsheet import SheetError
    from notifier.progress import progress

    settings = Settings.from_env()
    migrate.ensure_current(settings.database_url)
    plans, now = load_plans(settings.plans_dir), datetime.now(UTC)
    context = Context(
        now, frozenset(plans), settings.default_phone_region, settings.clinic_timezone
    )
    try:
        checked = csv_import.check_file(file.read_bytes(), context, dry_run=dry_run)
    except SheetError as error:
        raise click.ClickException(f"{file}: {error}") from None
    engine = make_engine(settings.database_url)
    importer = csv_import.Importer(engine, plans, settings.clinic, now)
    try:
        with progress(len(checked.rows), "checking" if dry_run else "importing") as told:
            report = csv_import.import_rows(importer, checked, progress=told)
    except csv_import.ImportInterrupted as stop:
        _import_report(stop.report.errors, stop.report.lines())
        raise click.ClickException(str(stop)) from None
    finally:
        engine.dispose()
    _import_report(report.errors, report.lines())
    if report.bad_rows:
        sys.exit(1)


def _import_report(errors: list[Any], summary: list[str]) -> None:
    """Every bad row (stderr), then the summary."""
    for error in errors:
        click.echo(str(error), err=True)
    for line in summary:
        click.echo(f"import: {line}")


def _aware(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not ISO 8601", param_hint=option) from None
    if moment.tzinfo is None:
        raise click.BadParameter("needs a UTC offset, e.g. +04:00", param_hint=option)
    return moment


def _pretty(raw: bytes) -> str:
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)
