"""WhatsApp routing (SPEC §6, §8): free text inside the 24-hour window, an approved
template outside it, else SMS; every WhatsApp failure WhatsApp cannot get around
falls back to SMS exactly once (or fails, when the deployment forbids the fallback)."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import (
    Accepted,
    Lookup,
    OneByOne,
    Outgoing,
    PermanentFailure,
    Redact,
    RetryLater,
)
from notifier.delivery.twilio_sender import TwilioSender
from notifier.delivery.whatsapp import UNDELIVERABLE_ON_WHATSAPP, Templates
from notifier.planning.plan import load_plans
from notifier.settings import Settings
from notifier.store.models import Patient, Status
from tests.conftest import (
    DAY_1,
    DUE,
    PHONE,
    START,
    BookingSystem,
    Clock,
    RecordingSender,
    completed_event,
)
from tests.support.booking import enrol
from tests.support.fake_twilio import FakeTwilio
from tests.support.rows import row, rows, run_pass
from tests.support.shipped import EXAMPLE_TEMPLATES, PLANS, SMP, rendered
from tests.support.twilio_settings import settings_for

NO_TEMPLATES = Templates({})
AFTER_TREATMENT_EN = "HX00000000000000000000000000000001"
AFTER_TREATMENT_AR = "HX00000000000000000000000000000002"

WHATSAPP = f"whatsapp:{PHONE}"
PUBLIC_BASE_URL = "https://care.example.org"
# The four "WhatsApp cannot reach this person" codes SMS may still get around.
UNDELIVERABLE = [63016, 63003, 63024, 63014]
STATUS_CODES = [(status, code) for code in UNDELIVERABLE for status in ("undelivered", "failed")]
WA_INSIDE = timedelta(hours=23, minutes=59)
WA_OUTSIDE = timedelta(hours=24, minutes=1)


def sqlite_all_postgres_first(argnames: str, cases: list[Any]) -> pytest.MarkDecorator:
    """Parametrize `argnames` with every case on SQLite and the first on PostgreSQL too:
    the SQL does not depend on the case, so one run per case on PostgreSQL adds nothing."""
    cases = [case if isinstance(case, tuple) else (case,) for case in cases]
    params = [pytest.param("sqlite", *case) for case in cases]
    params.append(pytest.param("postgres", *cases[0], marks=pytest.mark.postgres))
    return pytest.mark.parametrize(f"database_url,{argnames}", params, indirect=["database_url"])


# -- fixtures: the deployment's WhatsApp switches, per test -------------------------


@pytest.fixture
def sms_fallback() -> bool:
    """WHATSAPP_SMS_FALLBACK; a test parametrizes this to False to turn it off."""
    return True


@pytest.fixture
def templates() -> Templates:
    """The deployment's template mapping; a test parametrizes it to use another."""
    return NO_TEMPLATES


@pytest.fixture
def settings(settings: Settings, sms_fallback: bool) -> Settings:
    return replace(settings, whatsapp_sms_fallback=sms_fallback)


@pytest.fixture
def dispatcher(
    engine: Any, sender: RecordingSender, settings: Settings, templates: Templates
) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(
        engine, sender, PLANS, settings, rng=random.Random(7), templates=templates
    )
    yield dispatcher
    dispatcher.close()


# -- helpers ---------------------------------------------------------------------------


def write_on_whatsapp(twilio: Any, clock: Clock, at: datetime, sender: str = WHATSAPP) -> None:
    """The patient writes to the clinic on WhatsApp at `at`: the 24-hour window opens."""
    clock.now = at
    answer = twilio.inbound("hi", sender=sender)
    assert answer.status_code == 200, answer.data


def sent_for(sender: RecordingSender, engine: Any, step: str) -> list[Outgoing]:
    """What went out for one step (matched by its frozen body)."""
    body = row(engine, step).body
    return [m for m in sender.sent if m.body == body]


