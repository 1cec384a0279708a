"""The overview: charts of the last 30 days and the queue's health."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import render_template
from flask.typing import ResponseReturnValue

from notifier.staff import overview
from notifier.store.db import reading
from webhooks.dashboard import charts
from webhooks.dashboard.blueprint import bp
from webhooks.dashboard.formatting import percent
from webhooks.services import services


@bp.get("/overview")
def overview_page() -> ResponseReturnValue:
    svc = services()
    now, zone = svc.clock(), ZoneInfo(svc.settings.clinic_timezone)
    with reading(svc.engine) as db:
        figures = overview.figures(db, now, zone)
        queue = overview.queue(db, now)
    days, channels, steps = figures.days, figures.channels, figures.steps
    channel_rows = [(c.channel, c.rate, f"{percent(c.rate)} of {c.attempted}") for c in channels]
    opt_out_rows = [
        (s.step, s.opt_out_rate, f"{percent(s.opt_out_rate)} ({s.opt_outs})") for s in steps
    ]
    reply_rows = [(s.step, s.reply_rate, f"{percent(s.reply_rate)} ({s.replies})") for s in steps]
    return render_template(
        "dashboard/overview.html",
        zone=zone.key,
        days=days,
        folded={day: charts.fold(statuses) for day, statuses in days.items()},
        day_series=charts.DAY_SERIES,
        day_chart=charts.per_day(days, f"Messages per day by status, last {overview.DAYS} days"),
        channels=channels,
        channel_chart=charts.rates(channel_rows, "Delivery rate by channel", "#1a7f37"),
        steps=steps,
        opt_out_chart=charts.rates(opt_out_rows, "Opt-out rate per plan step", "#cf222e"),
        reply_chart=charts.rates(reply_rows, "Reply rate per plan step", "#0550ae"),
        queue=queue,
        period=overview.DAYS,
    )
