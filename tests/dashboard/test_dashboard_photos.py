"""Photos patients send, shown to signed-in staff on the inbox and the patient's page,
fetched through the service from the fake Twilio (which checks the account's
credentials); never to anyone signed out."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from notifier.settings import Settings
from tests.conftest import TWILIO_TOKEN, BookingSystem, Clock, TwilioWebhooks
from tests.conftest import completed_event as enrolment
from tests.dashboard.conftest import SECRET_KEY, Staff
from tests.support.fake_twilio import PHOTO, FakeTwilio
from tests.support.twilio_webhooks import send_with_media

BASE = "https://clinic.example"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(auth_token=TWILIO_TOKEN) as server:
        yield server


@pytest.fixture
def dashboard_settings(settings: Settings, fake: FakeTwilio) -> Settings:
    assert settings.twilio is not None
    twilio = dataclasses.replace(settings.twilio, api_base_url=fake.base_url, timeout_seconds=5.0)
    return dataclasses.replace(settings, secret_key=SECRET_KEY, twilio=twilio, public_base_url=BASE)


@pytest.fixture
def twilio(dashboard_app: Any, clock: Clock) -> TwilioWebhooks:
    client = dashboard_app.test_client()
    assert BookingSystem(client, clock).post(enrolment()).status_code == 201
    return TwilioWebhooks(client, base_url=BASE)


def file_fetches(fake: FakeTwilio) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and "/Media/" in r.path)


def photos_on(staff: Staff, path: str) -> list[Any]:
    assert staff.get(path).status_code == 200
    assert staff.last is not None
    return staff.last.select("ul.photos img")


def test_staff_see_the_patients_photo_in_the_inbox_and_on_the_timeline(
    signed_in: Staff, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    send_with_media(twilio, fake, "the area is swollen, photo attached", photos=2)
    for path in ("/staff/", "/staff/patients/P-1001"):
        images = photos_on(signed_in, path)
        assert [img["alt"] for img in images] == [
            "Photo 1 the patient sent",
            "Photo 2 the patient sent",
        ]
        assert all(img["src"].startswith("/staff/replies/") for img in images)
    served = signed_in.get(images[0]["src"])
    assert served.status_code == 200
    assert served.mimetype == "image/jpeg"
    assert served.data == PHOTO
    assert served.headers["Cache-Control"] == "private, no-store"
    assert "sandbox" in served.headers["Content-Security-Policy"]
    assert file_fetches(fake) == 1  # from Twilio, with the account's credentials


def test_a_file_that_is_not_an_image_is_named_not_shown(
    signed_in: Staff, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    send_with_media(twilio, fake, "my form", content_type="application/pdf")
    assert photos_on(signed_in, "/staff/") == []
    assert signed_in.last is not None
    listed = signed_in.last.select_one("ul.photos li").get_text()
    assert "application/pdf" in listed and "not shown" in listed
    reply_id = signed_in.last.select_one("article.reply")["aria-labelledby"].split("-")[1]
    assert signed_in.get(f"/staff/replies/{reply_id}/photos/0").status_code == 415


def test_photos_are_for_signed_in_staff_only_and_unknown_ones_are_404(
    staff: Staff, signed_in: Staff, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    send_with_media(twilio, fake, "photo")
    src = photos_on(signed_in, "/staff/")[0]["src"]
    assert signed_in.get(src.rsplit("/", 1)[0] + "/7").status_code == 404
    signed_in.post("/staff/logout")
    fetched = file_fetches(fake)
    response = signed_in.get(src)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/staff/login")
    assert file_fetches(fake) == fetched
