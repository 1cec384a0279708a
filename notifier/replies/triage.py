"""What an inbound reply needs (SPEC §10): `urgent`, `question`, `thanks` or `other`.

A pure function of a reply's text and photo count, from rules kept as data per language
(`config/triage.toml`, which explains them); every language's rules apply to every reply.
When in doubt, urgent: a missed complication costs far more than a false alarm, so a sign
counts unless a negation plainly denies it, and a photo counts unless its text calms it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from notifier.consent.keywords import normalise
from notifier.planning.plan import Plan, PlanError, languages_needed, parse_rules, read_rules
from notifier.settings import TRIAGE_FILE

COMMON = "common"  # the table of rules in no language in particular: emoji, "?"
SIGNS = "signs"
SECTIONS = (
    "negations",
    "resolved",
    "fillers",
    "joins",
    "cancels",
    "breaks",
    "questions",
    "thanks",
    "calm",
)
WORD_SECTIONS = frozenset({"fillers", "joins"})  # matched against one word at a time
PHOTO = "photo"  # the reason staff see when a photo without calming words made it urgent
MAX_FILLERS = 3  # filler words a negation reaches across: "I don't have any pain"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2018\u2019\u02bc\u0060\u00b4", "'"))
# Clauses end at these; a full stop between digits is a decimal point ("38.5").
_STOPS = re.compile(r"[!?;\n\u061f\u061b\u2026]+|(?<!\d)\.|\.(?!\d)")
_COMMAS = frozenset({",", "\u060c"})
_WORDS = re.compile(r"[,\u060c]|[^\s,\u060c]+")
_SAMPLE = "no, it hurts? 1 "  # a rule with an empty match in here would match every reply


class Category(StrEnum):
    URGENT = "urgent"
    QUESTION = "question"
    THANKS = "thanks"
    OTHER = "other"


@dataclass(frozen=True)
class Triage:
    """A reply's category and why: the signs found, in file order (`photo` for a photo
    without calming words)."""

    category: Category
    signs: tuple[str, ...] = ()

    @property
    def urgent(self) -> bool:
        return self.category is Category.URGENT


class TriageError(PlanError):
    """Problems in the triage file, each naming the file (a plan error: the file must
    cover every plan's languages, and start-up and `plan check` report it so)."""


@dataclass(frozen=True)
class Rules:
    """One section's rules, every language's together."""

    compiled: tuple[re.Pattern[str], ...]

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for p in self.compiled for m in p.finditer(text)]

    def search(self, text: str) -> bool:
        return any(p.search(text) for p in self.compiled)

    def word(self, word: str) -> bool:
        return any(p.fullmatch(word) for p in self.compiled)


@dataclass(frozen=True)
class Cues:
    """The words around signs, and the words of questions and thanks (the file explains)."""

    negations: Rules
    resolved: Rules
    fillers: Rules
    joins: Rules
    cancels: Rules
    breaks: Rules
    questions: Rules
    thanks: Rules
    calm: Rules


@dataclass(frozen=True)
class TriageRules:
    """The validated triage file."""

    signs: Mapping[str, Rules]  # by sign name, in file order
    cues: Cues
    counts: Mapping[str, int]  # rules per table ([common] too)
    source: str

    def summary(self) -> str:
        tables = ", ".join(f"{table} {count}" for table, count in self.counts.items())
        return f"{len(self.signs)} signs; rules per language {tables}"


# -- classifying ------------------------------------------------------------------------------


def classify(body: str, photos: int, rules: TriageRules) -> Triage:
    """Triage one inbound reply: its text and how many photos it carries (`NumMedia`)."""
    text = fold(body)
    clauses = [_Clause.read(part, rules) for part in _clauses(text, rules.cues)]
    kept = {name for clause in clauses for name in clause.kept()}
    signs = tuple(name for name in rules.signs if name in kept)
    asks = any(rules.cues.questions.search(part) for part in [text, *(c.text for c in clauses)])
    thanks = any(clause.says(rules.cues.thanks) for clause in clauses)
    calm = any(clause.says(rules.cues.calm) for clause in clauses)
    category = Category.QUESTION if asks else Category.OTHER
    if not asks and (thanks or calm):
        category = Category.THANKS
    if photos > 0 and not (calm or category is Category.THANKS):
        signs = (*signs, PHOTO)
    return Triage(Category.URGENT, signs) if signs else Triage(category)


def fold(text: str) -> str:
    """A reply as the rules see it: `normalise`d, apostrophes straight, and its trailing
    punctuation kept (`normalise` drops it, but a final "?" asks a question)."""
    return normalise(f"{text} x")[:-1].rstrip().translate(_APOSTROPHES)


