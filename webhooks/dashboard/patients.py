"""A patient's page (timeline, consent log, recording their wish to stop or to resume)
and search."""

from __future__ import annotations

import logging

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlmodel import Session

from notifier.consent import opt_out
from notifier.privacy import mask_phone
from notifier.staff import inbox, timeline
from notifier.staff.causes import explain
from notifier.store.db import reading, transaction
from notifier.store.models import Patient
from webhooks.dashboard.blueprint import bp
from webhooks.services import services

log = logging.getLogger(__name__)
MAX_QUERY = 128


@bp.get("/patients")
def search() -> ResponseReturnValue:
    query = request.args.get("q", "").strip()
    if len(query) > MAX_QUERY:
        abort(400, f"A search is at most {MAX_QUERY} characters: a booking id or phone digits.")
    if not query:
        return render_template("dashboard/search.html", query="", found=None)
    try:
        with reading(services().engine) as db:
            found = timeline.search(db, query)
    except timeline.SearchError as error:
        page = render_template("dashboard/search.html", query=query, found=None, error=str(error))
        return page, 400
    if len(found) == 1 and found[0].external_id == query:
        return redirect(url_for("dashboard.patient", patient_id=query))
    return render_template("dashboard/search.html", query=query, found=found)


@bp.get("/patients/<patient_id>")
def patient(patient_id: str) -> ResponseReturnValue:
    with reading(services().engine) as db:
        found = _patient(db, patient_id)
        story = timeline.timeline(db, found)
        replies = [event.reply for event in story.events if isinstance(event, timeline.Received)]
        media = inbox.media_of(db, replies)
        stopped_by_patient = opt_out.opted_out_by_the_patient(db, found)
    return render_template(
        "dashboard/patient.html",
        story=story,
        media=media,
        patient=story.patient,
        explain=explain,
        stopped_by_patient=stopped_by_patient,
    )


@bp.post("/patients/<patient_id>/stop")
def record_stop(patient_id: str) -> ResponseReturnValue:
    """Staff record a patient's wish, told to the clinic, to get no more messages (as
    the staff API's consent call: everything pending is held)."""
    svc = services()
    with transaction(svc.engine) as db:
        found = _patient(db, patient_id)
        already = found.opted_out
        if not already:
            opt_out.opt_out(db, found, opt_out.Source.STAFF, svc.clock(), by=g.staff)
    log.info("patient %s opted out by %s", mask_phone(found.phone), g.staff)
    flash("Already opted out." if already else "Recorded: no more messages will be sent.")
    return redirect(url_for("dashboard.patient", patient_id=patient_id))


@bp.post("/patients/<patient_id>/resume")
def record_resume(patient_id: str) -> ResponseReturnValue:
    """Staff lift an opt-out that staff recorded (the patient changed their mind, or it
    was recorded by mistake): held messages still valid go back into the schedule. A
    patient's own STOP is theirs to lift, by texting START."""
    svc = services()
    with transaction(svc.engine) as db:
        found = _patient(db, patient_id)
        try:
            was_out = opt_out.resume_for_staff(
                db, found, svc.clock(), g.staff, quiet=svc.settings.quiet_hours
            )
        except opt_out.PatientsOwnStop:
            abort(
                409,
                "The patient opted out themselves (STOP): only the patient can resume, by "
                "texting START to the clinic's number.",
            )
    log.info("patient %s opted in again by %s", mask_phone(found.phone), g.staff)
    flash("Recorded: messages will be sent again." if was_out else "Already receiving messages.")
    return redirect(url_for("dashboard.patient", patient_id=patient_id))


def _patient(db: Session, patient_id: str) -> Patient:
    """The patient with this booking id, or a 404 page saying there is none."""
    found = timeline.find(db, patient_id)
    if found is None:
        abort(404, f"There is no patient with the booking id {patient_id[:64]!r}.")
    return found
