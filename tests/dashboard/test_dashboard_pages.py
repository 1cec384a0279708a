"""The dashboard's pages read with the Flask test client: what each shows, and what
each action changes in the database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from notifier.consent.opt_out import Source, opt_out
from notifier.store.db import transaction
from notifier.store.models import ConsentChange, Message, Patient, Reply
from tests.dashboard.conftest import NAME, Clinic, Staff

ARABIC = "عندي حكة شديدة وتورم"


def text_of(staff: Staff) -> str:
    assert staff.last is not None
    return " ".join(staff.last.get_text(" ").split())


# -- the inbox ---------------------------------------------------------------------


def test_the_inbox_lists_unhandled_replies_urgent_first_then_newest(
    signed_in: Staff, clinic: Clinic
) -> None:
    omar = clinic.patient()
    layla = clinic.patient("P-2002", phone="+971502222222", first_name="Layla", language="ar")
    clinic.reply(omar, "Thanks, all fine", received_at=clinic.now - timedelta(minutes=5))
    clinic.reply(omar, "old question", received_at=clinic.now - timedelta(hours=3))
    clinic.reply(
        layla,
        ARABIC,
        urgent=True,
        category="urgent",
        signs="itching,swelling",
        received_at=clinic.now - timedelta(hours=2),
    )
    clinic.reply(omar, "done already", handled=True, handled_by="x", handled_at=clinic.now)
    assert signed_in.get("/staff/").status_code == 200
    bodies = [q.get_text() for q in signed_in.last.select("article.reply blockquote.body")]
    assert bodies == [ARABIC, "Thanks, all fine", "old question"]
    urgent = signed_in.last.select("article.reply")[0]
    assert "Urgent" in urgent.find("h3").get_text()  # said in words, not by colour alone
    assert "itching,swelling" in urgent.get_text()
    assert "Arabic" in urgent.get_text()
    body = urgent.find("blockquote")
    assert body["dir"] == "auto"
    assert body["lang"] == "ar"
    assert signed_in.last.find(id="unhandled-count").get_text() == "3"


def test_each_reply_shows_the_message_it_answers_and_the_time_in_the_patients_zone(
    signed_in: Staff, clinic: Clinic
) -> None:
    omar = clinic.patient()
    clinic.message(omar, "day_0", body="Keep it dry today", send_at=clinic.now - timedelta(days=1))
    clinic.message(
        omar, "day_1", body="Day 1: no sweating", send_at=clinic.now - timedelta(hours=3)
    )
    clinic.message(
        omar, "day_3", body="not yet", status="scheduled", send_at=clinic.now + timedelta(days=2)
    )
    clinic.reply(omar, "Can I wash it?", received_at=clinic.now - timedelta(hours=1))
    signed_in.get("/staff/")
    answers = signed_in.last.select_one("article.reply details.answers")
    assert "day_1" in answers.find("summary").get_text()
    assert "Day 1: no sweating" in answers.get_text()
    # 05:00 UTC is 09:00 in Dubai, the zone named.
    assert "Mon 1 Mar 2027, 09:00 +04 (Asia/Dubai)" in text_of(signed_in)


def test_each_reply_on_a_page_answers_the_last_message_its_patient_had_then(
    signed_in: Staff, clinic: Clinic
) -> None:
    omar = clinic.patient()
    layla = clinic.patient("P-2002", phone="+971502222222")
    clinic.message(omar, "day_0", send_at=clinic.now - timedelta(days=2))
    clinic.message(omar, "day_1", send_at=clinic.now - timedelta(days=1))
    clinic.message(omar, "day_2", status="failed", send_at=clinic.now - timedelta(hours=6))
    clinic.message(layla, "day_4", send_at=clinic.now - timedelta(days=3))
    clinic.reply(omar, "first", received_at=clinic.now - timedelta(days=1, hours=12))
    clinic.reply(omar, "second", received_at=clinic.now - timedelta(hours=2))
    clinic.reply(layla, "hers", received_at=clinic.now - timedelta(hours=1))
    clinic.reply(layla, "before anything", received_at=clinic.now - timedelta(days=4))
    signed_in.get("/staff/")
    answers = {
        a.select_one("blockquote").get_text(): [s.get_text() for s in a.select("summary")]
        for a in signed_in.last.select("article.reply")
    }
    assert {body: " ".join(s).split("”")[0] for body, s in answers.items()} == {
        "first": "In answer to “day_0",
        "second": "In answer to “day_1",  # day_2 failed: it never reached Omar
        "hers": "In answer to “day_4",
        "before anything": "",
    }


def test_a_reply_from_an_unknown_number_is_listed_too(signed_in: Staff, clinic: Clinic) -> None:
    clinic.reply(None, "who is this?", from_phone="+971509999999")
    signed_in.get("/staff/")
    assert "Unknown number +971509999999" in text_of(signed_in)


def test_mark_handled_records_who_and_when(
    signed_in: Staff, clinic: Clinic, engine: Any, clock: Any
) -> None:
    reply = clinic.reply(clinic.patient(), "Is redness normal?")
    signed_in.get("/staff/")
    form = signed_in.last.select_one("article.reply form")
    response = signed_in.post(
        form["action"], {"next": form.find("input", {"name": "next"})["value"]}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/"
    with Session(engine) as session:
        stored = session.get(Reply, reply.id)
    assert stored.handled
    assert stored.handled_by == NAME
    assert stored.handled_at == clock.now
    signed_in.get("/staff/")
    assert "Marked handled." in text_of(signed_in)
    assert signed_in.last.find(id="unhandled-count").get_text() == "0"
    assert "Nothing needs attention" in text_of(signed_in)


def test_marking_an_unknown_reply_is_a_404_page(signed_in: Staff) -> None:
    response = signed_in.post("/staff/replies/999999/handled")
    assert response.status_code == 404
    assert "There is no reply 999999" in response.get_data(as_text=True)


@pytest.mark.parametrize("bad", ["0", "-1", "x", "1.5", "99999999", "\u0661"])  # Arabic-Indic 1
def test_a_bad_page_number_is_a_400_page(signed_in: Staff, bad: str) -> None:
    response = signed_in.get(f"/staff/?page={bad}")
    assert response.status_code == 400
    assert "page must be a whole number" in response.get_data(as_text=True)


def test_the_unhandled_count_is_on_every_page(signed_in: Staff, clinic: Clinic) -> None:
    clinic.reply(clinic.patient(), "hello")
    for path in (
        "/staff/",
        "/staff/patients",
        "/staff/patients/P-1001",
        "/staff/problems",
        "/staff/overview",
        "/staff/plans",
    ):
        assert signed_in.get(path).status_code == 200, path
        assert signed_in.last.find(id="unhandled-count").get_text() == "1", path


# -- a patient -------------------------------------------------------------------


def test_the_patient_page_shows_the_timeline_in_local_time_with_replies_interleaved(
    signed_in: Staff, clinic: Clinic
) -> None:
    layla = clinic.patient(
        "P-2002", phone="+971502222222", first_name="Layla", language="ar", timezone="Europe/Moscow"
    )
    first = clinic.message(
        layla, "day_0", body="اعتني ببشرتك", send_at=clinic.now - timedelta(days=1)
    )
    clinic.callbacks(first, "queued", "sent", "sent", "delivered")
    clinic.reply(layla, ARABIC, received_at=clinic.now - timedelta(hours=20))
    clinic.message(
        layla,
        "day_1",
        status="undelivered",
        error_code=30003,
        channel="sms",
        fallback_reason="no WhatsApp template for ar",
        send_at=clinic.now - timedelta(hours=2),
    )
    clinic.message(layla, "day_7", status="scheduled", send_at=clinic.now + timedelta(days=6))
    assert signed_in.get("/staff/patients/P-2002").status_code == 200
    events = signed_in.last.select("ol.timeline > li")
    kinds = [" ".join(e["class"]) for e in events]
    assert kinds == [
        "event message status-delivered",
        "event from-patient",
        "event message status-undelivered",
        "event message status-scheduled",
    ]
    delivered = events[0].get_text()
    assert "queued → sent → delivered" in delivered
    assert "Sun 28 Feb 2027, 09:00 MSK (Europe/Moscow)" in " ".join(delivered.split())
    problem = " ".join(events[2].get_text().split())
    assert "Error 30003: Unreachable handset" in problem
    assert "SMS instead of WhatsApp: no WhatsApp template for ar" in problem
    assert "Planned for" in events[3].get_text()
    body = events[1].find("blockquote")
    assert (body["dir"], body["lang"], body.get_text()) == ("auto", "ar", ARABIC)
    assert signed_in.last.select_one("li.message p.body")["lang"] == "ar"
    assert "Times in the patient's zone, Europe/Moscow" in text_of(signed_in)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (30005, "Unknown number"),
        (30007, "Filtered by the carrier"),
        (21610, "replied STOP"),
        (63016, "Outside WhatsApp's 24-hour window"),
        (30006, "landline"),
        (21211, "Not a valid"),
        (21408, "not enabled"),
        (63003, "not on WhatsApp"),
        (63024, "cannot receive WhatsApp"),
        (12345, "Twilio error 12345"),
    ],
)
def test_twilio_error_codes_are_explained_in_words(
    signed_in: Staff, clinic: Clinic, code: int, words: str
) -> None:
    clinic.message(clinic.patient(), "day_1", status="failed", error_code=code)
    signed_in.get("/staff/patients/P-1001")
    assert words in signed_in.last.select_one("li.message .problem").get_text()


def test_recording_the_patients_wish_to_stop_holds_their_messages(
    signed_in: Staff, clinic: Clinic, engine: Any, clock: Any
) -> None:
    omar = clinic.patient()
    clinic.message(omar, "day_7", status="scheduled", send_at=clinic.now + timedelta(days=6))
    signed_in.get("/staff/patients/P-1001")
    form = signed_in.last.select_one("form.action")
    response = signed_in.post(form["action"])
    assert response.headers["Location"] == "/staff/patients/P-1001"
    with Session(engine) as session:
        patient = session.exec(select(Patient).where(Patient.external_id == "P-1001")).one()
        change = session.exec(select(ConsentChange).order_by(col(ConsentChange.id).desc())).first()
        statuses = {m.status for m in session.exec(select(Message)).all()}
    assert patient.opted_out
    assert (change.consented, change.source, change.by, change.at) == (
        False,
        "staff",
        NAME,
        clock.now,
    )
    assert statuses == {"held"}
    signed_in.get("/staff/patients/P-1001")
    assert "Opted out (recorded by staff)" in text_of(signed_in)
    assert "Stopped staff amira" in text_of(signed_in)  # the consent log
    assert signed_in.last.select_one("form.action")["action"] == "/staff/patients/P-1001/resume"


def test_staff_lift_an_opt_out_staff_recorded_and_the_plan_resumes(
    signed_in: Staff, clinic: Clinic, engine: Any, clock: Any
) -> None:
    omar = clinic.patient()
    clinic.message(omar, "day_7", status="scheduled", send_at=clinic.now + timedelta(days=6))
    assert signed_in.post("/staff/patients/P-1001/stop").status_code == 302
    clock.advance(minutes=5)
    signed_in.get("/staff/patients/P-1001")
    response = signed_in.post(signed_in.last.select_one("form.action")["action"])
    assert response.headers["Location"] == "/staff/patients/P-1001"
    with Session(engine) as session:
        patient = session.exec(select(Patient).where(Patient.external_id == "P-1001")).one()
        change = session.exec(select(ConsentChange).order_by(col(ConsentChange.id).desc())).first()
        statuses = {m.status for m in session.exec(select(Message)).all()}
    assert not patient.opted_out
    assert (change.consented, change.source, change.by, change.at) == (
        True,
        "staff",
        NAME,
        clock.now,
    )
    assert statuses == {"scheduled"}
    signed_in.get("/staff/patients/P-1001")
    assert "Receiving" in signed_in.last.select_one("#patient-state").get_text()
    assert "Recorded: messages will be sent again." in text_of(signed_in)


def test_a_patients_own_stop_offers_staff_no_way_to_lift_it(
    signed_in: Staff, clinic: Clinic, engine: Any
) -> None:
    omar = clinic.patient()
    clinic.message(omar, "day_7", status="scheduled", send_at=clinic.now + timedelta(days=6))
    with transaction(engine) as session:  # a STOP, recorded as the inbox records it
        patient = session.get(Patient, omar.id)
        assert patient is not None
        opt_out(session, patient, Source.KEYWORD, clinic.now)
    signed_in.get("/staff/patients/P-1001")
    assert signed_in.last.select_one("form.action") is None
    assert "only they can resume, by texting START" in text_of(signed_in)
    response = signed_in.post("/staff/patients/P-1001/resume")
    assert response.status_code == 409
    assert "only the patient can resume" in response.get_data(as_text=True)
    with Session(engine) as session:
        assert {m.status for m in session.exec(select(Message)).all()} == {"held"}


def test_an_unknown_patient_is_a_404_page(signed_in: Staff) -> None:
    response = signed_in.get("/staff/patients/P-404")
    assert response.status_code == 404
    assert "There is no patient with the booking id 'P-404'" in text_of(signed_in)


def test_search_by_booking_id_opens_the_patient(signed_in: Staff, clinic: Clinic) -> None:
    clinic.patient()
    response = signed_in.get("/staff/patients?q=P-1001")
    assert response.headers["Location"] == "/staff/patients/P-1001"


def test_search_by_the_last_digits_of_the_phone(signed_in: Staff, clinic: Clinic) -> None:
    clinic.patient("P-1", phone="+971501234567")
    clinic.patient("P-2", phone="+971507654567")
    clinic.patient("P-3", phone="+971500000000")
    signed_in.get("/staff/patients?q=4567")
    found = [a.get_text() for a in signed_in.last.select("table tbody td:first-child a")]
    assert found == ["P-1", "P-2"]
    signed_in.get("/staff/patients?q=234 567")
    assert [a.get_text() for a in signed_in.last.select("tbody a")] == ["P-1"]
    signed_in.get("/staff/patients?q=9999")
    assert "No patient matches" in text_of(signed_in)


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("12", 400, "at least 4 digits"),
        ("Omar", 400, "no patient has the booking id"),
        ("x" * 200, 400, "at most 128 characters"),
        ("%_%_", 400, "no patient has"),
    ],
)
def test_a_search_that_cannot_work_says_why(
    signed_in: Staff, clinic: Clinic, query: str, status: int, says: str
) -> None:
    clinic.patient()
    response = signed_in.get("/staff/patients", query_string={"q": query})
    assert response.status_code == status
    assert says in response.get_data(as_text=True)


# -- problems, overview, plans -------------------------------------------------------


def test_problems_are_grouped_by_cause_with_what_to_do(signed_in: Staff, clinic: Clinic) -> None:
    omar = clinic.patient()
    layla = clinic.patient("P-2002", phone="+971502222222")
    for patient in (omar, layla):
        clinic.message(patient, "day_1", status="undelivered", error_code=30005)
    clinic.message(omar, "day_3", status="expired", send_at=clinic.now - timedelta(days=1))
    clinic.message(
        omar,
        "day_0",
        status="failed",
        error_code=21610,
        send_at=clinic.now - timedelta(days=20),
        updated_at=clinic.now - timedelta(days=20),
    )
    clinic.message(omar, "day_2", status="delivered")
    assert signed_in.get("/staff/problems").status_code == 200
    groups = signed_in.last.select("section.problem-group")
    titles = [" ".join(g.find("h2").get_text().split()) for g in groups]
    assert titles == [
        "Unknown number: it does not exist or is no longer in use 2 messages",
        "Not sent in time: its send window passed 1 message",
    ]
    assert "Check the phone number in the booking system" in groups[0].get_text()
    assert [a.get_text() for a in groups[0].select("tbody a")] == ["P-2002", "P-1001"]


def test_the_overview_draws_its_charts(signed_in: Staff, clinic: Clinic) -> None:
    omar = clinic.patient()
    clinic.message(omar, "day_0", status="delivered", send_at=clinic.now - timedelta(days=2))
    clinic.message(
        omar, "day_1", status="failed", error_code=30005, send_at=clinic.now - timedelta(days=1)
    )
    clinic.message(
        omar, "day_3", channel="whatsapp", status="read", send_at=clinic.now - timedelta(hours=3)
    )
    clinic.message(omar, "day_7", status="scheduled", send_at=clinic.now - timedelta(minutes=10))
    clinic.reply(omar, "thanks", received_at=clinic.now - timedelta(hours=2))
    assert signed_in.get("/staff/overview").status_code == 200
    charts = signed_in.last.select("svg.chart")
    assert len(charts) == 4
    assert all(c["role"] == "img" and c.find("title") for c in charts)
    assert len(charts[0].select("rect.bar")) == 4
    tiles = {
        d.find("dt").get_text(): d.find("dd").get_text()
        for d in signed_in.last.select(".tiles div")
    }
    assert tiles["Due now"] == "1"
    assert tiles["Overdue (over a minute)"] == "1"
    assert "Queue health: needs attention" in text_of(signed_in)
    steps = {
        r.find("th").get_text(): [td.get_text() for td in r.select("td")]
        for r in signed_in.last.select("#steps-title ~ details tbody tr")
    }
    assert steps["day_3"] == ["1", "0 (0.0%)", "1 (100.0%)"]
    channels = charts[1].get_text()
    assert "sms" in channels and "0.0% of 2" in channels
    assert "whatsapp" in channels and "100.0% of 1" in channels


def test_the_overview_counts_patient_opt_outs_against_the_step_before_them(
    signed_in: Staff, clinic: Clinic, engine: Any
) -> None:
    omar = clinic.patient()
    clinic.message(omar, "day_1", send_at=clinic.now - timedelta(days=2))
    clinic.message(omar, "day_3", send_at=clinic.now - timedelta(days=1))
    with transaction(engine) as session:  # a STOP, recorded as the inbox records it
        patient = session.get(Patient, omar.id)
        assert patient is not None
        opt_out(session, patient, Source.KEYWORD, clinic.now - timedelta(hours=20))
    signed_in.get("/staff/overview")
    steps = {
        r.find("th").get_text(): [td.get_text() for td in r.select("td")]
        for r in signed_in.last.select("#steps-title ~ details tbody tr")
    }
    assert steps == {
        "day_1": ["1", "0 (0.0%)", "0 (0.0%)"],
        "day_3": ["1", "1 (100.0%)", "0 (0.0%)"],
    }


def test_the_plans_page_shows_each_language_with_its_sms_encoding(signed_in: Staff) -> None:
    assert signed_in.get("/staff/plans").status_code == 200
    headings = [h.get_text() for h in signed_in.last.select("h3")]
    assert "English" in headings
    assert any("Arabic" in h for h in headings)
    cells = [td.get_text() for td in signed_in.last.select("td")]
    assert any(c.startswith("UCS-2") for c in cells)
    assert any(c.startswith("GSM-7") for c in cells)
    arabic = [td for td in signed_in.last.select("td[lang=ar]")]
    assert arabic and all(td["dir"] == "auto" for td in arabic)
