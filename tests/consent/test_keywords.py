"""Keywords in every plan language, as data (`config/keywords.toml`, SPEC §7).

A patient's STOP, START or HELP in English, Arabic or Russian, through the real
inbound webhook signed as Twilio signs it: what it does, and what we answer in
which language. Then the normalisation on the pure functions, the keyword file's
validation, and `aftercare plan check`.
"""

# Arabic and Cyrillic letters that look like Latin ones are what this file tests.
# ruff: noqa: RUF001

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from notifier import create_app
from notifier.consent.keywords import (
    Intent,
    KeywordError,
    Keywords,
    answer,
    intent,
    load_keywords,
    normalise,
    parse_keywords,
)
from notifier.planning.plan import load_plans
from notifier.settings import Settings
from notifier.store.models import ConsentChange, Reply
from tests.conftest import CLINIC, PHONE, BookingSystem, Clock, TwilioWebhooks, completed_event
from tests.support.command import aftercare
from tests.support.rows import count
from tests.support.shipped import PLANS
from tests.support.staff import patient_view, staff_view
from tests.support.twilio_webhooks import twiml

SHIPPED: Keywords = load_keywords(Settings().keywords_file, PLANS)

OUT, IN, HELP, REPLY = "opted out", "opted in", "help", "reply"
MEANING = {OUT: Intent.STOP, IN: Intent.START, HELP: Intent.HELP}


class Case(NamedTuple):
    """A patient (enrolled in `patient_language`, on `channel`) texts `body`."""

    body: str
    effect: str  # OUT, IN, HELP or REPLY
    answered_in: str | None  # the language of our TwiML answer; None: no answer
    channel: str = "sms"
    patient_language: str = "en"


ENGLISH = [
    Case("STOP", OUT, None),  # Twilio answers its own words on SMS
    Case("Stop.", OUT, None),
    Case("STOP!", OUT, None),
    Case("  unsubscribe\n", OUT, None),
    Case("\uff33\uff34\uff2f\uff30", OUT, None),  # fullwidth STOP: NFKC
    Case("Cancel?", OUT, None),
    Case("OptOut", OUT, None),
    Case("STOP", OUT, None, "sms", "ar"),
    Case("stop", OUT, "en", "whatsapp"),  # WhatsApp: Twilio handles no keyword, we confirm
    Case("stop", OUT, "ar", "whatsapp", "ar"),  # ... in the patient's language
    Case("Stop", OUT, "en", "whatsapp", "fr"),  # a language the file lacks: the word's
    Case("Start!", IN, None),
    Case("yes", IN, None),
    Case("unstop", IN, "en", "whatsapp"),
    Case("START", IN, "ru", "whatsapp", "ru"),
    Case("HELP", HELP, "en"),
    Case("info?", HELP, "en"),
    Case("Help", HELP, "ru", "sms", "ru"),
    Case("stop please", REPLY, None),
    Case("don't stop", REPLY, None),
    Case("Please stop texting me", REPLY, None),
    Case("STOP STOP", REPLY, None),
    Case("help me", REPLY, None),
    Case("yes please", REPLY, None),
    Case("No", REPLY, None),
]
ARABIC = [
    Case("توقف", OUT, "ar"),  # Twilio does not know Arabic words: we confirm, on SMS too
    Case("إيقاف", OUT, "ar"),
    Case("ايقاف", OUT, "ar"),
    Case("إلغاء", OUT, "ar"),
    Case("الغاء", OUT, "ar"),
    Case("إلغاء الاشتراك", OUT, "ar"),
    Case("الغاء  الإشتراك", OUT, "ar"),
    Case("أوقف", OUT, "ar"),
    Case("توقف؟", OUT, "ar"),
    Case("توقّف!", OUT, "ar"),  # shadda
    Case("تـوقـف", OUT, "ar"),  # tatweel
    Case("\u200fتوقف\u200f", OUT, "ar"),  # right-to-left marks a keyboard added
    Case("كفى", OUT, "ar"),
    Case("توقف", OUT, "ar", "whatsapp"),
    Case("توقف", OUT, "ar", "sms", "ru"),  # the word's language, not the patient's
    Case("اشتراك", IN, "ar"),
    Case("استئناف", IN, "ar"),
    Case("اعاده الاشتراك", IN, "ar"),
    Case("مساعدة", HELP, "ar"),
    Case("مساعده؟", HELP, "ar"),
    Case("معلومات", HELP, "ar", "sms", "ar"),
    Case("لا تتوقف", REPLY, None),  # "don't stop"
    Case("توقف من فضلك", REPLY, None),  # "stop please"
    Case("أبداً", REPLY, None),  # "not at all": the reason ابدأ is no START word
    Case("ابدأ", REPLY, None),
    Case("نعم", REPLY, None),  # "yes" answers a question
    Case("متى أستطيع غسل رأسي؟", REPLY, None),
]
RUSSIAN = [
    Case("СТОП", OUT, "ru"),
    Case("стоп!!", OUT, "ru"),
    Case("Стоп.", OUT, "ru"),
    Case("ОТПИСАТЬСЯ", OUT, "ru"),
    Case("отписка", OUT, "ru"),
    Case("Хватит!", OUT, "ru"),
    Case("отмена", OUT, "ru"),
    Case(" стоп ", OUT, "ru", "whatsapp"),
    Case("стоп", OUT, "ru", "sms", "ar"),
    Case("СТАРТ", IN, "ru"),
    Case("возобновить", IN, "ru"),
    Case("Подписаться!", IN, "ru"),
    Case("ПОМОЩЬ", HELP, "ru"),
    Case("помощь?", HELP, "ru"),
    Case("справка", HELP, "ru", "sms", "ru"),
    Case("не стоп", REPLY, None),
    Case("стоп пожалуйста", REPLY, None),
    Case("Не надо стоп", REPLY, None),
    Case("Да", REPLY, None),
    Case("помогите", REPLY, None),
    Case("Можно мыть голову?", REPLY, None),
    Case("Всё хорошо, спасибо", REPLY, None),
]
CASES = [
    pytest.param(case, id=f"{group}-{n:02d}-{case.effect.replace(' ', '-')}")
    for group, cases in (("en", ENGLISH), ("ar", ARABIC), ("ru", RUSSIAN))
    for n, case in enumerate(cases)
]


