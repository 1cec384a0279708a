"""Twilio's webhooks: no form, however broken or hostile, is a server error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.conftest import (
    PHONE,
    BookingSystem,
    Clock,
    TwilioWebhooks,
    completed_event,
    make_settings,
)
from tests.support.fuzzing import fuzz
from tests.support.twilio_webhooks import INBOUND, STATUS, twiml


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("path", "field"),
    [
        (INBOUND, "Body"),
        (INBOUND, "MessageSid"),
        (INBOUND, "From"),
        (STATUS, "MessageSid"),
        (STATUS, "MessageStatus"),
    ],
)
def test_a_nul_character_is_not_a_server_error_on_postgresql(
    postgres_url: str, build_app: Callable[..., Any], path: str, field: str
) -> None:
    client = build_app(make_settings(postgres_url))
    form = {
        "MessageSid": "SM" + "1" * 32,
        "From": PHONE,
        "Body": "hello",
        "MessageStatus": "delivered",
    }
    form[field] = form[field][:5] + "\x00" + form[field][5:]
    answer = TwilioWebhooks(client).post(path, form)
    assert answer.status_code < 500


FIELDS = ["MessageSid", "From", "To", "Body", "OptOutType", "MessageStatus", "ErrorCode"]
VALUES = st.text(max_size=40) | st.sampled_from(
    [
        "",
        " ",
        PHONE,
        f"whatsapp:{PHONE}",
        "whatsapp:",
        "0501234567",
        "+1",
        "SM" + "1" * 32,
        "STOP",
        "START",
        "HELP",
        "stop please",
        "queued",
        "sent",
        "delivered",
        "read",
        "undelivered",
        "30003",
        "-1",
        "\u0663\u0660\u0660\u0660\u0663",  # 30003 in Arabic-Indic digits
        "1e5",
    ]
)
SIDS = st.sampled_from(["SM" + "1" * 32, "SM" + "2" * 32]) | st.text(min_size=1, max_size=70)
SENDERS = st.sampled_from([PHONE, f"whatsapp:{PHONE}", "+971509999999"]) | st.text(max_size=25)
# Mostly forms with what Twilio always sends (so they get past the 400s), junk besides.
PLAUSIBLE_FORMS = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries(
        {"MessageSid": SIDS, "From": SENDERS, "MessageStatus": VALUES},
        optional={f: VALUES for f in ("To", "Body", "OptOutType", "ErrorCode")},
    ),
    st.dictionaries(st.text(max_size=12), VALUES, max_size=4),
)
RAW_FORMS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), VALUES, max_size=8)
FORMS = PLAUSIBLE_FORMS | RAW_FORMS
FUZZ = fuzz(max_examples=100)


@pytest.fixture
def sqlite_twilio(sqlite_url: str, clock: Clock, build_app: Callable[..., Any]) -> TwilioWebhooks:
    """Twilio posting to an app on SQLite only, with one enrolled patient: for the
    property tests, which post many requests."""
    client = build_app(make_settings(sqlite_url))
    assert BookingSystem(client, clock).post(completed_event()).status_code == 201
    return TwilioWebhooks(client)


@FUZZ
@given(form=FORMS)
def test_junk_inbound_form_data_is_never_a_server_error(
    sqlite_twilio: TwilioWebhooks, form: dict[str, str]
) -> None:
    answer = sqlite_twilio.post(INBOUND, form)
    event(f"status {answer.status_code}")
    assert answer.status_code in {200, 400}, answer.data
    twiml(answer)


@FUZZ
@given(form=FORMS)
def test_junk_status_form_data_is_never_a_server_error(
    sqlite_twilio: TwilioWebhooks, form: dict[str, str]
) -> None:
    answer = sqlite_twilio.post(STATUS, form)
    event(f"status {answer.status_code}")
    assert answer.status_code in {204, 400}, answer.data
