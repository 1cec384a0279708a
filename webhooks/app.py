"""The Flask app factory: settings and plans checked, blueprints registered, errors as JSON."""

from __future__ import annotations

import logging
import sys
import time

from flask import Flask, Response, g, jsonify, request
from flask.logging import default_handler as flask_log_handler
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from notifier.delivery.whatsapp import load_whatsapp_templates
from notifier.metrics import WEBHOOK_SECONDS
from notifier.planning.plan import PlanError, load_plans
from notifier.planning.schedule import quiet_conflicts
from notifier.privacy import install_log_masking, mask_handlers
from notifier.settings import ConfigError, Settings
from notifier.store.db import make_engine
from webhooks.services import Clock, Services, listening, utc_now

MAX_BODY_BYTES = 64 * 1024
log = logging.getLogger(__name__)
BOOT_ERROR = 3  # gunicorn halts, rather than respawning, on a worker exiting with 3


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
    from webhooks import booking, dashboard, health, metrics, openapi, staff, twilio
    from webhooks.encoding import StorableInt, refuse_unstorable_url

    install_log_masking()
    mask_handlers([flask_log_handler])  # Flask's own, on app.logger until logging is set up
    app = Flask(__name__)
    app.url_map.converters["int"] = StorableInt  # before any route: 404, not a 500
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.trust_forwarded_headers:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # One proxy hop's X-Forwarded-For/-Proto/-Host/-Port make request.url the URL
        # Twilio called (and signed); a client's own X-Forwarded-Prefix is ignored.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=0
        )
    plans = load_plans(settings.plans_dir)
    if conflicts := quiet_conflicts(plans.values(), settings.quiet_hours):
        raise ConfigError("QUIET_HOURS: no message could ever go out for " + "; ".join(conflicts))
    app.extensions["aftercare"] = Services(
        settings=settings,
        engine=engine or make_engine(settings.database_url),
        plans=plans,
        templates=load_whatsapp_templates(settings, plans),
        listening=listening(settings, plans),
        clock=clock,
    )
    for blueprint in (booking.bp, twilio.bp, staff.bp, health.bp, openapi.bp, metrics.bp):
        app.register_blueprint(blueprint)
    app.before_request(_start_timing)
    app.after_request(_timed)
    dashboard.init_app(app, settings)  # the staff pages under /staff/ (SPEC §11)
    app.before_request(refuse_unstorable_url)  # 400, before a database could refuse it
    app.register_error_handler(HTTPException, _json_error)
    app.register_error_handler(OperationalError, _database_unavailable)
    return app


def _start_timing() -> None:
    g.started = time.perf_counter()


def _timed(response: Response) -> Response:
    """Every answer's time, by endpoint (`aftercare_http_request_seconds`)."""
    started = g.get("started")
    if started is not None:
        endpoint = request.endpoint or "unmatched"
        WEBHOOK_SECONDS.labels(endpoint=endpoint).observe(time.perf_counter() - started)
    return response


def _database_unavailable(error: OperationalError) -> ResponseReturnValue:
    """The database was unreachable, or busy past its timeout: 503 and "try again", not
    a 500 (nothing was stored; a retry is safe)."""
    log.error("database unavailable: %s", type(error.orig).__name__, exc_info=error)
    answer = {"error": "Service Unavailable", "message": "the database is busy or unreachable"}
    return jsonify(answer), 503, {"Retry-After": "5"}


def _json_error(error: HTTPException) -> ResponseReturnValue:
    """Every HTTP error is JSON with the status's reason, never an HTML page."""
    code = error.code or 500
    return jsonify({"error": error.name, "message": error.description}), code