def script(text: str) -> str:
    """The language a text is written in, from its letters (the clinic's name aside)."""
    names = {(unicodedata.name(c, "") or "?").split()[0] for c in text.replace("Skin Clinic", "")}
    return "ar" if "ARABIC" in names else "ru" if "CYRILLIC" in names else "en"


# -- through the inbound webhook ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_a_keyword_in_any_language_does_what_it_says_and_is_answered_in_the_right_one(
    booking: BookingSystem, twilio: TwilioWebhooks, clock: Clock, engine: Any, case: Case
) -> None:
    patient = {"language": case.patient_language, "channel": case.channel}
    assert booking.post(completed_event(patient=patient)).status_code == 201
    sender = f"whatsapp:{PHONE}" if case.channel == "whatsapp" else PHONE
    if case.effect == IN:
        assert twilio.inbound("STOP", opt_out_type="STOP", sender=sender).status_code == 200
        clock.advance(minutes=5)

    answer = twilio.inbound(case.body, sender=sender)

    assert answer.status_code == 200
    view = patient_view(booking.client)
    statuses = {m["status"] for m in view["messages"]}
    last_change = view["consent_log"][-1]
    if case.effect == REPLY:
        assert twiml(answer) == []
        assert (view["opted_out"], statuses, len(view["consent_log"])) == (False, {"scheduled"}, 1)
        assert [r["body"] for r in view["replies"]] == [case.body]
        return
    assert count(engine, Reply) == 0
    if case.effect == OUT:
        assert (view["opted_out"], statuses) == (True, {"held"})
        assert (last_change["consented"], last_change["source"]) == (False, "keyword")
    elif case.effect == IN:
        assert (view["opted_out"], statuses) == (False, {"scheduled"})
        assert (last_change["consented"], last_change["source"]) == (True, "keyword")
    else:
        assert (view["opted_out"], statuses, count(engine, ConsentChange)) == (
            False,
            {"scheduled"},
            1,
        )
    if case.answered_in is None:
        assert twiml(answer) == []
        return
    [text] = twiml(answer)
    expected = SHIPPED.answers[case.answered_in].to(MEANING[case.effect]).format_map(CLINIC)
    assert text == expected
    assert script(text) == case.answered_in
    assert text.startswith("Skin Clinic")