def _clauses(text: str, cues: Cues) -> list[str]:
    """The text cut at full stops, question marks, new lines and the `breaks` words."""
    clauses: list[str] = []
    for part in _STOPS.split(text):
        cut = 0
        for start, end in sorted(cues.breaks.spans(part)):
            if start >= cut:
                clauses.append(part[cut:start])
                cut = end
        clauses.append(part[cut:])
    return [clause.strip() for clause in clauses if clause.strip()]


@dataclass(frozen=True)
class _Clause:
    """One clause of a reply, read once: its signs, and where negations end and start.

    Only the nearest negation before a sign (or `resolved` word after it) can deny it:
    a farther one has all the nearer one's words between, and the nearer one too."""

    text: str
    signs: list[tuple[str, int, int]]  # name, start, end
    bare: str  # the text with every sign blanked out: what stands between signs
    negations: list[int]  # where each negation ends, in order
    resolutions: list[int]  # where each `resolved` word starts, in order
    cues: Cues

    @classmethod
    def read(cls, text: str, rules: TriageRules) -> _Clause:
        signs = [(name, *span) for name, found in rules.signs.items() for span in found.spans(text)]
        chars = list(text)
        for _, start, end in signs:
            chars[start:end] = " " * (end - start)
        negations = sorted(end for _, end in rules.cues.negations.spans(text))
        resolutions = sorted(start for start, _ in rules.cues.resolved.spans(text))
        return cls(text, signs, "".join(chars), negations, resolutions, rules.cues)

    def kept(self) -> set[str]:
        """The signs no negation denies; doubt in a clause denies nothing."""
        if self.cues.cancels.search(self.text):
            return {name for name, _, _ in self.signs}
        return {name for name, start, end in self.signs if not self._denied(start, end)}

    def says(self, rules: Rules) -> bool:
        """Whether a thanks or calm rule matches, not right after a negation ("not great",
        "не очень хорошо": at most one word between, no comma and no sign)."""
        for start, _ in rules.spans(self.text):
            before = [end for end in self.negations if end <= start]
            gap = self.text[before[-1] : start] if before else None
            if gap is None or self.bare[before[-1] : start] != gap:
                return True
            words = _WORDS.findall(gap)
            if len(words) > 1 or _COMMAS.intersection(words):
                return True
        return False

    def _denied(self, start: int, end: int) -> bool:
        before = [stop for stop in self.negations if stop <= start]
        after = [begin for begin in self.resolutions if begin >= end]
        return bool(before and self._bridged(before[-1], start, list_from=end)) or bool(
            after and self._bridged(end, after[0], list_from=None)
        )

    def _bridged(self, start: int, end: int, list_from: int | None) -> bool:
        """Whether a negation reaches across `[start:end]`: only fillers (a few), joins and
        other signs stand there, and a comma only inside a list closed by a join ("no
        redness, swelling or pain"); the list may go on from `list_from` (None: no list)."""
        fillers, comma, joined = 0, False, False
        for word in _WORDS.findall(self.bare[start:end]):
            if word in _COMMAS:
                comma, joined = True, False
            elif self.cues.joins.word(word):
                joined = True
            elif self.cues.fillers.word(word):
                fillers += 1
            elif not _punctuation(word):
                return False
        if fillers > MAX_FILLERS:
            return False
        return not comma or (list_from is not None and (joined or self._list_closes(list_from)))

    def _list_closes(self, start: int) -> bool:
        """Whether a join follows `start` before anything but signs, commas and fillers."""
        for word in _WORDS.findall(self.bare[start:]):
            if self.cues.joins.word(word):
                return True
            if not (word in _COMMAS or self.cues.fillers.word(word) or _punctuation(word)):
                return False
        return False


def _punctuation(word: str) -> bool:
    return all(unicodedata.category(c)[0] == "P" for c in word)


# -- loading ----------------------------------------------------------------------------------


def load_triage(plans: Mapping[str, Plan], path: Path = TRIAGE_FILE) -> TriageRules:
    """The triage file, checked against the plans' languages; `TriageError` lists every
    problem, each naming the file."""
    text = read_rules(path, "triage", TriageError)
    return parse_triage(text, str(path), languages_needed(plans))


def parse_triage(text: str, source: str, needed: Mapping[str, str]) -> TriageRules:
    """Parse one triage file; `needed` maps each language a plan carries to that plan."""
    data, missing = parse_rules(text, source, needed, TriageError)
    reader = _Reader(source)
    for problem in missing:
        reader.problem(problem)
    for lang, table in data.items():
        reader.table(lang, table)
    reader.same_signs()
    if reader.problems:
        raise TriageError(reader.problems)
    return reader.rules()


