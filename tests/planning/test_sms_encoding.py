"""GSM-7 vs UCS-2 and segment counts, as carriers count them."""

from __future__ import annotations

import pytest

from notifier.planning.sms_encoding import encoding


@pytest.mark.parametrize(
    ("text", "name", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),  # the € starts part two, not split
        ("a" * 152 + "€" + "a" * 151, "GSM-7", 305, 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # 306 plain septets would be 2
        ("Café? {ok} [x]", "GSM-7", 18, 1),
        ("ش" * 70, "UCS-2", 70, 1),
        ("ش" * 71, "UCS-2", 71, 2),
        ("я" * 134, "UCS-2", 134, 2),
        ("я" * 135, "UCS-2", 135, 3),
        ("a" * 69 + "\u2019", "UCS-2", 70, 1),  # one curly quote makes it all UCS-2
        ("😀" * 35, "UCS-2", 70, 1),  # a surrogate pair is two units
        ("a" * 66 + "😀" + "a", "UCS-2", 69, 1),
        ("a" * 66 + "😀" + "a" * 4, "UCS-2", 72, 2),
    ],
)
def test_encoding_and_segments(text: str, name: str, units: int, segments: int) -> None:
    found = encoding(text)
    assert (found.name, found.units, found.segments) == (name, units, segments)


def test_a_surrogate_pair_is_not_split_across_parts() -> None:
    # 134 units would fit two parts of 67, but the emoji cannot straddle them.
    assert encoding("a" * 66 + "😀" + "a" * 65).segments == 2
    assert encoding("a" * 66 + "😀" + "a" * 66).segments == 3