def test_help_in_any_language_names_the_clinic_its_phone_and_how_to_stop(
    booking: BookingSystem, twilio: TwilioWebhooks
) -> None:
    assert booking.post(completed_event()).status_code == 201
    for word, stop_word in (("HELP", "STOP"), ("مساعدة", "توقف"), ("помощь", "СТОП")):
        [text] = twiml(twilio.inbound(word))
        assert "Skin Clinic" in text, word
        assert "+971 4 000 0000" in text, word
        assert stop_word in text, word


def test_opt_out_type_means_twilio_answered_so_an_arabic_stop_gets_no_answer_of_ours(
    booking: BookingSystem, twilio: TwilioWebhooks
) -> None:
    """A clinic may add Arabic words to Twilio's Advanced Opt-Out: Twilio then confirms."""
    assert booking.post(completed_event()).status_code == 201
    assert twiml(twilio.inbound("توقف", opt_out_type="STOP")) == []
    assert patient_view(booking.client)["opted_out"] is True
    assert twiml(twilio.inbound("СТОП", opt_out_type="START")) == []  # OptOutType wins
    assert patient_view(booking.client)["opted_out"] is False
    assert twiml(twilio.inbound("مساعدة", opt_out_type="HELP")) == []


def test_a_russian_stop_from_an_unknown_number_is_confirmed_and_changes_nobody(
    booking: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    assert booking.post(completed_event()).status_code == 201
    [text] = twiml(twilio.inbound("Стоп!", sender="+971509999999"))
    assert script(text) == "ru"
    assert patient_view(booking.client)["opted_out"] is False
    assert count(engine, Reply) == 0


def test_an_arabic_stop_applies_to_every_patient_on_the_number(
    booking: BookingSystem, twilio: TwilioWebhooks
) -> None:
    assert booking.post(completed_event()).status_code == 201
    child = completed_event("evt_0002", patient={"id": "P-1002"}, treatment={"id": "T-556"})
    assert booking.post(child).status_code == 201
    twilio.inbound("إيقاف")
    for patient_id in ("P-1001", "P-1002"):
        view = staff_view(booking.client, patient_id).get_json()
        assert view["opted_out"] is True, patient_id


# -- normalisation and meaning, as pure functions ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  Stop.  ", "stop"),
        ("STOP!", "stop"),
        ("stop?!...", "stop"),
        ("stop !", "stop"),
        ("СТОП!!", "стоп"),
        ("Ёлка", "елка"),
        ("ВСЁ", "все"),
        ("توقف؟", "توقف"),
        ("توقف،", "توقف"),
        ("توقف؛", "توقف"),
        ("أوقف", "اوقف"),
        ("إلغاء", "الغاء"),
        ("آ", "ا"),
        ("\u0671", "\u0627"),  # alef wasla
        ("كفى", "كفي"),
        ("مساعدة", "مساعده"),
        ("مؤقت", "موقت"),
        ("استئناف", "استيناف"),
        ("تـوقـف", "توقف"),
        ("تَوَقَّفْ", "توقف"),
        ("أبداً", "ابدا"),
        ("رحمٰن", "رحمن"),  # dagger alef
        ("\u200fتوقف\u200e", "توقف"),
        ("\ufefb", "\u0644\u0627"),  # lam-alef ligature: NFKC
        ("\uff33\uff34\uff2f\uff30", "stop"),  # fullwidth
        ("STOP\u00a0", "stop"),  # no-break space
        ("إلغاء \t الاشتراك", "الغاء الاشتراك"),
        ("stop please", "stop please"),
        ("не стоп", "не стоп"),
        ("!stop", "!stop"),  # only trailing punctuation goes
        ("", ""),
        ("?!", ""),
    ],
)
def test_normalise(raw: str, normalised: str) -> None:
    assert normalise(raw) == normalised


@pytest.mark.parametrize("mark", [chr(c) for c in range(0x064B, 0x0653)] + ["\u0670"])
def test_every_arabic_diacritic_is_ignored(mark: str) -> None:
    assert intent(f"تو{mark}قف", None, SHIPPED) is Intent.STOP


