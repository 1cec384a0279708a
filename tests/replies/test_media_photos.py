"""Photos patients send are kept, listed and served to staff through the service.

The fake Twilio serves each photo at its media URL only with the account's
credentials; staff only ever see the service's own address for it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from notifier.delivery import twilio_media
from notifier.settings import Settings
from tests.conftest import PHONE, STAFF, TWILIO_TOKEN, BookingSystem, TwilioWebhooks
from tests.conftest import completed_event as enrolment
from tests.support.fake_twilio import PHOTO, FakeTwilio
from tests.support.twilio_webhooks import send_with_media as send

BASE = "https://clinic.example"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(auth_token=TWILIO_TOKEN) as server:
        yield server


@pytest.fixture
def app(settings: Settings, fake: FakeTwilio, engine: Any, build_app: Callable[..., Any]) -> Any:
    assert settings.twilio is not None
    configured = replace(
        settings,
        twilio=replace(settings.twilio, api_base_url=fake.base_url, timeout_seconds=5.0),
        public_base_url=BASE,
    )
    return build_app(configured, engine)


@pytest.fixture
def twilio(app: Any, clock: Any) -> TwilioWebhooks:
    assert BookingSystem(app, clock).post(enrolment()).status_code == 201
    return TwilioWebhooks(app, base_url=BASE)


def listed(app: Any, sid: str) -> dict[str, Any]:
    replies = app.get("/api/replies", headers=STAFF).get_json()["replies"]
    found: dict[str, Any] = next(r for r in replies if r["sid"] == sid)
    return found


def test_a_photo_only_mms_is_stored_listed_urgent_and_served(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    message = send(twilio, fake, "")

    reply = listed(app, message.sid)
    assert (reply["urgent"], reply["signs"]) == (True, ["photo"])
    assert reply["media"] == [
        {"url": f"{BASE}/api/replies/{message.sid}/media/0", "content_type": "image/jpeg"}
    ]
    photo = app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF)
    assert photo.status_code == 200
    assert photo.data == PHOTO
    assert photo.mimetype == "image/jpeg"
    assert photo.headers["Cache-Control"] == "private, no-store"
    assert fake.violations == []  # fetched with the account's credentials


def test_twilios_address_and_credentials_never_reach_staff(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    message = send(twilio, fake, "is this normal?")
    for answer in (
        app.get("/api/replies", headers=STAFF),
        app.get("/api/patients/P-1001", headers=STAFF),
        app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF),
    ):
        text = answer.get_data(as_text=False)
        assert fake.base_url.encode() not in text
        assert TWILIO_TOKEN.encode() not in text
        assert message.media[0].encode() not in text


def test_a_whatsapp_image_is_kept_and_listed_on_the_patients_page(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    message = send(
        twilio, fake, "is this normal?", content_type="image/png", sender="whatsapp:" + PHONE
    )
    view = app.get("/api/patients/P-1001", headers=STAFF).get_json()
    [reply] = view["replies"]
    assert reply["urgent"] is True
    assert reply["media"][0]["content_type"] == "image/png"
    served = app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF)
    assert served.status_code == 200


def test_a_photo_with_calming_words_is_not_urgent(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    message = send(twilio, fake, "all good, healing nicely")
    assert listed(app, message.sid)["urgent"] is False


def test_only_images_are_served(app: Any, twilio: TwilioWebhooks, fake: FakeTwilio) -> None:
    message = send(twilio, fake, "", content_type="audio/ogg")
    assert listed(app, message.sid)["media"][0]["content_type"] == "audio/ogg"
    answer = app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF)
    assert answer.status_code == 415
    assert [r for r in fake.requests if "/Media/" in r.path] == []


def test_a_photo_past_the_size_cap_is_refused(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = send(twilio, fake, "")
    monkeypatch.setattr(twilio_media, "MAX_MEDIA_BYTES", len(PHOTO) - 1)
    assert app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF).status_code == 413


def test_a_media_url_outside_the_twilio_account_is_never_fetched(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    elsewhere = f"{fake.base_url}/2010-04-01/Accounts/AC{'f' * 32}/Messages/MM1/Media/ME1"
    message = send(twilio, fake, "", urls=[elsewhere])
    answer = app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF)
    assert answer.status_code == 404
    assert [r for r in fake.requests if "/Media/" in r.path] == []


def test_media_needs_a_staff_token_and_an_existing_file(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    message = send(twilio, fake, "")
    assert app.get(f"/api/replies/{message.sid}/media/0").status_code == 401
    assert app.get(f"/api/replies/{message.sid}/media/1", headers=STAFF).status_code == 404
    assert app.get("/api/replies/SMnope/media/0", headers=STAFF).status_code == 404


def test_a_photo_twilio_no_longer_has_is_404(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    message = send(twilio, fake, "")
    path = f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{message.sid}/Media/"
    fake.handle("DELETE", path + message.media[0] + ".json", [], b"", _auth(fake))
    assert app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF).status_code == 404


def test_erasing_the_patient_forgets_where_their_photos_were(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio, clock: Any
) -> None:
    message = send(twilio, fake, "")
    erase = {"id": "evt_erase", "type": "patient.erased", "patient": {"id": "P-1001"}}
    assert BookingSystem(app, clock).post(erase).status_code == 200
    assert app.get(f"/api/replies/{message.sid}/media/0", headers=STAFF).status_code == 404
    assert "media" not in listed(app, message.sid)


def test_more_media_fields_than_twilio_sends_are_ignored_and_junk_is_no_error(
    app: Any, twilio: TwilioWebhooks, fake: FakeTwilio
) -> None:
    base = {
        "AccountSid": fake.account_sid,
        "From": PHONE,
        "To": "+14155550100",
        "Body": "",
    }
    for n, extra in enumerate(
        [
            {"NumMedia": "many"},
            {"NumMedia": "2", "MediaUrl0": "javascript:alert(1)"},
            {"NumMedia": "1"},
            {"NumMedia": "99"},
        ]
    ):
        sid = f"MM{n:032d}"
        assert (
            twilio.post("/webhooks/twilio/inbound", base | extra | {"MessageSid": sid}).status_code
            == 200
        )
        assert "media" not in listed(app, sid)


def _auth(fake: FakeTwilio) -> dict[str, str]:
    token = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
