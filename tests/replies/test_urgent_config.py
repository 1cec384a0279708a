"""Configuring urgent replies: ONCALL_PHONES, EMERGENCY_NUMBER, ALERT_REPEAT_MINUTES and the
texts in config/alerts.toml, each mistake named at start-up and by `aftercare plan check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.planning.plan import load_plans
from notifier.replies.urgent import AlertTextError, load_alert_texts, parse_alert_texts
from notifier.settings import ALERTS_FILE, ConfigError, Settings
from tests.support.command import aftercare

NEEDED = {"en": "smp", "ar": "smp"}
GOOD = """
[oncall]
alert = "{patient_id}: {reply}{link}"
repeat = "again {round}/{rounds}: {patient_id}: {reply}"
[en]
acknowledgement = "Call {clinic_phone}; emergency {emergency_number}."
[ar]
acknowledgement = "{clinic_phone} {emergency_number}"
"""


def test_the_urgent_reply_settings_default_to_no_oncall_998_and_15_minutes() -> None:
    settings = Settings.from_env({})
    assert (settings.oncall_phones, settings.emergency_number) == ((), "998")
    assert (settings.alert_repeat_minutes, settings.alerts_file) == (15, ALERTS_FILE)


def test_oncall_phones_are_read_as_e164_numbers() -> None:
    settings = Settings.from_env(
        {"ONCALL_PHONES": " +971501110001, +44 7911 123456 ", "EMERGENCY_NUMBER": "+971 999"}
    )
    assert settings.oncall_phones == ("+971501110001", "+447911123456")
    assert settings.emergency_number == "+971999"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ONCALL_PHONES": "+971501110001,0501110002"}, "ONCALL_PHONES: entry 2 is not an E.164"),
        ({"ONCALL_PHONES": "+971501110001,,"}, "ONCALL_PHONES: entry 2 is not an E.164"),
        ({"ONCALL_PHONES": "+971501110001,+971501110001"}, "ONCALL_PHONES: entry 2 repeats"),
        ({"EMERGENCY_NUMBER": "call 998"}, "EMERGENCY_NUMBER: 'call998' is not a phone number"),
        ({"ALERT_REPEAT_MINUTES": "0"}, "ALERT_REPEAT_MINUTES: 0 is outside 1..1440"),
        ({"ALERT_REPEAT_MINUTES": "soon"}, "ALERT_REPEAT_MINUTES: 'soon' is not a number"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(environ)
    assert str(error.value).startswith(message)


def test_the_shipped_alert_texts_cover_every_plan_language() -> None:
    texts = load_alert_texts(load_plans(Settings().plans_dir), ALERTS_FILE)
    assert set(texts.acknowledgements) == {"en", "ar", "ru"}
    for text in texts.acknowledgements.values():
        assert "{clinic_phone}" in text and "{emergency_number}" in text


@pytest.mark.parametrize(
    ("before", "after", "problem"),
    [
        ("[ar]\n", "[fr]\n", "f.toml: no [ar] table, but plan 'smp' carries language 'ar'"),
        (
            'acknowledgement = "{clinic_phone} {emergency_number}"',
            'acknowledgement = "{clinic_phone}"',
            "f.toml: [ar] acknowledgement must give {emergency_number}",
        ),
        (
            'alert = "{patient_id}: {reply}{link}"',
            'alert = "{patient_id}: {body}"',
            "f.toml: [oncall] alert: unknown placeholder {body} "
            "(known: first_name, link, patient_id, reply, signs)",
        ),
        (
            'repeat = "again {round}/{rounds}: {patient_id}: {reply}"',
            'repeat = "again: {patient_id}: {reply}"',
            "f.toml: [oncall] repeat must give {round}",
        ),
        ("[oncall]\n", "[on_call]\n", "f.toml: no [oncall] table with the on-call alert texts"),
        ('[en]\nacknowledgement = "', '[en]\nack = "', "f.toml: [en] unknown field 'ack'"),
        ("{reply}{link}", "{reply{link}", "f.toml: [oncall] alert: broken braces"),
    ],
)
def test_a_broken_alerts_file_names_the_file_table_and_field(
    before: str, after: str, problem: str
) -> None:
    assert before in GOOD
    with pytest.raises(AlertTextError) as error:
        parse_alert_texts(GOOD.replace(before, after, 1), "f.toml", NEEDED)
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def test_a_good_file_parses() -> None:
    texts = parse_alert_texts(GOOD, "f.toml", NEEDED)
    assert texts.alert == "{patient_id}: {reply}{link}"
    assert texts.acknowledgements["ar"] == "{clinic_phone} {emergency_number}"


def test_plan_check_validates_the_alerts_file(tmp_path: Path) -> None:
    result = aftercare("plan", "check")
    assert result.returncode == 0, result.stderr
    assert f"ok  urgent-reply texts ({ALERTS_FILE}): acknowledgements in en, ar, ru" in (
        result.stdout.splitlines()
    )
    broken = tmp_path / "alerts.toml"
    broken.write_text(GOOD.replace("[ar]", "[xx]"), encoding="utf-8")
    result = aftercare("plan", "check", env={"ALERTS_FILE": str(broken)})
    assert result.returncode == 1
    assert "carries language 'ar'" in result.stderr
    assert "Traceback" not in result.stderr