@pytest.mark.parametrize(
    ("body", "opt_out_type", "meaning"),
    [
        ("توقف", None, Intent.STOP),
        ("إلغاء الاشتراك", None, Intent.STOP),
        ("ОТПИСАТЬСЯ!", None, Intent.STOP),
        ("اشترك", None, Intent.START),
        ("старт.", None, Intent.START),
        ("ПОМОЩЬ", None, Intent.HELP),
        ("معلومات", None, Intent.HELP),
        ("не стоп", None, Intent.REPLY),
        ("don't stop", None, Intent.REPLY),
        ("لا تتوقف", None, Intent.REPLY),
        ("أبداً", None, Intent.REPLY),
        ("hello", "STOP", Intent.STOP),
        ("توقف", "START", Intent.START),
        ("стоп", "HELP", Intent.HELP),
        ("стоп", "junk", Intent.STOP),
    ],
)
def test_intent_on_the_shipped_words(body: str, opt_out_type: str | None, meaning: Intent) -> None:
    assert intent(body, opt_out_type, SHIPPED) is meaning


def test_yo_and_ie_are_one_letter_whichever_the_file_or_the_patient_writes() -> None:
    written = minimal_file().replace('"СТОП"', '"ВСЁ", "ЕЩЕ НЕТ"')
    keywords = parse_keywords(written, "kw.toml", {})
    for body in ("всё", "все", "ВСЕ!", "ещё нет", "Еще нет."):
        assert intent(body, None, keywords) is Intent.STOP, body


@pytest.mark.parametrize(
    ("body", "opt_out_type", "channel", "language", "answered_in"),
    [
        ("STOP", None, "sms", "en", None),  # Twilio confirms on SMS
        ("YES", None, "sms", "ar", None),
        ("STOP", None, "whatsapp", "en", "en"),
        ("STOP", None, "whatsapp", "ar", "ar"),
        ("STOP", None, "whatsapp", None, "en"),  # an unknown number
        ("STOP", None, "whatsapp", "de", "en"),
        ("HELP", None, "sms", "ru", "ru"),
        ("توقف", None, "sms", "en", "ar"),
        ("توقف", None, "sms", "ru", "ar"),
        ("СТАРТ", None, "whatsapp", "ar", "ru"),
        ("ПОМОЩЬ", None, "sms", "en", "ru"),
        ("توقف", "STOP", "sms", "ar", None),  # Twilio acted, and answered
        ("HELP", "HELP", "sms", "en", None),
        ("hello", None, "sms", "en", None),
    ],
)
def test_who_answers_and_in_which_language(
    body: str, opt_out_type: str | None, channel: str, language: str | None, answered_in: str | None
) -> None:
    text = answer(body, opt_out_type, channel, language, SHIPPED)
    if answered_in is None:
        assert text is None
    else:
        assert text is not None
        assert script(text) == answered_in
        assert text == SHIPPED.answers[answered_in].to(intent(body, None, SHIPPED))


def test_a_word_listed_in_two_languages_is_answered_in_the_patients_if_it_is_one_of_them() -> None:
    written = minimal_file().replace('"СТОП"', '"СТОП", "ALTO"').replace('"ALT"', '"ALTO"')
    keywords = parse_keywords(written, "kw.toml", {})
    assert keywords.words["alto"].languages == ("en", "ru")
    assert answer("alto", None, "sms", "ru", keywords) == "ru stop"
    assert answer("alto", None, "sms", "ar", keywords) == "en stop"  # the first listing it


# -- the keyword file's validation ---------------------------------------------------------------


def minimal_file() -> str:
    """A valid keyword file with English (Twilio's words and one more) and Russian."""
    return """
[en]
stop = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "ALT"]
start = ["START", "YES", "UNSTOP"]
help = ["HELP", "INFO"]
stop_reply = "en stop"
start_reply = "en start"
help_reply = "{clinic_name} {clinic_phone} en help"

[ru]
stop = ["СТОП"]
start = ["СТАРТ"]
help = ["ПОМОЩЬ"]
stop_reply = "ru stop"
start_reply = "ru start"
help_reply = "{clinic_name} {clinic_phone} ru help"
"""


