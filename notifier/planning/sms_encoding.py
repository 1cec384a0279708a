"""How an SMS body travels: GSM-7 when every character allows it, else UCS-2, and in
how many segments (the unit carriers bill). A long message is split into parts
that each lose room to a concatenation header: 160 -> 153 GSM-7 septets, 70 -> 67
UCS-2 code units. An extension character (e.g. `€`, `[`) takes two septets and is
never split across parts; neither is a surrogate pair (most emoji) in UCS-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
LIMITS = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True)
class Encoding:
    name: Literal["GSM-7", "UCS-2"]
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int

    def __str__(self) -> str:
        plural = "" if self.segments == 1 else "s"
        return f"{self.name}, {self.units} units, {self.segments} segment{plural}"


def encoding(text: str) -> Encoding:
    """The encoding and segment count Twilio will use for `text`."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        costs = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return Encoding("GSM-7", sum(costs), _segments(costs, *LIMITS["GSM-7"]))
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return Encoding("UCS-2", sum(costs), _segments(costs, *LIMITS["UCS-2"]))


def _segments(costs: list[int], single: int, part: int) -> int:
    """How many parts, packing characters whole into parts of `part` units."""
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts, used = parts + 1, 0
        used += cost
    return parts
