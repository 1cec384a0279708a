"""Signing in and out, and the guard every dashboard request passes: SECRET_KEY set,
CSRF token on every form, a live session of an account that still exists."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Flask, abort, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from sqlmodel import Session
from werkzeug.exceptions import HTTPException
from wtforms import ValidationError

from notifier.staff import accounts, throttle
from notifier.staff.inbox import unhandled_count
from notifier.store.db import reading, retrying
from webhooks.dashboard.blueprint import bp
from webhooks.dashboard.formatting import install_filters
from webhooks.services import services

PUBLIC = {"dashboard.login", "dashboard.static"}
IDLE_TIMEOUT = timedelta(minutes=30)  # a session unused this long must sign in again


def install(app: Flask) -> None:
    install_filters(app)
    app.jinja_env.globals["csrf_token"] = generate_csrf


@bp.context_processor
def clinic() -> dict[str, str]:
    settings = services().settings
    return {"clinic_name": settings.clinic_name, "clinic_zone": settings.clinic_timezone}


@bp.before_request
def guard() -> ResponseReturnValue | None:
    if request.endpoint == "dashboard.static":
        return None
    if services().settings.secret_key is None:
        return render_template("dashboard/unconfigured.html"), 503
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as error:
            raise CSRFError(str(error)) from None
    g.staff = _signed_in()
    if g.staff is None and request.endpoint not in PUBLIC:
        return redirect(url_for("dashboard.login", next=local_path(request.full_path)))
    if g.staff is not None:
        with reading(services().engine) as db:
            g.unhandled = unhandled_count(db)
    return None


def _signed_in() -> str | None:
    """The signed-in staff member's name, or None (never signed in, idle too long, or
    the account removed or its password changed since)."""
    name, stamp, seen = session.get("staff"), session.get("stamp"), session.get("seen")
    if not isinstance(name, str) or not isinstance(stamp, str) or not isinstance(seen, str):
        return None
    now = services().clock()
    try:
        idle = now - datetime.fromisoformat(seen)
    except (ValueError, TypeError):
        idle = IDLE_TIMEOUT
    with reading(services().engine) as db:
        account = accounts.find(db, name)
    if idle >= IDLE_TIMEOUT or account is None or accounts.session_stamp(account) != stamp:
        session.clear()
        if idle >= IDLE_TIMEOUT:
            session["expired"] = True  # the sign-in page says why
        return None
    session["seen"] = now.isoformat()
    return name


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = local_path(request.args.get("next", ""))
    if request.method == "GET":
        if g.staff is not None:
            return redirect(target)
        expired = session.pop("expired", False)
        return render_template("dashboard/login.html", next=target, expired=expired)
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not name or not password:
        return _refused("Enter your user name and password.", name, target, 400)
    svc = services()
    keys = throttle.keys(name, request.remote_addr)
    now = svc.clock()
    with reading(svc.engine) as db:
        until = throttle.blocked_until(db, keys, now)
    if until is not None:
        wait = max(1, round((until - now).total_seconds()))
        message = f"Too many failed sign-ins. Try again in {wait} seconds."
        return _refused(message, name, target, 429, {"Retry-After": str(wait)})

    def attempt(db: Session) -> str | None:
        account = accounts.verify(db, name, password, now)
        if account is None:
            throttle.record_failure(db, keys, now)
            return None
        throttle.clear(db, keys[0])
        return accounts.session_stamp(account)

    stamp = retrying(svc.engine, attempt)
    if stamp is None:
        return _refused("That user name and password do not match an account.", name, target, 401)
    session.clear()
    session.permanent = True
    session.update(staff=name, stamp=stamp, seen=now.isoformat())
    return redirect(target)


def _refused(
    message: str, name: str, target: str, status: int, headers: dict[str, str] | None = None
) -> ResponseReturnValue:
    page = render_template("dashboard/login.html", error=message, username=name, next=target)
    return page, status, headers or {}


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.route("/<path:anything>")
def not_found(anything: str) -> ResponseReturnValue:
    abort(404)


@bp.errorhandler(HTTPException)
def html_error(error: HTTPException) -> ResponseReturnValue:
    """Errors under /staff/ are pages a person can read, not JSON."""
    code = error.code or 500
    if isinstance(error, CSRFError):
        message = (
            "This form was not sent from a page of this dashboard, or its page is too old. "
            "Go back, reload the page and try again."
        )
    else:
        message = error.description or ""
    return render_template(
        "dashboard/error.html", code=code, title=error.name, message=message
    ), code


def local_path(target: str) -> str:
    """Where to go after signing in: only a page of the dashboard itself."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/staff/") or "\\" in target:
        return url_for("dashboard.inbox_page")
    return target.rstrip("?")