def problems(text: str, needed: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(KeywordError) as error:
        parse_keywords(text, "kw.toml", needed or {})
    return error.value.problems


def test_the_minimal_file_is_valid() -> None:
    keywords = parse_keywords(minimal_file(), "kw.toml", {"en": "smp", "ru": "smp"})
    assert keywords.words["стоп"].intent is Intent.STOP
    assert set(keywords.answers) == {"en", "ru"}


def test_a_language_a_plan_carries_but_the_file_lacks_is_named() -> None:
    assert problems(minimal_file(), {"en": "smp", "ar": "smp"}) == [
        "kw.toml: no [ar] table, but plan 'smp' carries language 'ar'"
    ]


@pytest.mark.parametrize(
    ("before", "after", "problem"),
    [
        (
            'start = ["СТАРТ"]',
            'start = ["СТАРТ", "стоп"]',
            "kw.toml: [ru] start: 'стоп' is also a stop word ('СТОП' in [ru])",
        ),
        (
            'help = ["ПОМОЩЬ"]',
            'help = ["ПОМОЩЬ", "yes!"]',
            "kw.toml: [ru] help: 'yes!' is also a start word ('YES' in [en])",
        ),
        (
            'help = ["ПОМОЩЬ"]',
            'help = ["ПОМОЩЬ", "alt!"]',
            "kw.toml: [ru] help: 'alt!' is also a stop word ('ALT' in [en])",
        ),
    ],
)
def test_a_word_listed_for_two_meanings_is_an_error(before: str, after: str, problem: str) -> None:
    assert problems(minimal_file().replace(before, after)) == [problem]


def test_the_same_word_after_normalising_counts_as_listed_twice() -> None:
    text = minimal_file().replace('"СТАРТ"]', '"СТАРТ", "ёж"]').replace('"СТОП"]', '"СТОП", "Еж."]')
    assert problems(text) == ["kw.toml: [ru] start: 'ёж' is also a stop word ('Еж.' in [ru])"]


@pytest.mark.parametrize(
    ("before", "after", "problem"),
    [
        ('stop_reply = "ru stop"\n', "", "kw.toml: [ru] stop_reply is missing"),
        ('start_reply = "ru start"', 'start_reply = "  "', "kw.toml: [ru] start_reply is missing"),
        (
            'help_reply = "{clinic_name} {clinic_phone} ru help"',
            "",
            "kw.toml: [ru] help_reply is missing",
        ),
        (
            'help_reply = "{clinic_name} {clinic_phone} ru help"',
            'help_reply = "{clinic_name}: ru help"',
            "kw.toml: [ru] help_reply must name the clinic: {clinic_name} and {clinic_phone}",
        ),
        (
            'stop_reply = "ru stop"',
            'stop_reply = "{first_name}, ru stop"',
            "kw.toml: [ru] stop_reply: unknown placeholder {first_name} "
            "(known: clinic_name, clinic_phone)",
        ),
        (
            'stop_reply = "ru stop"',
            'stop_reply = "ru {stop"',
            "kw.toml: [ru] stop_reply: broken braces (expected '}' before end of string); "
            "write {{ or }} for a brace",
        ),
        (
            'help = ["ПОМОЩЬ"]',
            "help = []",
            "kw.toml: [ru] help must be a list of at least one word",
        ),
        (
            'help = ["ПОМОЩЬ"]',
            'help = "ПОМОЩЬ"',
            "kw.toml: [ru] help must be a list of at least one word",
        ),
        (
            'help = ["ПОМОЩЬ"]',
            'help = ["ПОМОЩЬ", "?!"]',
            "kw.toml: [ru] help: '?!' is empty once normalised",
        ),
        (
            'help = ["ПОМОЩЬ"]',
            'help = ["ПОМОЩЬ"]\nhlep = ["X"]',
            "kw.toml: [ru] unknown field 'hlep'",
        ),
        (
            '"QUIT", ',
            "",
            "kw.toml: Twilio acts on these words on SMS, so they must be listed as: QUIT (stop)",
        ),
        (
            '"YES", ',
            "",
            "kw.toml: Twilio acts on these words on SMS, so they must be listed as: YES (start)",
        ),
        ("[en]", "xx = 1\n[en]", "kw.toml: [xx] must be a table of words and replies"),
        ("[en]", "[en", None),
    ],
)
def test_a_broken_file_names_the_file_language_and_field(
    before: str, after: str, problem: str | None
) -> None:
    found = problems(minimal_file().replace(before, after, 1))
    if problem is None:
        assert len(found) == 1
        assert found[0].startswith("kw.toml: not valid TOML: ")
    else:
        assert problem in found


def test_every_problem_is_reported_at_once() -> None:
    text = minimal_file().replace('stop_reply = "ru stop"\n', "").replace('"СТАРТ"', '"СТОП!"')
    assert problems(text, {"ar": "smp"}) == [
        "kw.toml: no [ar] table, but plan 'smp' carries language 'ar'",
        "kw.toml: [ru] start: 'СТОП!' is also a stop word ('СТОП' in [ru])",
        "kw.toml: [ru] stop_reply is missing",
    ]


def test_a_missing_or_unreadable_file_is_one_line_naming_it(tmp_path: Path) -> None:
    plans = load_plans(Settings().plans_dir)
    with pytest.raises(KeywordError) as missing:
        load_keywords(tmp_path / "nope.toml", plans)
    assert missing.value.problems == [
        f"{tmp_path / 'nope.toml'}: cannot read the keyword file (No such file or directory)"
    ]
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[en]\nstop = ["ARRÊT"]\n'.encode("latin-1"))
    with pytest.raises(KeywordError) as undecodable:
        load_keywords(latin1, plans)
    assert undecodable.value.problems == [f"{latin1}: not UTF-8 text"]


def test_the_shipped_file_covers_every_plan_language_with_one_line_answers() -> None:
    plans = load_plans(Settings().plans_dir)
    languages = {lang for plan in plans.values() for lang in plan.languages}
    assert languages <= set(SHIPPED.answers)
    assert {"en", "ar", "ru"} <= set(SHIPPED.answers)
    for lang, answers in SHIPPED.answers.items():
        for meaning in (Intent.STOP, Intent.START, Intent.HELP):
            text = answers.to(meaning).format_map(CLINIC)
            assert "\n" not in text, (lang, meaning)
            assert script(text) == lang, (lang, meaning)
            assert len(text) <= 160, (lang, meaning)  # short: one SMS segment's worth of text


def test_the_app_refuses_to_start_with_a_bad_keyword_file(
    settings: Settings, engine: Any, tmp_path: Path
) -> None:
    bad = tmp_path / "keywords.toml"
    bad.write_text(minimal_file(), encoding="utf-8")  # no [ar], which the SMP plan carries
    with pytest.raises(KeywordError) as error:
        create_app(dataclasses.replace(settings, keywords_file=bad), engine=engine)
    assert error.value.problems == [
        f"{bad}: no [ar] table, but plan 'scalp_micropigmentation' carries language 'ar'"
    ]


def test_create_app_from_the_environment_ends_with_one_line_per_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "keywords.toml"
    bad.write_text(minimal_file(), encoding="utf-8")
    for name in [n for n in os.environ if n.startswith(("TWILIO_", "BOOKING_", "STAFF_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.sqlite3'}")
    monkeypatch.setenv("KEYWORDS_FILE", str(bad))
    with pytest.raises(SystemExit) as stopped:
        create_app()
    assert stopped.value.code == 3
    assert capsys.readouterr().err.splitlines() == [
        f"aftercare cannot start: {bad}: no [ar] table, but plan 'scalp_micropigmentation' "
        "carries language 'ar'"
    ]


# -- aftercare plan check -------------------------------------------------------------------------


def test_plan_check_validates_the_shipped_keyword_file() -> None:
    result = aftercare("plan", "check")
    assert result.returncode == 0, result.stderr
    line = f"ok  keywords ({Settings().keywords_file}): words per language en 13, ar 18, ru 16"
    assert re.sub(r"\d+", "13", line) in re.sub(r"\d+", "13", result.stdout)


def test_plan_check_names_the_keyword_file_and_each_problem_without_a_traceback(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "keywords.toml"
    bad.write_text(minimal_file().replace('"СТАРТ"', '"СТОП"'), encoding="utf-8")
    result = aftercare("plan", "check", env={"KEYWORDS_FILE": str(bad)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: {bad}: no [ar] table, but plan 'scalp_micropigmentation' carries language 'ar'",
        f"{bad}: [ru] start: 'СТОП' is also a stop word ('СТОП' in [ru])",
    ]
    assert "Traceback" not in result.stderr
