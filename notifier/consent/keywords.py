"""What an inbound text means: opt-out, opt-in, help, or a reply for staff (SPEC §7).

The words are data (`config/keywords.toml`), per language, and every language's
words count for every patient. Twilio's `OptOutType` wins when present (Twilio
already acted on it); otherwise the whole body, normalised, must be exactly one
keyword: "stop please" is a reply, not an opt-out.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from notifier.planning.plan import (
    Plan,
    PlanError,
    languages_needed,
    parse_rules,
    read_rules,
    read_template,
)


class Intent(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"
    REPLY = "reply"


PLACEHOLDERS = frozenset({"clinic_name", "clinic_phone"})
_INTENTS = (Intent.STOP, Intent.START, Intent.HELP)
_FIELDS = frozenset({"stop", "start", "help", "stop_reply", "start_reply", "help_reply"})
_OPT_OUT_TYPES = {"STOP": Intent.STOP, "START": Intent.START, "HELP": Intent.HELP}

# Letters written several ways, folded to one (escaped: several look like Latin ones).
_ALEF, _YEH, _HEH, _WAW = "\u0627", "\u064a", "\u0647", "\u0648"
_LETTERS = str.maketrans(
    {
        "\u0623": _ALEF,  # alef with hamza above
        "\u0625": _ALEF,  # alef with hamza below
        "\u0622": _ALEF,  # alef with madda
        "\u0671": _ALEF,  # alef wasla
        "\u0649": _YEH,  # alef maksura
        "\u0629": _HEH,  # teh marbuta
        "\u0624": _WAW,  # waw with hamza
        "\u0626": _YEH,  # yeh with hamza
        "\u06cc": _YEH,  # Persian yeh (Persian keyboards)
        "\u06a9": "\u0643",  # Persian keheh -> kaf
        "\u0451": "\u0435",  # Cyrillic yo -> ie
    }
)
_TATWEEL = "\u0640"


def normalise(text: str) -> str:
    """The form keywords are compared in: NFKC, case folded, Arabic letter variants,
    tatweel and diacritics folded away, Cyrillic yo -> ie, spaces collapsed, invisible marks
    (RTL marks, zero-width joiners) and trailing punctuation dropped."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    kept = "".join(c for c in folded if not _ignored(c)).translate(_LETTERS)
    words = " ".join(kept.split())
    end = len(words)
    while end and (words[end - 1] == " " or unicodedata.category(words[end - 1])[0] == "P"):
        end -= 1
    return words[:end]


def _ignored(char: str) -> bool:
    """Tatweel, Arabic diacritics (U+064B-U+065F, dagger alef U+0670) and format marks."""
    code = ord(char)
    return (
        char == _TATWEEL
        or 0x064B <= code <= 0x065F
        or code == 0x0670
        or unicodedata.category(char) == "Cf"
    )


# Twilio's own opt-out keywords: on SMS Twilio acts on these and answers them itself.
TWILIO_WORDS: Mapping[str, Intent] = {
    **dict.fromkeys(
        ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"),
        Intent.STOP,
    ),
    **dict.fromkeys(("start", "yes", "unstop"), Intent.START),
    **dict.fromkeys(("help", "info"), Intent.HELP),
}


class KeywordError(PlanError):
    """Problems in the keyword file, each naming the file (a plan error: the file must
    cover every plan's languages, and start-up and `plan check` report it so)."""


@dataclass(frozen=True)
class Keyword:
    """What a word means, and which languages list it."""

    intent: Intent
    languages: tuple[str, ...]  # every language listing the word, in file order


@dataclass(frozen=True)
class Answers:
    """One language's answers, placeholders unfilled."""

    stop: str
    start: str
    help: str

    def to(self, meaning: Intent) -> str:
        return {Intent.STOP: self.stop, Intent.START: self.start}.get(meaning, self.help)


@dataclass(frozen=True)
class Keywords:
    """The validated keyword file: every language's words, and the answers per language."""

    words: Mapping[str, Keyword]  # by normalised word
    answers: Mapping[str, Answers]  # by language
    source: str

    def find(self, body: str) -> Keyword | None:
        return self.words.get(normalise(body))


def reported(opt_out_type: str | None) -> Intent | None:
    """What Twilio says it acted on (`OptOutType`), if anything."""
    return _OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())


def intent(body: str, opt_out_type: str | None, keywords: Keywords) -> Intent:
    """Classify one inbound message."""
    twilio_says = reported(opt_out_type)
    if twilio_says is not None:
        return twilio_says
    found = keywords.find(body)
    return found.intent if found else Intent.REPLY


