"""Twilio's two webhooks as the tests call them, and reading the TwiML they answer."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from tests.support.fake_twilio import FakeMessage, FakeTwilio

INBOUND = "/webhooks/twilio/inbound"
STATUS = "/webhooks/twilio/status"


def twiml(answer: Any) -> list[str]:
    """The texts of the <Message> elements of a TwiML answer (which must be text/xml)."""
    assert answer.mimetype == "text/xml", (answer.status_code, answer.data)
    root = ET.fromstring(answer.data)  # noqa: S314 - our own answer, not untrusted input
    assert root.tag == "Response"
    return [element.text or "" for element in root.iter("Message")]


def send_with_media(
    twilio: Any,
    fake: FakeTwilio,
    body: str,
    *,
    photos: int = 1,
    content_type: str = "image/jpeg",
    sender: str = "+971501234567",
    urls: list[str] | None = None,
) -> FakeMessage:
    """A patient's message with photos, as Twilio records it and posts its webhook."""
    message = fake.add_inbound(sender.removeprefix("whatsapp:"), body, photos)
    params = {
        "MessageSid": message.sid,
        "AccountSid": fake.account_sid,
        "From": sender,
        "To": "+14155550100",
        "Body": body,
        "NumMedia": str(photos),
    }
    for n in range(photos):
        params[f"MediaUrl{n}"] = urls[n] if urls else fake.media_url(message, n)
        params[f"MediaContentType{n}"] = content_type
    assert twilio.post(INBOUND, params).status_code == 200
    return message
