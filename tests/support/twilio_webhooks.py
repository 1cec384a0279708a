"""Twilio's two webhooks as the tests call them, and reading the TwiML they answer."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

INBOUND = "/webhooks/twilio/inbound"
STATUS = "/webhooks/twilio/status"


def twiml(answer: Any) -> list[str]:
    """The texts of the <Message> elements of a TwiML answer (which must be text/xml)."""
    assert answer.mimetype == "text/xml", (answer.status_code, answer.data)
    root = ET.fromstring(answer.data)  # noqa: S314 - our own answer, not untrusted input
    assert root.tag == "Response"
    return [element.text or "" for element in root.iter("Message")]