def channels(outgoing: list[Outgoing]) -> Counter[str]:
    return Counter(m.channel for m in outgoing)


# -- the 24-hour window ------------------------------------------------------------------


@pytest.mark.parametrize(
    "templates", [NO_TEMPLATES, EXAMPLE_TEMPLATES], ids=["no-templates", "templates"]
)
def test_a_patient_who_wrote_23h59_before_the_send_gets_free_text_on_whatsapp(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, channel="whatsapp")
    write_on_whatsapp(twilio, clock, DAY_1 - WA_INSIDE)
    report = run_pass(dispatcher, clock, DAY_1)  # after_treatment and sunscreen #0 are due
    assert report.sent == 2
    assert [m.step for m in rows(engine) if m.status == Status.QUEUED] == [
        "after_treatment",
        "sunscreen",
    ]
    for step in ("after_treatment", "sunscreen"):
        (out,) = sent_for(sender, engine, step)
        assert (out.channel, out.to) == ("whatsapp", PHONE)
        assert (out.content_sid, out.content_variables) == (None, None)
        assert out.body == rendered(step, "en")
        stored = row(engine, step)
        assert (stored.channel, stored.content_sid, stored.fallback_reason) == (
            "whatsapp",
            None,
            None,
        )


@pytest.mark.parametrize("templates", [EXAMPLE_TEMPLATES], ids=["templates"])
@pytest.mark.parametrize("last_inbound", [WA_OUTSIDE, None], ids=["24h01-ago", "never"])
def test_outside_the_window_a_mapped_template_goes_with_content_sid_and_variables(
    booking, twilio, clock, engine, dispatcher, sender, last_inbound
) -> None:
    enrol(booking, channel="whatsapp")
    if last_inbound is not None:
        write_on_whatsapp(twilio, clock, DAY_1 - last_inbound)
    run_pass(dispatcher, clock, DAY_1)
    (out,) = [m for m in sender.sent if m.content_sid is not None]
    assert (out.channel, out.to, out.content_sid) == ("whatsapp", PHONE, AFTER_TREATMENT_EN)
    assert out.content_variables is not None
    assert json.loads(out.content_variables) == {"1": "Omar", "2": "Skin Clinic"}
    stored = row(engine, "after_treatment")
    assert (stored.status, stored.channel, stored.content_sid) == (
        Status.QUEUED,
        "whatsapp",
        AFTER_TREATMENT_EN,
    )
    assert stored.fallback_reason is None
    # sunscreen has no template in the mapping: it is the SMS one of the pair.
    assert channels(sender.sent) == Counter({"whatsapp": 1, "sms": 1})


@pytest.mark.parametrize("last_inbound", [WA_OUTSIDE, None], ids=["24h01-ago", "never"])
def test_outside_the_window_without_a_template_the_message_goes_by_sms_and_says_why(
    booking, twilio, clock, engine, dispatcher, sender, last_inbound
) -> None:
    enrol(booking, channel="whatsapp")
    if last_inbound is not None:
        write_on_whatsapp(twilio, clock, DAY_1 - last_inbound)
    report = run_pass(dispatcher, clock, DAY_1)
    assert report.sent == 2
    for step in ("after_treatment", "sunscreen"):
        (out,) = sent_for(sender, engine, step)
        assert (out.channel, out.to, out.content_sid) == ("sms", PHONE, None)
        assert out.body == rendered(step, "en")
        stored = row(engine, step)
        assert (stored.status, stored.channel, stored.content_sid) == (Status.QUEUED, "sms", None)
        assert stored.fallback_reason is not None
        assert "template" in stored.fallback_reason
        assert "24-hour window" in stored.fallback_reason
    run_pass(dispatcher, clock, DAY_1 + timedelta(minutes=10))
    assert channels(sender.sent) == Counter({"sms": 2})  # each once, nothing on WhatsApp


