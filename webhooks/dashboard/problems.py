"""Delivery problems of the last 14 days, grouped by cause."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from notifier.staff import problems
from notifier.store.db import reading
from webhooks.dashboard.blueprint import bp
from webhooks.services import services


@bp.get("/problems")
def problems_page() -> ResponseReturnValue:
    svc = services()
    with reading(svc.engine) as db:
        found = problems.problems(db, svc.clock())
    return render_template("dashboard/problems.html", problems=found, days=problems.DAYS)
