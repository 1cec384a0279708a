"""TwilioSender against a fake Twilio that checks every request against Twilio's OpenAPI spec."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from notifier.delivery.sender import (
    Accepted,
    Ambiguous,
    Lookup,
    Outgoing,
    PermanentFailure,
    RateLimited,
    RecipientOptedOut,
    RetryLater,
    SendError,
)
from notifier.delivery.twilio_sender import TwilioSender
from tests.support.fake_twilio import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    FakeTwilio,
    load_contract,
)
from tests.support.shipped import ROOT
from tests.support.twilio_settings import SMS_FROM, WHATSAPP_FROM, settings_for

PATIENT = "+971501234567"
SERVICE_SID = "MG" + "ab" * 16
CALLBACK = "https://clinic.example.org/webhooks/twilio/status"
BODY = "Day 1 after your treatment: keep the area clean and dry."
MESSAGES_PATH = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"


@pytest.fixture
def fake():
    with FakeTwilio(timeout_delay=2.0) as server:
        yield server


@pytest.fixture
def make_sender(fake):
    senders = []

    def make(base_url: str | None = None, concurrency: int = 32, **overrides) -> TwilioSender:
        sender = TwilioSender(settings_for(base_url or fake.base_url, **overrides), concurrency)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.close()


@pytest.fixture
def sender(make_sender):
    return make_sender()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def port_that_never_accepts():
    """A listening port whose backlog is full, so new connections time out (Linux)."""
    with socket.socket() as listener, ExitStack() as fillers:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        for _ in range(3):
            filler = fillers.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        yield listener.getsockname()[1]


def minute_ago() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=1)


# --- the request is Twilio's contract ------------------------------------------


def test_sms_goes_from_the_configured_number(fake, sender):
    accepted = sender.send(Outgoing(PATIENT, "sms", BODY))

    [message] = fake.messages
    assert message.params == {"To": PATIENT, "From": SMS_FROM, "Body": BODY}
    assert (accepted.sid, accepted.status) == (message.sid, "queued")
    assert fake.violations == []


def test_sms_through_a_messaging_service_names_the_service_instead_of_a_number(fake, make_sender):
    make_sender(messaging_service_sid=SERVICE_SID).send(Outgoing(PATIENT, "sms", BODY))

    [message] = fake.messages
    assert message.params == {"To": PATIENT, "MessagingServiceSid": SERVICE_SID, "Body": BODY}
    assert fake.violations == []


def test_status_callback_is_passed_when_given(fake, sender):
    sender.send(Outgoing(PATIENT, "sms", BODY, status_callback=CALLBACK))

    [message] = fake.messages
    assert message.status_callback == CALLBACK
    assert message.params == {
        "To": PATIENT,
        "From": SMS_FROM,
        "Body": BODY,
        "StatusCallback": CALLBACK,
    }
    assert fake.violations == []


def test_whatsapp_addresses_both_ends_as_whatsapp_numbers(fake, make_sender):
    sender = make_sender(messaging_service_sid=SERVICE_SID)  # SMS only: WhatsApp keeps its From

    sender.send(Outgoing(PATIENT, "whatsapp", BODY, status_callback=CALLBACK))

    [message] = fake.messages
    assert message.params == {
        "To": f"whatsapp:{PATIENT}",
        "From": f"whatsapp:{WHATSAPP_FROM}",
        "Body": BODY,
        "StatusCallback": CALLBACK,
    }
    assert fake.violations == []


def test_every_call_goes_to_the_configured_base_url_whatever_the_environment(
    fake, make_sender, monkeypatch
):
    # The SDK rewrites the host for an edge or region unless the sender prevents it.
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    sender = make_sender()

    sender.send(Outgoing(PATIENT, "sms", BODY))
    sender.find_sent(Lookup(PATIENT, "sms", BODY, minute_ago()))

    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", MESSAGES_PATH),
        ("GET", MESSAGES_PATH),
    ]
    assert fake.violations == []


def test_a_proxy_set_in_the_environment_carries_every_call(fake, make_sender, monkeypatch):
    # Twilio's host does not resolve here: only the proxy (the fake) can answer.
    monkeypatch.setenv("HTTP_PROXY", fake.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sender = make_sender("http://api.twilio.invalid")

    accepted = sender.send(Outgoing(PATIENT, "sms", BODY))

    assert [m.sid for m in fake.messages] == [accepted.sid]
    assert [(r.method, r.path) for r in fake.requests] == [("POST", MESSAGES_PATH)]


@pytest.mark.parametrize(
    ("channel", "overrides"),
    [
        ("sms", {"sms_from": None, "messaging_service_sid": None}),
        ("whatsapp", {"whatsapp_from": None, "messaging_service_sid": SERVICE_SID}),
    ],
)
def test_a_channel_without_a_configured_sender_fails_permanently_before_calling_twilio(
    fake, make_sender, channel, overrides
):
    sender = make_sender(**overrides)

    with pytest.raises(PermanentFailure, match="not configured") as failure:
        sender.send(Outgoing(PATIENT, channel, BODY))

    assert failure.value.code is None
    assert fake.requests == []


# --- the contract check itself catches bad requests (negative controls) --------


@pytest.mark.parametrize(
    ("form", "complaint"),
    [
        ({"To": PATIENT, "From": SMS_FROM, "Body": BODY, "Bogus": "1"}, "'Bogus'"),
        ({"To": PATIENT, "From": SMS_FROM, "Body": BODY, "StatusCallback": "no url"}, "uri"),
        ({"To": "971501234567", "From": SMS_FROM, "Body": BODY}, "phone-number"),
        ({"From": SMS_FROM, "Body": BODY}, "'To' is a required property"),
        ({"To": PATIENT, "MessagingServiceSid": "MG123", "Body": BODY}, "MG"),
        ({"To": PATIENT, "Body": BODY}, "From or MessagingServiceSid"),
        ({"To": f"whatsapp:{PATIENT}", "From": WHATSAPP_FROM, "Body": BODY}, "channels"),
    ],
)
def test_fake_rejects_a_create_request_the_spec_does_not_allow(fake, form, complaint):
    response = requests.post(
        fake.base_url + MESSAGES_PATH,
        data=form,
        auth=(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN),
        timeout=5,
    )

    assert response.status_code == 400
    assert len(fake.violations) >= 1
    assert complaint in " ".join(fake.violations)
    assert fake.messages == []


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ({"To": PATIENT, "Sort": "asc"}, "'Sort'"),
        # Twilio's docs show DateSent>=YYYY-MM-DD, but the spec says date-time.
        ({"To": PATIENT, "DateSent>": "2026-01-01"}, "'DateSent>'"),
    ],
)
def test_fake_rejects_a_list_request_the_spec_does_not_allow(fake, query, complaint):
    response = requests.get(
        fake.base_url + MESSAGES_PATH,
        params=query,
        auth=(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN),
        timeout=5,
    )

    assert response.status_code == 400
    assert complaint in " ".join(fake.violations)


def test_fake_rejects_wrong_credentials(fake):
    response = requests.post(
        fake.base_url + MESSAGES_PATH,
        data={"To": PATIENT, "From": SMS_FROM, "Body": BODY},
        auth=(DEFAULT_ACCOUNT_SID, "not-the-token"),
        timeout=5,
    )

    assert (response.status_code, response.json()["code"]) == (401, 20003)
    assert fake.violations != []
    assert fake.messages == []


# --- a batch is in flight at once, within the concurrency ------------------------


def test_a_batch_is_in_flight_at_once_but_never_more_than_the_concurrency():
    with FakeTwilio(latency=0.2) as fake:
        sender = TwilioSender(settings_for(fake.base_url), concurrency=4)
        try:
            outcomes = sender.send_batch(
                [Outgoing(f"+97150123{n:04d}", "sms", f"{BODY} {n}") for n in range(10)]
            )
        finally:
            sender.close()

    assert fake.most_in_flight == 4
    assert [o.sid for o in outcomes] == [  # each outcome in the order of its message
        next(m.sid for m in fake.messages if m.body == f"{BODY} {n}") for n in range(10)
    ]


def test_one_failure_in_a_batch_is_that_messages_outcome_only(fake, make_sender):
    sender = make_sender(concurrency=1)  # one at a time: the first message meets the fault
    fake.script([("error", 400, 21211)])

    first, second, third = sender.send_batch(
        [Outgoing(PATIENT, "sms", f"{BODY} {n}") for n in range(3)]
    )

    assert isinstance(first, PermanentFailure) and first.code == 21211
    assert isinstance(second, Accepted) and isinstance(third, Accepted)
    assert [m.body for m in fake.messages] == [f"{BODY} 1", f"{BODY} 2"]


# --- Twilio's errors become the sender's kinds --------------------------------


@pytest.mark.parametrize(
    ("step", "kind", "code"),
    [
        ("429", RateLimited, 20429),
        (("error", 400, 20429), RateLimited, 20429),
        ("500", Ambiguous, 20500),
        ("timeout", Ambiguous, None),
        ("reset", Ambiguous, None),
        (("error", 400, 21211), PermanentFailure, 21211),
        (("error", 400, 21614), PermanentFailure, 21614),
        (("error", 400, 21610), RecipientOptedOut, 21610),
        (("error", 401, 20003), RetryLater, 20003),
    ],
    ids=["429", "20429", "500", "timeout", "dropped", "21211", "21614", "21610", "bad-credentials"],
)
def test_twilio_failures_become_the_kind_the_dispatcher_decides_on(fake, sender, step, kind, code):
    fake.script([step])

    with pytest.raises(SendError) as failure:
        sender.send(Outgoing(PATIENT, "sms", BODY))

    assert type(failure.value) is kind
    assert failure.value.code == code


def test_an_invalid_number_is_permanent_and_its_message_does_not_carry_the_number(fake, sender):
    fake.script([("error", 400, 21211)])  # Twilio's text for 21211 quotes the number

    with pytest.raises(PermanentFailure) as failure:
        sender.send(Outgoing(PATIENT, "sms", BODY))

    assert not isinstance(failure.value, RecipientOptedOut)
    assert "4567" in str(failure.value)
    assert PATIENT not in str(failure.value)
    assert failure.value.__suppress_context__  # the SDK's own text is not chained either


def test_connection_refused_is_retry_later(make_sender):
    sender = make_sender(f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(RetryLater):
        sender.send(Outgoing(PATIENT, "sms", BODY))
    with pytest.raises(RetryLater):
        sender.find_sent(Lookup(PATIENT, "sms", BODY, minute_ago()))


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux's handling of a full backlog")
def test_connect_timeout_is_retry_later(make_sender):
    with port_that_never_accepts() as port:
        sender = make_sender(f"http://127.0.0.1:{port}")

        with pytest.raises(RetryLater, match="nothing sent"):
            sender.send(Outgoing(PATIENT, "sms", BODY))


def test_sending_works_again_once_the_faults_are_over(fake, sender):
    fake.script(["429", "500"])
    for _ in range(2):
        with pytest.raises(SendError):
            sender.send(Outgoing(PATIENT, "sms", BODY))

    accepted = sender.send(Outgoing(PATIENT, "sms", BODY))

    assert [m.sid for m in fake.messages] == [accepted.sid]


# --- find_sent: adopt instead of sending twice ---------------------------------


def test_find_sent_finds_a_message_twilio_took_although_it_answered_500(fake, sender):
    fake.script(["500_sent"])
    with pytest.raises(Ambiguous):
        sender.send(Outgoing(PATIENT, "sms", BODY))

    found = sender.find_sent(Lookup(PATIENT, "sms", BODY, minute_ago()))

    [message] = fake.messages
    assert found == [message.sid]
    assert fake.violations == []


def test_find_sent_finds_a_message_whose_answer_timed_out(fake, sender):
    fake.script(["timeout"])
    with pytest.raises(Ambiguous):
        sender.send(Outgoing(PATIENT, "whatsapp", BODY))

    assert sender.find_sent(Lookup(PATIENT, "whatsapp", BODY, minute_ago())) == [
        fake.messages[0].sid
    ]


def test_find_sent_is_none_when_that_body_was_not_sent_to_that_address(fake, sender):
    sender.send(Outgoing(PATIENT, "sms", "Another instruction"))
    sender.send(Outgoing("+971509999999", "sms", BODY))
    sender.send(Outgoing(PATIENT, "whatsapp", BODY))

    assert sender.find_sent(Lookup(PATIENT, "sms", BODY, minute_ago())) == []
    assert fake.violations == []


def test_find_sent_ignores_messages_before_since(fake, sender):
    sender.send(Outgoing(PATIENT, "sms", BODY))

    assert (
        sender.find_sent(Lookup(PATIENT, "sms", BODY, datetime.now(UTC) + timedelta(seconds=2)))
        == []
    )


def test_find_sent_compares_since_in_utc_and_filters_only_by_recipient(fake, sender):
    fake.add_message(PATIENT, BODY, created=datetime(2030, 1, 1, 0, 30, tzinfo=UTC))
    dubai = ZoneInfo("Asia/Dubai")

    assert sender.find_sent(Lookup(PATIENT, "sms", BODY, datetime(2030, 1, 1, 4, 0, tzinfo=dubai)))
    assert (
        sender.find_sent(Lookup(PATIENT, "sms", BODY, datetime(2030, 1, 1, 5, 0, tzinfo=dubai)))
        == []
    )
    # No DateSent filter: Twilio leaves date_sent empty while a message is queued.
    assert all(r.query == {"To": PATIENT, "PageSize": "50"} for r in fake.requests)


def test_find_sent_reads_past_the_first_page(fake, sender):
    now = datetime.now(UTC)
    target = fake.add_message(PATIENT, BODY, created=now - timedelta(minutes=10))
    for n in range(120):
        fake.add_message(PATIENT, f"Other instruction {n}", created=now)

    found = sender.find_sent(Lookup(PATIENT, "sms", BODY, now - timedelta(hours=1)))

    assert found == [target.sid]
    assert [r.method for r in fake.requests] == ["GET"] * 3
    assert fake.violations == []


@pytest.mark.parametrize(
    ("step", "kind"),
    [("429", RateLimited), ("500", Ambiguous), ("timeout", Ambiguous), ("reset", Ambiguous)],
)
def test_find_sent_failures_become_the_same_kinds(fake, sender, step, kind):
    # A failed list page surfaces from the SDK as a bare TwilioException, not a REST error.
    # aiohttp retries a GET once when a kept-alive connection drops: drop both tries.
    fake.script([step, step] if step == "reset" else [step], method="GET")

    with pytest.raises(SendError) as failure:
        sender.find_sent(Lookup(PATIENT, "sms", BODY, minute_ago()))

    assert type(failure.value) is kind


# --- personal data stays out of logs --------------------------------------------


def test_the_twilio_sdk_logs_no_phone_number_or_body(fake, sender, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("twilio.http_client", "twilio.async_http_client"):
        caplog.set_level(logging.DEBUG, logger=name)  # even if lowered again

    sender.send(Outgoing(PATIENT, "sms", BODY, status_callback=CALLBACK))
    sender.send(Outgoing(PATIENT, "whatsapp", BODY))
    sender.find_sent(Lookup(PATIENT, "whatsapp", BODY, minute_ago()))

    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG is captured
    assert [r.getMessage() for r in caplog.records if r.name.startswith("twilio")] == []
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("notifier"))
    assert "***4567" in ours
    assert PATIENT not in ours
    assert BODY not in ours


# --- the fake itself --------------------------------------------------------------


def test_fake_runs_as_a_separate_process_and_reports_what_it_took():
    command = [sys.executable, "-m", "tests.support.fake_twilio", "--port", "0", "--seed", "1"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            base_url = process.stdout.readline().split()[-1]
            sender = TwilioSender(settings_for(base_url, timeout_seconds=5))
            accepted = sender.send(Outgoing(PATIENT, "sms", BODY))
            sender.close()
            taken = requests.get(base_url + "/_fake/messages", timeout=5).json()
            violations = requests.get(base_url + "/_fake/violations", timeout=5).json()
        finally:
            process.terminate()
            process.communicate(timeout=10)

    assert [(m["sid"], m["to"], m["body"]) for m in taken] == [(accepted.sid, PATIENT, BODY)]
    assert violations == []
    assert process.returncode == 0


def test_fake_answers_as_twilio_does(fake, sender):
    contract = load_contract()
    sender.send(Outgoing(PATIENT, "sms", BODY))
    auth = (DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
    created = requests.post(
        fake.base_url + MESSAGES_PATH,
        data={"To": PATIENT, "Body": BODY, "From": SMS_FROM},
        auth=auth,
        timeout=5,
    )
    listing = requests.get(
        fake.base_url + MESSAGES_PATH, params={"To": PATIENT, "PageSize": 1}, auth=auth, timeout=5
    )

    assert contract.check_response("POST", MESSAGES_PATH, 201, created.json()) == []
    assert contract.check_response("GET", MESSAGES_PATH, 200, listing.json()) == []
    page = listing.json()
    [message] = page["messages"]
    assert (message["status"], message["direction"]) == ("queued", "outbound-api")
    assert datetime.strptime(message["date_created"], "%a, %d %b %Y %H:%M:%S %z")
    assert (page["page"], page["page_size"]) == (0, 1)
    assert "Page=1" in page["next_page_uri"]
