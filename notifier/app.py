"""The Flask app factory and the services every request handler shares."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException

from notifier.db import make_engine
from notifier.outbox import Clinic
from notifier.plan import Plan, PlanError, load_plans
from notifier.privacy import PhoneMaskingFilter
from notifier.settings import ConfigError, Settings
from notifier.whatsapp import Templates, load_whatsapp_templates

MAX_BODY_BYTES = 64 * 1024
BOOT_ERROR = 3  # gunicorn halts, rather than respawning, on a worker exiting with 3

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    plans: dict[str, Plan]
    templates: Templates
    clock: Clock

    @property
    def clinic(self) -> Clinic:
        return Clinic(self.settings.clinic_name, self.settings.clinic_phone)


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, clock: Clock = utc_now
) -> Flask:
    """Build the web app. Configuration and plans are validated here, so a bad deploy
    stops at start-up rather than on a request. Called without `settings` (as
    `gunicorn 'notifier:create_app()'` and `flask --app notifier` do), a bad value
    ends the process with one line naming it; given settings, errors are raised."""
    if settings is not None:
        return _build(settings, engine, clock)
    try:
        return _build(Settings.from_env(), engine, clock)
    except (ConfigError, PlanError) as error:
        print(f"aftercare cannot start: {error}", file=sys.stderr, flush=True)
        raise SystemExit(BOOT_ERROR) from None


def _build(settings: Settings, engine: Engine | None, clock: Clock) -> Flask:
    from webhooks import booking, health, staff, twilio

    install_log_masking()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    plans = load_plans(settings.plans_dir)
    app.extensions["aftercare"] = Services(
        settings=settings,
        engine=engine or make_engine(settings.database_url),
        plans=plans,
        templates=load_whatsapp_templates(settings, plans),
        clock=clock,
    )
    for blueprint in (booking.bp, twilio.bp, staff.bp, health.bp):
        app.register_blueprint(blueprint)
    app.register_error_handler(HTTPException, _json_error)
    return app


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions["aftercare"]
    return found


def install_log_masking() -> None:
    """Mask phone numbers on every root handler (a safety net under explicit masking)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    for handler in root.handlers:
        if not any(isinstance(f, PhoneMaskingFilter) for f in handler.filters):
            handler.addFilter(PhoneMaskingFilter())


def _json_error(error: HTTPException) -> ResponseReturnValue:
    """Every HTTP error is JSON with the status's reason, never an HTML page."""
    code = error.code or 500
    return jsonify({"error": error.name, "message": error.description}), code
