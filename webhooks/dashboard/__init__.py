"""The staff dashboard (SPEC §11): server-rendered pages under /staff/ for the people
who read patients' replies and follow their aftercare, signed in with accounts made
by `aftercare staff add`. Templates and the stylesheet live beside it; nothing is
fetched from the internet."""

from __future__ import annotations

from flask import Flask

from notifier.settings import Settings
from webhooks.dashboard import auth, inbox, overview, patients, plans, problems
from webhooks.dashboard.blueprint import bp

PAGES = (inbox, overview, patients, plans, problems)  # their routes are on `bp`


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the pages and the session cookie's settings. Without SECRET_KEY the
    pages are still there, answering 503 (see `auth.guard`)."""
    app.config.update(
        SESSION_COOKIE_NAME="aftercare_staff",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=(settings.public_base_url or "").startswith("https://"),
        PERMANENT_SESSION_LIFETIME=auth.IDLE_TIMEOUT,  # the cookie's own expiry, a backstop
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as its session
    )
    if settings.secret_key is not None:
        app.secret_key = settings.secret_key
    auth.install(app)
    app.register_blueprint(bp)