def answer(
    body: str, opt_out_type: str | None, channel: str, language: str | None, keywords: Keywords
) -> str | None:
    """Our answer to a keyword (placeholders unfilled), or None when we say nothing.

    Twilio answers what it reports in `OptOutType`, and on SMS its own STOP and START
    words; WhatsApp handles no keyword, so there we confirm those too. The answer is in
    the language of the word used; for Twilio's words (which every message tells each
    patient to send) in the patient's `language` when the file has it."""
    found = keywords.find(body)
    if found is None or reported(opt_out_type) is not None:
        return None
    twilios = normalise(body) in TWILIO_WORDS
    if twilios and found.intent is not Intent.HELP and channel != "whatsapp":
        return None
    usable = language in keywords.answers and (twilios or language in found.languages)
    chosen = language if usable and language is not None else found.languages[0]
    return keywords.answers[chosen].to(found.intent)


def load_keywords(path: Path, plans: Mapping[str, Plan]) -> Keywords:
    """The keyword file, checked against the plans' languages; `KeywordError` lists
    every problem, each naming the file."""
    text = read_rules(path, "keyword", KeywordError)
    return parse_keywords(text, str(path), languages_needed(plans))


def parse_keywords(text: str, source: str, needed: Mapping[str, str]) -> Keywords:
    """Parse one keyword file; `needed` maps each language a plan carries to that plan."""
    data, missing = parse_rules(text, source, needed, KeywordError)
    reader = _Reader(source)
    for problem in missing:
        reader.problem(problem)
    for lang, table in data.items():
        reader.language(lang, table)
    reader.twilio_words()
    if reader.problems:
        raise KeywordError(reader.problems)
    words = {w: Keyword(i, tuple(langs)) for w, (i, langs, _) in reader.words.items()}
    return Keywords(words=words, answers=reader.answers, source=source)


class _Reader:
    """Reads the file's language tables, collecting every problem instead of stopping."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.words: dict[str, tuple[Intent, list[str], str]] = {}  # intent, languages, as written
        self.answers: dict[str, Answers] = {}

    def problem(self, message: str) -> None:
        self.problems.append(f"{self.source}: {message}")

    def language(self, lang: str, table: object) -> None:
        if not isinstance(table, dict):
            self.problem(f"[{lang}] must be a table of words and replies")
            return
        for name in sorted(set(table) - _FIELDS):
            self.problem(f"[{lang}] unknown field {name!r}")
        for meaning in _INTENTS:
            self._words(lang, meaning, table.get(meaning.value))
        texts = [
            self._text(lang, f"{m.value}_reply", table.get(f"{m.value}_reply")) for m in _INTENTS
        ]
        self.answers[lang] = Answers(*texts)

    def _words(self, lang: str, meaning: Intent, raw: object) -> None:
        where = f"[{lang}] {meaning.value}"
        if not isinstance(raw, list) or not raw or not all(isinstance(w, str) for w in raw):
            self.problem(f"{where} must be a list of at least one word")
            return
        for written in raw:
            word = normalise(written)
            known = self.words.get(word)
            if not word:
                self.problem(f"{where}: {written!r} is empty once normalised")
            elif known is None:
                self.words[word] = (meaning, [lang], written)
            elif known[0] is not meaning:
                self.problem(
                    f"{where}: {written!r} is also a {known[0].value} word "
                    f"({known[2]!r} in [{known[1][0]}])"
                )
            elif lang not in known[1]:
                known[1].append(lang)

    def _text(self, lang: str, name: str, raw: object) -> str:
        where = f"[{lang}] {name}"
        found: list[str] = []
        text, used = read_template(where, raw, PLACEHOLDERS, found)
        if text and name == "help_reply" and not used >= PLACEHOLDERS:
            found.append(f"{where} must name the clinic: {{clinic_name}} and {{clinic_phone}}")
        for problem in found:
            self.problem(problem)
        return text

    def twilio_words(self) -> None:
        """Twilio acts on its words on SMS whatever the file says; they must agree."""
        wrong = [
            f"{word.upper()} ({meaning.value})"
            for word, meaning in TWILIO_WORDS.items()
            if self.words.get(word, (None,))[0] is not meaning
        ]
        if wrong:
            self.problem(
                f"Twilio acts on these words on SMS, so they must be listed as: {', '.join(wrong)}"
            )