@pytest.mark.parametrize("sms_fallback", [False])
def test_without_sms_fallback_a_message_needing_a_template_fails_and_nothing_is_sent(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, channel="whatsapp")
    write_on_whatsapp(twilio, clock, DAY_1 - WA_OUTSIDE)
    report = run_pass(dispatcher, clock, DAY_1)
    assert (report.sent, report.failed) == (0, 2)
    for step in ("after_treatment", "sunscreen"):
        stored = row(engine, step)
        assert (stored.status, stored.channel) == (Status.FAILED, "whatsapp")
        assert stored.error_message is not None
        assert "no approved WhatsApp template" in stored.error_message
        assert stored.fallback_reason is None
    run_pass(dispatcher, clock, DAY_1 + timedelta(hours=1))
    assert sender.sent == []


# -- the Twilio request (contract) -------------------------------------------------------


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeTwilio]:
    with FakeTwilio(clock=clock) as server:
        yield server


def through_twilio(
    engine: Any, settings: Settings, fake: FakeTwilio, whatsapp_from: str, templates: Templates
) -> tuple[Dispatcher, TwilioSender]:
    twilio_settings = settings_for(
        fake.base_url, sms_from="+14155550100", whatsapp_from=whatsapp_from, timeout_seconds=2.0
    )
    sender = TwilioSender(twilio_settings)
    dispatcher = Dispatcher(
        engine,
        sender,
        PLANS,
        replace(settings, public_base_url=PUBLIC_BASE_URL),
        rng=random.Random(5),
        templates=templates,
    )
    return dispatcher, sender


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("whatsapp_from", ["+14155550111", "whatsapp:+14155550111"])
def test_whatsapp_template_and_free_text_requests_are_valid_against_twilios_spec(
    booking, twilio, clock, engine, settings, fake, whatsapp_from
) -> None:
    enrol(booking, channel="whatsapp", first_name="عمر", language="ar")
    dispatcher, sender = through_twilio(engine, settings, fake, whatsapp_from, EXAMPLE_TEMPLATES)
    try:
        run_pass(dispatcher, clock, DUE)  # never wrote: the Arabic template
        write_on_whatsapp(twilio, clock, DUE + timedelta(minutes=1))
        run_pass(dispatcher, clock, DAY_1)  # sunscreen #0 inside the window: free text
    finally:
        dispatcher.close()
        sender.close()
    assert fake.violations == []
    template, free_text = fake.messages
    assert (template.to, template.from_) == (WHATSAPP, "whatsapp:+14155550111")
    assert template.params["ContentSid"] == AFTER_TREATMENT_AR
    assert json.loads(template.params["ContentVariables"]) == {"1": "عمر", "2": "Skin Clinic"}
    assert "Body" not in template.params
    assert template.status_callback == f"{PUBLIC_BASE_URL}/webhooks/twilio/status"
    assert (free_text.to, free_text.from_) == (WHATSAPP, "whatsapp:+14155550111")
    assert free_text.body == rendered("sunscreen", "ar", first_name="عمر")
    assert "ContentSid" not in free_text.params
    assert "ContentVariables" not in free_text.params
    first, second = row(engine, "after_treatment"), row(engine, "sunscreen")
    assert (first.status, first.sid, first.content_sid) == (
        Status.QUEUED,
        template.sid,
        AFTER_TREATMENT_AR,
    )
    assert (second.status, second.sid, second.content_sid) == (Status.QUEUED, free_text.sid, None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_sms_fallback_request_is_a_valid_plain_sms(
    booking, clock, engine, settings, fake
) -> None:
    enrol(booking, channel="whatsapp")
    dispatcher, sender = through_twilio(engine, settings, fake, "+14155550111", NO_TEMPLATES)
    try:
        run_pass(dispatcher, clock, DUE)
    finally:
        dispatcher.close()
        sender.close()
    assert fake.violations == []
    (sms,) = fake.messages
    assert (sms.to, sms.from_, sms.body) == (
        PHONE,
        "+14155550100",
        rendered("after_treatment", "en"),
    )
    assert "ContentSid" not in sms.params
    stored = row(engine, "after_treatment")
    assert (stored.channel, stored.sid) == ("sms", sms.sid)
    assert stored.fallback_reason


# -- (b) WhatsApp refuses at send time -----------------------------------------------------


def refused_on_whatsapp(
    booking: BookingSystem, twilio: Any, clock: Clock, sender: RecordingSender, code: int
) -> None:
    """A WhatsApp patient inside the window whose first send Twilio refuses with `code`."""
    enrol(booking, channel="whatsapp")
    write_on_whatsapp(twilio, clock, START)
    sender.fail_next(PermanentFailure(f"Twilio answered 400 (error {code}): refused", code=code))


@sqlite_all_postgres_first("code", UNDELIVERABLE)
def test_a_whatsapp_send_refused_with_an_undeliverable_code_goes_once_by_sms_on_the_next_pass(
    booking, twilio, clock, engine, dispatcher, sender, code
) -> None:
    assert code in UNDELIVERABLE_ON_WHATSAPP
    refused_on_whatsapp(booking, twilio, clock, sender, code)
    report = run_pass(dispatcher, clock, DUE)
    assert (report.sent, report.failed, report.retrying) == (0, 0, 1)
    assert sender.sent == []
    rescheduled = row(engine, "after_treatment")
    assert (rescheduled.status, rescheduled.channel, rescheduled.sid) == (
        Status.SCHEDULED,
        "sms",
        None,
    )
    assert rescheduled.send_at == DUE
    assert rescheduled.fallback_reason is not None
    assert str(code) in rescheduled.fallback_reason
    assert run_pass(dispatcher, clock, DUE + timedelta(seconds=10)).sent == 1
    run_pass(dispatcher, clock, DUE + timedelta(minutes=10))
    (out,) = sent_for(sender, engine, "after_treatment")
    assert (out.channel, out.to, out.body) == ("sms", PHONE, rendered("after_treatment", "en"))
    final = row(engine, "after_treatment")
    assert (final.status, final.channel) == (Status.QUEUED, "sms")
    assert final.sid is not None


@pytest.mark.parametrize("code", [21211, 63018])
def test_a_whatsapp_send_refused_for_another_reason_fails_without_sms(
    booking, twilio, clock, engine, dispatcher, sender, code
) -> None:
    refused_on_whatsapp(booking, twilio, clock, sender, code)
    assert run_pass(dispatcher, clock, DUE).failed == 1
    run_pass(dispatcher, clock, DUE + timedelta(minutes=10))
    failed = row(engine, "after_treatment")
    assert (failed.status, failed.channel, failed.error_code) == (Status.FAILED, "whatsapp", code)
    assert failed.fallback_reason is None
    assert sender.sent == []


@pytest.mark.parametrize("sms_fallback", [False])
@sqlite_all_postgres_first("code", UNDELIVERABLE)
def test_without_sms_fallback_a_refused_whatsapp_send_fails_with_its_code(
    booking, twilio, clock, engine, dispatcher, sender, code
) -> None:
    refused_on_whatsapp(booking, twilio, clock, sender, code)
    assert run_pass(dispatcher, clock, DUE).failed == 1
    run_pass(dispatcher, clock, DUE + timedelta(minutes=10))
    failed = row(engine, "after_treatment")
    assert (failed.status, failed.channel, failed.error_code) == (Status.FAILED, "whatsapp", code)
    assert failed.error_message is not None
    assert str(code) in failed.error_message
    assert sender.sent == []


# -- (c) WhatsApp took it, then reported it undeliverable --------------------------------------


def sent_on_whatsapp(
    booking: BookingSystem, twilio: Any, clock: Clock, engine: Any, dispatcher: Dispatcher
) -> str:
    """after_treatment accepted by Twilio on WhatsApp (queued); its SID."""
    enrol(booking, channel="whatsapp")
    write_on_whatsapp(twilio, clock, START)
    assert run_pass(dispatcher, clock, DUE).sent == 1
    queued = row(engine, "after_treatment")
    assert (queued.status, queued.channel) == (Status.QUEUED, "whatsapp")
    assert queued.sid is not None
    return queued.sid


def callback(twilio: Any, clock: Clock, at: datetime, sid: str, status: str, code: int) -> None:
    clock.now = at
    answer = twilio.status(sid, status, code)
    assert answer.status_code in (200, 204), answer.data


@sqlite_all_postgres_first("status,code", STATUS_CODES)
def test_a_whatsapp_message_reported_undeliverable_goes_once_by_sms_on_the_next_pass(
    booking, twilio, clock, engine, dispatcher, sender, status, code
) -> None:
    sid = sent_on_whatsapp(booking, twilio, clock, engine, dispatcher)
    later = DUE + timedelta(minutes=2)
    callback(twilio, clock, later, sid, status, code)
    rescheduled = row(engine, "after_treatment")
    assert (rescheduled.status, rescheduled.channel, rescheduled.sid) == (
        Status.SCHEDULED,
        "sms",
        None,
    )
    assert rescheduled.send_at == later
    assert rescheduled.fallback_reason is not None
    assert str(code) in rescheduled.fallback_reason
    callback(twilio, clock, later + timedelta(seconds=5), sid, status, code)  # Twilio retried
    assert row(engine, "after_treatment").status == Status.SCHEDULED
    assert run_pass(dispatcher, clock, later + timedelta(seconds=10)).sent == 1
    callback(twilio, clock, later + timedelta(seconds=20), sid, status, code)  # and once more
    run_pass(dispatcher, clock, later + timedelta(minutes=10))
    run_pass(dispatcher, clock, later + timedelta(hours=2))
    outgoing = sent_for(sender, engine, "after_treatment")
    assert channels(outgoing) == Counter({"whatsapp": 1, "sms": 1})
    assert outgoing[-1].to == PHONE
    final = row(engine, "after_treatment")
    assert (final.status, final.channel) == (Status.QUEUED, "sms")
    assert final.sid not in (None, sid)


@pytest.mark.parametrize("status", ["undelivered", "failed"])
def test_a_whatsapp_failure_with_an_unrelated_code_does_not_fall_back_to_sms(
    booking, twilio, clock, engine, dispatcher, sender, status
) -> None:
    sid = sent_on_whatsapp(booking, twilio, clock, engine, dispatcher)
    callback(twilio, clock, DUE + timedelta(minutes=2), sid, status, 30008)
    run_pass(dispatcher, clock, DUE + timedelta(minutes=10))
    stored = row(engine, "after_treatment")
    assert (stored.status, stored.channel, stored.error_code) == (status, "whatsapp", 30008)
    assert (stored.sid, stored.fallback_reason) == (sid, None)
    assert channels(sent_for(sender, engine, "after_treatment")) == Counter({"whatsapp": 1})


@pytest.mark.parametrize("sms_fallback", [False])
@sqlite_all_postgres_first("status,code", STATUS_CODES)
def test_without_sms_fallback_a_whatsapp_message_reported_undeliverable_stays_so(
    booking, twilio, clock, engine, dispatcher, sender, status, code
) -> None:
    sid = sent_on_whatsapp(booking, twilio, clock, engine, dispatcher)
    callback(twilio, clock, DUE + timedelta(minutes=2), sid, status, code)
    run_pass(dispatcher, clock, DUE + timedelta(minutes=10))
    stored = row(engine, "after_treatment")
    assert (stored.status, stored.channel, stored.error_code) == (status, "whatsapp", code)
    assert (stored.sid, stored.fallback_reason) == (sid, None)
    assert channels(sent_for(sender, engine, "after_treatment")) == Counter({"whatsapp": 1})


@dataclass
class KnownSidSender(OneByOne):
    """Records like RecordingSender, but Twilio hands out SIDs the test chose."""

    recorder: RecordingSender
    sids: list[str] = field(default_factory=list)

    def send(self, message: Outgoing) -> Accepted:
        accepted = self.recorder.send(message)
        return Accepted(sid=self.sids.pop(0)) if self.sids else accepted

    def find_sent(self, lookup: Lookup) -> list[str]:
        return self.recorder.find_sent(lookup)

    def redact(self, redaction: Redact) -> None:
        self.recorder.redact(redaction)

    def close(self) -> None:
        self.recorder.close()


@pytest.mark.parametrize("code", [63016])
def test_an_undeliverable_callback_that_beats_the_sid_commit_still_falls_back_to_sms(
    booking, twilio, clock, engine, settings, sender, code
) -> None:
    # Regression: delivery.match_early_callbacks() used to apply such a callback with
    # advance() only, leaving the message failed/63016 and the patient without it.
    sid = "SM" + "e" * 32
    enrol(booking, channel="whatsapp")
    write_on_whatsapp(twilio, clock, START)
    # Twilio's callback arrives while the dispatcher's batch is still uncommitted.
    callback(twilio, clock, DUE, sid, "failed", code)
    dispatcher = Dispatcher(
        engine, KnownSidSender(sender, [sid]), PLANS, settings, rng=random.Random(7)
    )
    try:
        run_pass(dispatcher, clock, DUE)
        after_first = row(engine, "after_treatment")
        run_pass(dispatcher, clock, DUE + timedelta(seconds=10))
        run_pass(dispatcher, clock, DUE + timedelta(minutes=10))
    finally:
        dispatcher.close()
    assert after_first.error_code == code
    assert after_first.channel == "sms", after_first.status
    assert channels(sent_for(sender, engine, "after_treatment")) == Counter(
        {"whatsapp": 1, "sms": 1}
    )
    assert row(engine, "after_treatment").status == Status.QUEUED


# -- who gets what -------------------------------------------------------------------------------


@pytest.mark.parametrize("templates", [EXAMPLE_TEMPLATES], ids=["templates"])
def test_an_sms_patient_is_never_routed_to_whatsapp(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, channel="sms")
    write_on_whatsapp(twilio, clock, START)  # even with a WhatsApp window open
    for moment in (DUE, DAY_1, START + timedelta(days=2), START + timedelta(days=4)):
        run_pass(dispatcher, clock, moment)
    assert len(sender.sent) == 4
    assert channels(sender.sent) == Counter({"sms": 4})
    assert all(m.content_sid is None for m in sender.sent)
    assert {m.channel for m in rows(engine)} == {"sms"}
    assert all(m.fallback_reason is None for m in rows(engine))


@sqlite_all_postgres_first(
    "channel,language,text_language,word",
    [
        (channel, *case)
        for channel in ("whatsapp", "sms")
        for case in (
            ("ar", "ar", "شكراً"),
            ("ru", "ru", "спасибо"),
            ("fr", "en", "thank you for coming in today"),
            ("en", "en", "thank you for coming in today"),
        )
    ],
)
def test_each_patient_gets_the_text_in_their_language_or_english(
    booking, twilio, clock, engine, dispatcher, sender, channel, language, text_language, word
) -> None:
    enrol(booking, channel=channel, language=language)
    write_on_whatsapp(twilio, clock, START)
    run_pass(dispatcher, clock, DUE)
    (out,) = sender.sent
    assert out.channel == channel
    assert word in out.body
    assert out.body == rendered("after_treatment", text_language)
    assert row(engine, "after_treatment").language == text_language


@pytest.mark.parametrize("templates", [EXAMPLE_TEMPLATES], ids=["templates"])
@pytest.mark.parametrize(
    ("language", "expected"),
    [("ar", AFTER_TREATMENT_AR), ("fr", AFTER_TREATMENT_EN), ("ru", None)],
)
def test_outside_the_window_the_template_of_the_patients_language_is_used(
    booking, clock, engine, dispatcher, sender, language, expected
) -> None:
    enrol(booking, channel="whatsapp", language=language)
    run_pass(dispatcher, clock, DUE)
    (out,) = sender.sent
    assert out.content_sid == expected
    if expected is None:  # no Russian template: the Russian text by SMS
        assert out.channel == "sms"
        assert "спасибо" in out.body
    else:
        assert out.channel == "whatsapp"
    assert row(engine, "after_treatment").content_sid == expected


def test_the_window_is_the_patients_own_inbound_whatsapp_message(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, channel="whatsapp")
    write_on_whatsapp(twilio, clock, START, sender=PHONE)  # an SMS reply opens nothing
    write_on_whatsapp(twilio, clock, START, sender="whatsapp:+971509999999")  # someone else
    run_pass(dispatcher, clock, DUE)
    assert channels(sender.sent) == Counter({"sms": 1})
    with Session(engine) as session:
        patient = session.exec(select(Patient)).one()
    assert patient.whatsapp_inbound_at is None


@pytest.mark.parametrize("templates", [EXAMPLE_TEMPLATES], ids=["templates"])
def test_a_template_for_a_patient_without_a_first_name_has_no_empty_variable(
    booking, clock, engine, dispatcher, sender
) -> None:
    # Twilio refuses an empty ContentVariables value (error 21656): the message would
    # fail permanently, without SMS fallback. The plan's default name fills the gap.
    event = completed_event(patient={"channel": "whatsapp"})
    del event["patient"]["first_name"]  # optional in the contract
    assert booking.post(event).status_code == 201
    run_pass(dispatcher, clock, DUE)
    (out,) = sender.sent
    assert out.content_sid == AFTER_TREATMENT_EN
    assert out.content_variables is not None
    values = json.loads(out.content_variables)
    assert all(value.strip() for value in values.values()), values
    assert values == {"1": SMP.default_name["en"], "2": "Skin Clinic"}


@pytest.mark.parametrize("templates", [EXAMPLE_TEMPLATES], ids=["templates"])
def test_a_template_send_retried_inside_the_window_is_recorded_as_free_text(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    # Regression: _route() set content_sid on the template branch and never cleared it.
    enrol(booking, channel="whatsapp")
    sender.fail_next(RetryLater("429 Too Many Requests", code=20429))
    run_pass(dispatcher, clock, DUE)  # outside the window: the template, refused for now
    retry_at = row(engine, "after_treatment").send_at
    write_on_whatsapp(twilio, clock, DUE + timedelta(seconds=5))
    assert run_pass(dispatcher, clock, retry_at).sent == 1
    (out,) = sender.sent
    assert (out.channel, out.content_sid) == ("whatsapp", None)  # free text went out
    stored = row(engine, "after_treatment")
    assert (stored.status, stored.content_sid) == (Status.QUEUED, None)


@pytest.fixture
def no_whatsapp_sender(settings: Settings) -> Settings:
    assert settings.twilio is not None
    return replace(settings, twilio=replace(settings.twilio, whatsapp_from=None))


def test_without_a_whatsapp_sender_the_message_goes_by_sms_and_says_why(
    booking, twilio, clock, engine, sender, no_whatsapp_sender
) -> None:
    enrol(booking, channel="whatsapp")
    write_on_whatsapp(twilio, clock, DAY_1 - WA_INSIDE)  # even inside the window
    dispatcher = Dispatcher(
        engine, sender, load_plans(no_whatsapp_sender.plans_dir), no_whatsapp_sender
    )
    try:
        assert run_pass(dispatcher, clock, DAY_1).sent == 2
    finally:
        dispatcher.close()
    assert {m.channel for m in sender.sent} == {"sms"}
    stored = row(engine, "after_treatment")
    assert stored.channel == "sms"
    assert "TWILIO_WHATSAPP_FROM" in (stored.fallback_reason or "")