def fold_rule(rule: str) -> str:
    """A rule folded as replies are (`normalise` on its non-ASCII letters and marks: the
    rest is regular-expression syntax, where `\\B` is not `\\b`)."""
    composed = unicodedata.normalize("NFKC", rule).translate(_APOSTROPHES)
    return "".join(normalise(c) if _foldable(c) else c for c in composed)


def _foldable(char: str) -> bool:
    category = unicodedata.category(char)
    return ord(char) > 127 and (category[0] in "LM" or category == "Cf")


class _Reader:
    """Reads the file's tables, collecting every problem instead of stopping."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.sections: dict[str, list[re.Pattern[str]]] = {name: [] for name in SECTIONS}
        self.signs: dict[str, list[re.Pattern[str]]] = {}
        self.names: dict[str, list[str]] = {}  # sign names, by table
        self.counts: dict[str, int] = {}

    def problem(self, message: str) -> None:
        self.problems.append(f"{self.source}: {message}")

    def table(self, lang: str, table: object) -> None:
        if not isinstance(table, dict):
            self.problem(f"[{lang}] must be a table of rules")
            return
        known = ", ".join((SIGNS, *SECTIONS))
        for key in sorted(set(table) - {SIGNS, *SECTIONS}):
            self.problem(f"[{lang}] unknown section {key!r} (known: {known})")
        required = lang != COMMON  # [common] has only the sections it needs
        count = 0
        for name in SECTIONS:
            if required or name in table:
                rules = self._rules(f"[{lang}] {name}", table.get(name), name in WORD_SECTIONS)
                self.sections[name] += rules
                count += len(rules)
        if required or SIGNS in table:
            count += self._signs(lang, table.get(SIGNS))
        self.counts[lang] = count

    def _signs(self, lang: str, raw: object) -> int:
        if not isinstance(raw, dict) or not raw:
            self.problem(f"[{lang}] signs must be a table of named lists of rules ([{lang}.signs])")
            return 0
        self.names[lang] = [name for name in raw if _NAME.match(name)]
        count = 0
        for name, rules in raw.items():
            if not _NAME.match(name):
                self.problem(f"[{lang}] signs: {name!r} is not a name (a-z, 0-9 and _)")
                continue
            compiled = self._rules(f"[{lang}] signs.{name}", rules, word=False)
            self.signs.setdefault(name, []).extend(compiled)
            count += len(compiled)
        return count

    def _rules(self, where: str, raw: object, word: bool) -> list[re.Pattern[str]]:
        if raw is None:
            self.problem(f"{where} is missing: every language needs every section")
            return []
        if not isinstance(raw, list) or not raw or not all(isinstance(r, str) for r in raw):
            self.problem(f"{where} must be a list of at least one rule")
            return []
        compiled = [self._compile(where, rule, word) for rule in raw]
        return [pattern for pattern in compiled if pattern is not None]

    def _compile(self, where: str, rule: str, word: bool) -> re.Pattern[str] | None:
        if not rule.strip():
            self.problem(f"{where}: an empty rule")
            return None
        if word and " " in rule.strip():
            self.problem(f"{where}: {rule!r} has a space, but these rules match one word")
            return None
        try:
            pattern = re.compile(fold_rule(rule), re.IGNORECASE)
        except re.error as error:
            self.problem(f"{where}: {rule!r} is not a regular expression ({error})")
            return None
        if pattern.search("") or any(m.start() == m.end() for m in pattern.finditer(_SAMPLE)):
            self.problem(f"{where}: {rule!r} matches empty text, so it would match every reply")
            return None
        return pattern

    def same_signs(self) -> None:
        """Every language looks for the same signs, so staff see one name for each;
        [common] adds rules to those signs only (a misspelt name would be a new sign)."""
        first: dict[str, str] = {}
        for lang, names in self.names.items():
            for name in names if lang != COMMON else ():
                first.setdefault(name, lang)
        for lang, names in self.names.items():
            if lang == COMMON:
                for name in [n for n in names if n not in first]:
                    self.problem(f"[{COMMON}] signs: {name!r} is a sign no language lists")
                continue
            for name in [n for n in first if n not in names]:
                self.problem(f"[{lang}] signs: no {name!r} (which [{first[name]}] lists)")

    def rules(self) -> TriageRules:
        order = {n: None for lang, names in self.names.items() if lang != COMMON for n in names}
        return TriageRules(
            signs={name: Rules(tuple(self.signs[name])) for name in order},
            cues=Cues(**{name: Rules(tuple(rules)) for name, rules in self.sections.items()}),
            counts=self.counts,
            source=self.source,
        )
